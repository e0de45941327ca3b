#!/usr/bin/env python3
"""Flood benchmark: one source sends INVITE/REGISTER/OPTIONS at 10x the edge's call capacity while a
legitimate PBX (the trunk's IP ACL) places calls at 50% of it; the PBX's success rate and the server's
CPU, for `trunkline edge` (its flood guard at the defaults: 50 messages/s per source, 30 s cool-down)
next to Kamailio with `pike` (the same budget: 100 requests per 2 s) in the same run. The capacity is
measured first, in the same run: the highest passing step of the IP-ACL call ladder of
bench/edge_calls.py on the same edge, without a flood; the figures are printed as ratios of it.
See bench/README-flood.md.

    .venv/bin/python -m bench.flood [--seconds S] [--step-seconds S] [--no-kamailio] [--capacity N]
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType

from bench.edge_calls import (
    CALLEE,
    CALLER,
    HOST,
    KAMAILIO,
    KAMAILIO_CFG,
    PBX_ACL_IP,
    Ladder,
    Processes,
    Server,
    Step,
    climb,
    process_tree,
    run_sipp_step,
    start_edge,
    start_kamailio,
)
from tests.support.ports import free_port
from tests.support.processes import TRUNKLINE
from tests.support.sipp import SCENARIOS

FLOODER_IP = "127.0.0.66"  # in no ACL, no carrier CIDR: a stranger
CAPACITY_STEPS = [50, 100, 150, 200, 250, 300, 400, 500, 700, 1000]  # calls/s, the ladder's steps
# Kamailio's answer to floods: pike, with the edge's default budget, the PBX exempt like the edge's ACL.
PIKE = """loadmodule "pike.so"
modparam("pike", "sampling_time_unit", 2)
modparam("pike", "reqs_density_per_unit", 100)
modparam("pike", "remove_latency", 30)

