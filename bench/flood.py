#!/usr/bin/env python3
"""Flood benchmark: one source sends INVITE/REGISTER/OPTIONS at 10x the server's call capacity while a
legitimate PBX (the trunk's IP ACL) places calls at 50% of it; the PBX's success rate and the server's
CPU, for `trunkline edge` (its flood guard at the defaults: 50 messages/s per source, 30 s cool-down)
next to Kamailio with `pike` (the same budget: 100 requests per 2 s) in the same run.
See bench/README-flood.md.

    .venv/bin/python -m bench.flood [--capacity CALLS_PER_S] [--seconds S] [--no-kamailio]
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
    Processes,
    Server,
    Step,
    process_tree,
    run_sipp_step,
    start_edge,
    start_kamailio,
)
from tests.support.ports import free_port
from tests.support.processes import TRUNKLINE
from tests.support.sipp import SCENARIOS

FLOODER_IP = "127.0.0.66"  # in no ACL, no carrier CIDR: a stranger
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


def measure(name: str, server: Server, workdir: Path, capacity: int, seconds: float) -> tuple[str, Step, int]:
    flooder = Flooder(server.address, 10 * capacity)
    flooder.start()
    try:
        time.sleep(1)  # the flood is on before the first legitimate call
        call = ["-s", CALLEE, "-key", "caller", CALLER]
        step = run_sipp_step(workdir, server.address, PBX_ACL_IP, "pbx_call.xml", capacity // 2, seconds,
                             server.pids, call)  # fmt: skip
    finally:
        flooder.stop_flag.set()
        flooder.join(5)
    return name, step, flooder.sent


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
    parser.add_argument("--capacity", type=int, default=200,
                        help="the server's calls/s (bench/README-edge.md; default 200)")  # fmt: skip
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the legitimate calls' run")
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
    rows: list[tuple[str, Step, int]] = []
    print(f"{os.cpu_count()} cores; capacity {args.capacity} calls/s: PBX at {args.capacity // 2} calls/s, "
          f"flood {10 * args.capacity} requests/s from {FLOODER_IP}; {args.seconds:g} s; "
          f"work dir {workdir}")  # fmt: skip
    try:
        uas_port = free_port()
        uas = ["sipp", "-sf", str(SCENARIOS / "carrier_uas.xml"), "-i", HOST, "-p", str(uas_port), "-nostdin"]
        procs.start("sipp carrier UAS", uas, workdir / "uas.log", workdir)
        # The edge's own defaults for the flood guard (start_edge lifts them for the call benchmark).
        defaults = ["--flood-rate", "50", "--flood-bytes", "200000", "--flood-cooldown", "30"]
        proc, sip, _ = start_edge(procs, workdir / "edge", uas_port, defaults)
        edge = Server(proc, sip, process_tree(proc.pid))
        rows.append(
            measure("trunkline edge (flood guard)", edge, workdir / "edge-run", args.capacity, args.seconds)
        )
        # The same edge without its guard (start_edge's lifted budget): what the flood would cost.
        proc, sip, _ = start_edge(procs, workdir / "edge-unguarded", uas_port)
        unguarded = Server(proc, sip, process_tree(proc.pid))
        rows.append(measure("trunkline edge, guard lifted", unguarded, workdir / "unguarded-run",
                            args.capacity, args.seconds))  # fmt: skip
        if not args.no_kamailio:
            kamailio = start_kamailio_with_pike(procs, workdir / "kamailio", uas_port)
            rows.append(
                measure("kamailio + pike", kamailio, workdir / "kamailio-run", args.capacity, args.seconds)
            )
        print("\n| server | flood sent | PBX calls ok | PBX success | server CPU | CPU per 1,000 PBX calls |")
        print("| --- | --- | --- | --- | --- | --- |")
        for name, step, sent in rows:
            share = 100 * step.server_cpu / step.seconds if step.seconds else 0.0
            print(f"| {name} | {sent:,} | {step.ok:,} of {step.attempts:,} | {step.success:.1f}% | "
                  f"{step.server_cpu:.2f} s in {step.seconds:.1f} s ({share:.0f}%) | "
                  f"{step.per_1000(step.server_cpu):.2f} s |")  # fmt: skip
    except KeyboardInterrupt:
        print("\ninterrupted", flush=True)
        return 130
    finally:
        procs.stop_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