request_route {{
    if (src_ip != {pbx} && !pike_check_req()) {{
        exit;
    }}"""


def flood_messages(target: str) -> list[bytes]:
    port = 5060
    out = []
    for method, ruri in (("INVITE", f"sip:{CALLEE}@{target}"), ("REGISTER", f"sip:{target}"),
                         ("OPTIONS", f"sip:{target}")):  # fmt: skip
        for _ in range(50):
            lines = [
                f"{method} {ruri} SIP/2.0",
                f"Via: SIP/2.0/UDP {FLOODER_IP}:{port};branch=z9hG4bK{secrets.token_hex(8)};rport",
                "Max-Forwards: 70",
                f"From: <sip:{CALLER}@{FLOODER_IP}>;tag={secrets.token_hex(4)}",
                f"To: <sip:{CALLEE}@{target}>",
                f"Call-ID: {secrets.token_hex(10)}",
                f"CSeq: 1 {method}",
                f"Contact: <sip:x@{FLOODER_IP}:{port}>",
                "Content-Length: 0",
            ]
            out.append(("\r\n".join(lines) + "\r\n\r\n").encode())
    return out


class Flooder(threading.Thread):
    """Sends `rate` datagrams/s to `target` from FLOODER_IP until stopped (paced every 10 ms)."""

    def __init__(self, target: str, rate: int) -> None:
        super().__init__(daemon=True)
        host, port = target.rsplit(":", 1)
        self.addr, self.rate = (host, int(port)), rate
        self.messages = flood_messages(target)
        self.sent = 0
        self.stop_flag = threading.Event()

    def run(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((FLOODER_IP, 0))
            sock.setblocking(False)
            started = time.monotonic()
            while not self.stop_flag.is_set():
                due = int((time.monotonic() - started) * self.rate)
                while self.sent < due:
                    try:
                        sock.sendto(self.messages[self.sent % len(self.messages)], self.addr)
                    except BlockingIOError:
                        break
                    self.sent += 1
                    if self.sent % 64 == 0:  # drain answers so they do not pile up in our socket
                        try:
                            while sock.recv(65536):
                                pass
                        except BlockingIOError:
                            pass
                time.sleep(0.01)


def measure(
    name: str, server: Server, workdir: Path, capacity: int, seconds: float
) -> tuple[str, Step, float]:
    """The PBX's calls at half `capacity` under a flood of 10x it; the flood's achieved requests/s."""
    flooder = Flooder(server.address, 10 * capacity)
    began = time.monotonic()
    flooder.start()
    try:
        time.sleep(1)  # the flood is on before the first legitimate call
        call = ["-s", CALLEE, "-key", "caller", CALLER]
        step = run_sipp_step(workdir, server.address, PBX_ACL_IP, "pbx_call.xml", capacity // 2, seconds,
                             server.pids, call)  # fmt: skip
    finally:
        flooder.stop_flag.set()
        flooder.join(5)
    return name, step, flooder.sent / (time.monotonic() - began)


def measure_capacity(edge: Server, workdir: Path, seconds: float) -> tuple[int, Ladder]:
    """The edge's call capacity without a flood: the highest passing step of the IP-ACL call ladder
    (pbx_call.xml from the trunk's ACL address, as bench/edge_calls.py climbs it); 0 if none passed."""
    call = ["-s", CALLEE, "-key", "caller", CALLER]
    ladder = climb(Ladder("capacity: trunkline edge calls, IP ACL, no flood", "calls"), edge, workdir,
                   PBX_ACL_IP, "pbx_call.xml", CAPACITY_STEPS, seconds, call)  # fmt: skip
    return (ladder.best.offered if ladder.best else 0), ladder


def calm_cost(ladder: Ladder | None, rate: int) -> float | None:
    """CPU s per 1,000 calls without a flood at the passed step nearest `rate` (None: no ladder)."""
    passed = [s for s in ladder.steps if s.passed] if ladder else []
    if not passed:
        return None
    nearest = min(passed, key=lambda s: abs(s.offered - rate))
    return nearest.per_1000(nearest.server_cpu)


def start_kamailio_with_pike(procs: Processes, workdir: Path, uas_port: int) -> Server:
    import bench.edge_calls as edge_calls

    cfg = KAMAILIO_CFG.replace(
        "request_route {{", PIKE.format(pbx=PBX_ACL_IP).replace("{", "{{").replace("}", "}}")
    )
    original, edge_calls.KAMAILIO_CFG = edge_calls.KAMAILIO_CFG, cfg
    try:
        proc, address = start_kamailio(procs, workdir, uas_port)
    finally:
        edge_calls.KAMAILIO_CFG = original
    return Server(proc, address, process_tree(proc.pid))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--capacity", type=int, default=0, metavar="CALLS_PER_S",
                        help="assume this capacity, skip measuring it (default: measure)")  # fmt: skip
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the legitimate calls' run")
    parser.add_argument("--step-seconds", type=float, default=5.0, help="length of each capacity step")
    parser.add_argument("--no-kamailio", action="store_true")
    args = parser.parse_args()
    for binary in ("sipp", str(TRUNKLINE)) + (() if args.no_kamailio else (KAMAILIO,)):
        if not shutil.which(binary):
            print(f"missing: {binary}")
            return 2

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    workdir = Path(tempfile.mkdtemp(prefix="flood-bench-"))
    procs = Processes()
    rows: list[tuple[str, Step, float]] = []
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; work dir {workdir}", flush=True)
    try:
        uas_port = free_port()
        uas = ["sipp", "-sf", str(SCENARIOS / "carrier_uas.xml"), "-i", HOST, "-p", str(uas_port), "-nostdin"]
        procs.start("sipp carrier UAS", uas, workdir / "uas.log", workdir)
        # The edge's own defaults for the flood guard (start_edge lifts them for the call benchmark).
        defaults = ["--flood-rate", "50", "--flood-bytes", "200000", "--flood-cooldown", "30"]
        proc, sip, _ = start_edge(procs, workdir / "edge", uas_port, defaults)
        edge = Server(proc, sip, process_tree(proc.pid))
        ladder: Ladder | None = None
        capacity, how = args.capacity, "assumed (--capacity)"
        if not capacity:
            capacity, ladder = measure_capacity(edge, workdir / "capacity", args.step_seconds)
            how = "measured: the highest passing step of the IP-ACL call ladder, no flood"
            if not capacity:
                print("no step of the capacity ladder passed: nothing to measure against")
                return 1
            time.sleep(3)  # the ladder's last calls and transactions settle before the flood
        print(f"\ncapacity {capacity} calls/s ({how}): PBX at {capacity // 2} calls/s, flood "
              f"{10 * capacity} requests/s from {FLOODER_IP}; {args.seconds:g} s", flush=True)  # fmt: skip
        rows.append(
            measure("trunkline edge (flood guard)", edge, workdir / "edge-run", capacity, args.seconds)
        )
        # The same edge without its guard (start_edge's lifted budget): what the flood would cost.
        proc, sip, _ = start_edge(procs, workdir / "edge-unguarded", uas_port)
        unguarded = Server(proc, sip, process_tree(proc.pid))
        rows.append(measure("trunkline edge, guard lifted", unguarded, workdir / "unguarded-run",
                            capacity, args.seconds))  # fmt: skip
        if not args.no_kamailio:
            kamailio = start_kamailio_with_pike(procs, workdir / "kamailio", uas_port)
            rows.append(
                measure("kamailio + pike", kamailio, workdir / "kamailio-run", capacity, args.seconds)
            )
        calm = calm_cost(ladder, capacity // 2)
        print(f"\nAll ratios are of the edge's capacity, {capacity} calls/s ({how.split(':')[0]}); "
              "'x calm' is CPU per call under the flood over CPU per call without one (the ladder step "
              "nearest the PBX's rate).")  # fmt: skip
        print("\n| server | flood (x capacity) | PBX calls ok | PBX success | PBX calls/s (x capacity) "
              "| server CPU | CPU per 1,000 PBX calls (x calm) |")  # fmt: skip
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for name, step, flood_rate in rows:
            share = 100 * step.server_cpu / step.seconds if step.seconds else 0.0
            cost = step.per_1000(step.server_cpu)
            versus = f" ({cost / calm:.1f}x)" if calm and name.startswith("trunkline") else ""
            print(f"| {name} | {flood_rate:,.0f}/s ({flood_rate / capacity:.1f}x) | "
                  f"{step.ok:,} of {step.attempts:,} | "
                  f"{step.success:.1f}% | {step.achieved:.0f} ({step.achieved / capacity:.2f}x) | "
                  f"{step.server_cpu:.2f} s in {step.seconds:.1f} s ({share:.0f}%) | "
                  f"{cost:.2f} s{versus} |")  # fmt: skip
    except KeyboardInterrupt:
        print("\ninterrupted", flush=True)
        return 130
    finally:
        procs.stop_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
