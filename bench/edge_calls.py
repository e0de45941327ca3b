#!/usr/bin/env python3
"""SIP edge benchmark: one `trunkline edge` process against Kamailio (plain stateful proxy), same run.

SIPp drives everything on loopback. For each server the call rate is stepped up until a step has a
failed call or the server falls behind the offered rate; each step reports offered and achieved rate,
success, SIPp retransmissions and the server's CPU seconds per 1,000 calls (utime+stime from /proc,
summed over the server's process tree). See bench/README-edge.md.

    .venv/bin/python -m bench.edge_calls [--quick] [--keep] [--no-kamailio] [--redis] [--media] [--tracing]
        [--workers N]
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from tests.support.jaeger import Jaeger, jaeger_binary
from tests.support.ports import free_port
from tests.support.processes import TRUNKLINE, http_ready, wait_started
from tests.support.redis_server import RedisProcess
from tests.support.sipp import SCENARIOS
from tests.support.trunkline_up import manifests

HOST = "127.0.0.1"  # servers and the carrier UAS
PBX_AUTH_IP = "127.0.0.3"  # not in the trunk's ipAcl: every call and REGISTER is digest-challenged
PBX_ACL_IP = "127.0.0.2"  # in the trunk's ipAcl: calls are admitted without a challenge
USER, PASSWORD = "acme", "s3cret-acme"
CALLER, CALLEE = "+14155550100", "+442071234567"  # a DID of the trunk, an allowed +44 number
KAMAILIO = "/usr/sbin/kamailio"
# One UDP worker, like the edge's one process (its main, timer and other helper processes are counted
# too). With two, a 180 and the 200 behind it can be relayed by different workers and arrive in the
# wrong order: SIPp, holding the call with -d 0, then fails the call on the late 180.
KAMAILIO_CHILDREN = 1
CLK_TCK = os.sysconf("SC_CLK_TCK")

CALL_STEPS = [50, 100, 200, 300, 400, 500, 700, 1000]
REGISTER_STEPS = [250, 500, 1000, 1500, 2000, 2500, 3000]
STEP_SECONDS = 8.0
QUICK_CALL_STEPS = [50, 200]
QUICK_REGISTER_STEPS = [200, 1000]
QUICK_STEP_SECONDS = 2.0
BEHIND = 0.9  # achieved/offered below this: the server (or SIPp) could not keep up
# SIPp retransmits a request after 500 ms without an answer: on loopback that only happens when the
# server is late, so more than this share of retransmitted requests also counts as falling behind.
MAX_RETRANSMISSIONS = 0.01


# ---- processes and /proc ----------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its closing ')'.
    return text[text.rindex(")") + 2 :].split()


def _started(pid: int) -> str:
    """A process's start time (field 22), which with its pid names it (pids are reused)."""
    fields = _stat(pid)
    return fields[19] if fields is not None else ""


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants (Kamailio forks its workers; the edge should be one process)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime (fields 14 and 15 of /proc/PID/stat) of `pids`, in seconds."""
    ticks = 0
    for pid in pids:
        if (fields := _stat(pid)) is not None:
            ticks += int(fields[11]) + int(fields[12])  # fields counted from field 3 (state)
    return ticks / CLK_TCK


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Processes:
    """Every long-running process the benchmark starts, stopped in `stop_all` (called from finally)."""

    def __init__(self) -> None:
        # (name, process, [(pid, start time)] of the children it forked)
        self.procs: list[tuple[str, subprocess.Popen[bytes], list[tuple[int, str]]]] = []

    def start(self, name: str, args: list[str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            # A new session: Ctrl-C reaches only this script, which then stops everything in order.
            proc = subprocess.Popen(args, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        self.procs.append((name, proc, []))
        return proc

    def remember_children(self, proc: subprocess.Popen[bytes]) -> None:
        """Note a forking server's children, to kill any that outlive their parent."""
        for i, (name, p, _) in enumerate(self.procs):
            if p is proc:
                self.procs[i] = (name, p, [(pid, _started(pid)) for pid in process_tree(p.pid)[1:]])

    def stop_all(self) -> None:
        for name, proc, children in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    print(f"  {name} (pid {proc.pid}) ignored SIGTERM for 5 s: killed", flush=True)
                    proc.kill()
                    proc.wait()
            for pid, started in children:
                if _started(pid) == started:  # same pid and start time: still the child we saw
                    print(f"  {name} child {pid} outlived its parent: killed", flush=True)
                    os.kill(pid, signal.SIGKILL)
        self.procs.clear()


# ---- SIPp ---------------------------------------------------------------------------------------


@dataclass
class Step:
    offered: int
    attempts: int
    ok: int
    failed: int
    retransmissions: int
    stray: int  # messages SIPp could not place in a live call (late retransmissions, unexpected)
    seconds: float
    server_cpu: float
    sipp_cpu: float
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def achieved(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    @property
    def success(self) -> float:
        return 100.0 * self.ok / self.attempts if self.attempts else 0.0

    @property
    def behind(self) -> bool:
        return (
            self.achieved < BEHIND * self.offered
            or self.retransmissions > MAX_RETRANSMISSIONS * self.attempts
        )

    @property
    def passed(self) -> bool:
        return self.failed == 0 and self.ok == self.attempts and not self.behind

    def per_1000(self, cpu: float) -> float:
        return 1000.0 * cpu / self.ok if self.ok else float("nan")


def _abort_reasons(workdir: Path) -> Counter[str]:
    """SIPp's error trace, boiled down to 'while expecting X, received Y' counts."""
    reasons: Counter[str] = Counter()
    for path in workdir.glob("*_errors.log"):
        for line in path.read_text(errors="replace").splitlines():
            if m := re.search(r"(while expecting '\w+').*?received '(SIP/2.0 \d+[^'\r\n]*|\w+ )", line):
                reasons[f"{m[1]}, received {m[2].strip()}"] += 1
            elif m := re.search(r"(Aborting call.*?|Call-Id .*?)(timed out|retransmission)", line):
                reasons[m[2]] += 1
    return reasons


def sipp_stats(path: Path) -> dict[str, str]:
    """The last row of a SIPp `-trace_stat` file (column name -> value; empty before the first row)."""
    if path.exists() and len(rows := list(csv.reader(path.open(), delimiter=";"))) > 1:
        return dict(zip(rows[0], rows[-1], strict=False))
    return {}


def run_sipp_step(workdir: Path, target: str, source: str, scenario: str, rate: int, seconds: float,
                  server_pids: list[int], extra: list[str]) -> Step:  # fmt: skip
    """One SIPp UAC run of `seconds` worth of calls at `rate`, with the server's CPU around it."""
    workdir.mkdir(parents=True, exist_ok=True)
    calls = max(10, int(rate * seconds))
    stats = workdir / "stat.csv"
    args = [
        "sipp", "-sf", str(SCENARIOS / scenario), target,
        # A fresh source port per step: late answers to an earlier step's calls (a server still
        # retransmitting) would otherwise land in this step as stray messages.
        "-p", str(free_port(host=source)), "-i", source,
        "-r", str(rate), "-m", str(calls),
        "-l", str(max(50, rate)),  # at most ~1 s of calls in flight: a slow server throttles SIPp
        "-d", "0",  # hang up as soon as the call is set up: the benchmark is about signalling
        "-recv_timeout", "5000",  # a message not answered within 5 s fails the call
        "-timeout", str(int(seconds * 3 + 15)), "-timeout_error",
        "-nostdin", "-trace_stat", "-stf", str(stats), "-fd", "1", "-trace_err",
        *extra,
    ]  # fmt: skip
    before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_before = cpu_seconds(server_pids)
    started = time.monotonic()
    with (workdir / "sipp.out").open("wb") as out:
        subprocess.run(args, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                       timeout=seconds * 3 + 30, check=False)  # fmt: skip
    elapsed = time.monotonic() - started
    cpu_after = cpu_seconds(server_pids)
    after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    # Only this SIPp was reaped in between, so the children's rusage delta is its CPU.
    sipp_cpu = (after_children.ru_utime + after_children.ru_stime) - (
        before_children.ru_utime + before_children.ru_stime
    )
    row = sipp_stats(stats)
    ok, failed = int(row.get("SuccessfulCall(C)", 0)), int(row.get("FailedCall(C)", 0))
    stray = int(row.get("OutOfCallMsgs(C)", 0)) + int(row.get("DeadCallMsgs(C)", 0))
    return Step(rate, calls, ok, failed, int(row.get("Retransmissions(C)", 0)), stray, elapsed,
                cpu_after - cpu_before, sipp_cpu, _abort_reasons(workdir))  # fmt: skip


@dataclass
class Ladder:
    name: str
    unit: str  # "calls" or "registrations"
    steps: list[Step] = field(default_factory=list)
    stopped: str = ""  # why the ladder ended early

    @property
    def best(self) -> Step | None:
        passed = [s for s in self.steps if s.passed]
        return max(passed, key=lambda s: s.offered) if passed else None


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    address: str  # HOST:PORT the UAC sends to
    pids: list[int]  # the process tree whose CPU is counted


def climb(ladder: Ladder, server: Server, workdir: Path, source: str, scenario: str, rates: list[int],
          seconds: float, extra: list[str]) -> Ladder:  # fmt: skip
    """Step the rate up until a step fails or falls behind (that step is reported, then stop)."""
    print(f"\n== {ladder.name}", flush=True)
    print(f"  {'offered/s':>9} {'achieved/s':>10} {'success':>8} {'retrans':>7} {'stray':>6} "
          f"{'server CPU s/1000':>17} {'SIPp CPU s/1000':>15}")  # fmt: skip
    for rate in rates:
        step = run_sipp_step(workdir / f"{rate}", server.address, source, scenario, rate, seconds,
                             server.pids, extra)  # fmt: skip
        ladder.steps.append(step)
        print(f"  {step.offered:>9} {step.achieved:>10.0f} {step.success:>7.2f}% {step.retransmissions:>7} "
              f"{step.stray:>6} {step.per_1000(step.server_cpu):>17.2f} {step.per_1000(step.sipp_cpu):>15.2f}"
              f"{'' if step.passed else '   <- stop'}", flush=True)  # fmt: skip
        if server.proc.poll() is not None:
            ladder.stopped = f"the server exited (code {server.proc.returncode}) during the {rate}/s step"
        elif not step.passed:
            why = (f"{step.failed} failed" if step.failed or step.ok < step.attempts
                   else "fell behind (achieved < 90% of offered, or > 1% retransmitted)")  # fmt: skip
            ladder.stopped = f"{rate}/s: {why} ({step.ok}/{step.attempts} {ladder.unit} succeeded)"
            for reason, count in step.errors.most_common(4):
                ladder.stopped += f"\n      SIPp: {count} x {reason}"
        if ladder.stopped:
            print(f"  stopped at {ladder.stopped}", flush=True)
            break
        time.sleep(1.0)  # let the server's transaction timers of this step settle a little
    return ladder


# ---- the servers ---------------------------------------------------------------------------------


def start_redis(procs: Processes, workdir: Path) -> str:
    """A redis-server on a free loopback port, no persistence; its URL."""
    redis = RedisProcess(free_port(), workdir).start()
    assert redis.proc is not None
    procs.procs.append(("redis-server", redis.proc, []))
    return redis.url


def start_edge(
    procs: Processes, workdir: Path, carrier_port: int, extra: list[str] | None = None,
    env: dict[str, str] | None = None, executable: str = str(TRUNKLINE), current_flags: bool = True,
) -> tuple[subprocess.Popen[bytes], str, str]:  # fmt: skip
    """`executable`: another installation's `trunkline` (a reference build, `--reference-trunkline`),
    which may predate the flood and trunk-default flags (`current_flags=False`; before those, a trunk
    without caps was unlimited anyway)."""
    workdir.mkdir(parents=True)
    # SIPp registers from a fresh port at each step, so each step's Contact is one more binding of the
    # AOR (for an hour): the REGISTER ladder's 7 steps and warm-up need more than the default cap, 5.
    registration = {"registration": {"enabled": True, "maxContacts": 20}} if current_flags else {}
    (workdir / "manifests.yaml").write_text(manifests(carrier_port, free_port(), **registration))
    sip, http = f"{HOST}:{free_port()}", f"{HOST}:{free_port()}"
    # Default log level (INFO, one line per call), as in production; the log goes to a file.
    # The digest PBX (127.0.0.3) is in no ACL: lift the per-source flood budget (50/s), or it would
    # measure the flood guard rather than the call path (bench/flood.py is the flood's benchmark).
    flood = ["--flood-rate", "1000000", "--flood-bytes", "1000000000"] if current_flags else []
    # The test trunk sets no caps: lift the defaults (30 channels, 5 calls/s) to measure the edge.
    flood += ["--default-channels", "0", "--default-calls-per-second", "0"] if current_flags else []
    args = [executable, "edge", "-f", "manifests.yaml", "--sip-listen", sip, "--http-listen", http,
            "--grace", "1", *flood, *(extra or [])]  # fmt: skip
    saved = dict(os.environ)
    os.environ.update(env or {})  # the edge's environment (OTEL_* for the tracing ladders)
    try:
        proc = procs.start("trunkline edge", args, workdir / "edge.log", workdir)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    wait_ready("trunkline edge", proc, http, workdir / "edge.log")
    return proc, sip, http


def wait_ready(name: str, proc: subprocess.Popen[bytes], http: str, log: Path) -> None:
    """Until the process answers 200 on /readyz (20 s at most); its log tail if it exits first."""
    wait_started(proc, lambda: http_ready(f"http://{http}/readyz"), name, log.read_text)


def metric(http: str, series: str) -> str:
    """One series' value from a process's /metrics (`series` as written there, labels included):
    "?" when it is absent, "? (why)" when /metrics does not answer."""
    try:
        with urllib.request.urlopen(f"http://{http}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError as exc:
        return f"? ({exc})"
    m = re.search(rf"^{re.escape(series)} (\S+)", text, re.M)
    return m[1] if m else "?"


def edge_busy(http: str) -> str:
    """The edge's live-call count (/metrics), to see calls that were never released."""
    return metric(http, 'trunkline_component_busy{component="edge"}')


def start_relay(
    procs: Processes, workdir: Path, extra: list[str] | None = None, executable: str = str(TRUNKLINE),
    ports: str = "20000-39999",
) -> tuple[subprocess.Popen[bytes], str, str]:  # fmt: skip
    """One `trunkline media` relay process (one engine worker) on HOST; its gRPC and HTTP addresses."""
    workdir.mkdir(parents=True)
    grpc_address, http = f"{HOST}:{free_port()}", f"{HOST}:{free_port()}"
    args = [executable, "media", "--listen", grpc_address, "--media-listen", HOST,
            "--media-ports", ports, "--workers", "1", "--http-listen", http,
            "--insecure-grpc", *(extra or [])]  # fmt: skip
    proc = procs.start("trunkline media", args, workdir / "media.log", workdir)
    wait_ready("trunkline media", proc, http, workdir / "media.log")
    time.sleep(0.5)  # let the engine worker start (counted in the process tree)
    return proc, grpc_address, http


KAMAILIO_CFG = """\
#!KAMAILIO
# A plain stateful proxy: every request relayed by tm to the SIPp UAS, with Record-Route.
debug=1
log_stderror=yes
children={children}
listen=udp:{host}:{port}
disable_tcp=yes
auto_aliases=no
mpath="{mpath}"

loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "siputils.so"
loadmodule "maxfwd.so"
loadmodule "pv.so"

request_route {{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (has_totag()) {{
        # in-dialog: ACK for 2xx and BYE follow the Record-Route we wrote
        if (loose_route()) {{
            t_relay();
        }} else if (method == "ACK" && t_check_trans()) {{
            t_relay();
        }}
        exit;
    }}
    if (method == "CANCEL") {{
        if (t_check_trans()) {{
            t_relay();
        }}
        exit;
    }}
    t_check_trans();
    record_route();
    $du = "sip:{host}:{uas_port}";
    if (!t_relay()) {{
        sl_reply_error();
    }}
}}
"""


def kamailio_mpath() -> str:
    for path in ("/usr/lib/x86_64-linux-gnu/kamailio/modules", "/usr/lib/kamailio/modules"):
        if Path(path, "tm.so").exists():
            return path
    raise RuntimeError("kamailio modules (tm.so) not found")


def start_kamailio(
    procs: Processes, workdir: Path, uas_port: int, children: int = KAMAILIO_CHILDREN
) -> tuple[subprocess.Popen[bytes], str]:
    workdir.mkdir(parents=True)
    port = free_port()
    cfg = workdir / "kamailio.cfg"
    cfg.write_text(KAMAILIO_CFG.format(children=children, host=HOST, port=port, uas_port=uas_port,
                                       mpath=kamailio_mpath()))  # fmt: skip
    # -DD: the creator stays in the foreground (its pid is ours to stop) and forks the workers;
    # -E: log to stderr (the log file); -Y/-w: runtime and working directory in our temp dir.
    args = [KAMAILIO, "-f", str(cfg), "-DD", "-E", "-P", str(workdir / "kamailio.pid"), "-Y", str(workdir),
            "-w", str(workdir), "-m", "256", "-M", "16"]  # fmt: skip
    proc = procs.start("kamailio", args, workdir / "kamailio.log", workdir)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"kamailio exited:\n{(workdir / 'kamailio.log').read_text()[-3000:]}")
        # Ready once the creator has forked its UDP workers (and timers): count stays put after that.
        if len(process_tree(proc.pid)) > children + 1:
            time.sleep(0.5)
            procs.remember_children(proc)
            return proc, f"{HOST}:{port}"
        time.sleep(0.1)
    raise RuntimeError("kamailio did not start its workers")


# ---- every core: N workers against one ---------------------------------------------------------

WORKER_STEPS = [50, 100, 150, 200, 250, 300, 400, 500, 600, 700, 850, 1000, 1200, 1400, 1700, 2000]
QUICK_WORKER_STEPS = [100, 300]
# SO_REUSEPORT spreads by source address and port: one SIPp socket per call (-t un) spreads calls over
# the workers, as many carriers' and PBXs' addresses do. A 50 ms hold keeps a call's ACK ahead of its
# BYE through Kamailio's several workers (they read one socket and may reorder a call's messages).
SPREAD = ["-t", "un", "-max_socket", "10000", "-d", "50"]


def no_ringing_uas(workdir: Path) -> Path:
    """carrier_uas.xml without its 180: through Kamailio's several workers the 200 can overtake the 180,
    and SIPp fails a call on the late 180. Both servers get this carrier."""
    text = (SCENARIOS / "carrier_uas.xml").read_text()
    start = text.index("  <send>")
    end = text.index("</send>", start) + len("</send>\n")
    path = workdir / "carrier_uas_no_180.xml"
    path.write_text(text[:start] + text[end:])
    return path


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """Stop a server between ladders, so that it takes no CPU from the next one."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def edge_ladder(workers: int) -> str:
    return f"trunkline calls, IP ACL, {workers} worker(s)"


def kamailio_ladder(children: int) -> str:
    return f"kamailio calls, {children} children"


def worker_ladders(procs: Processes, workdir: Path, workers: int, steps: list[int], seconds: float,
                   call: list[str], kamailio: bool) -> list[Ladder]:  # fmt: skip
    """IP ACL calls on the edge with 1 and with `workers` workers (Redis store for both), then on
    Kamailio with 1 and `workers` children, each alone on the machine with the load generator."""
    workdir.mkdir(parents=True)
    uas_port = free_port()
    uas = ["sipp", "-sf", str(no_ringing_uas(workdir)), "-i", HOST, "-p", str(uas_port), "-nostdin"]
    procs.start("sipp carrier UAS (no 180)", uas, workdir / "uas.log", workdir)
    url = start_redis(procs, workdir / "redis")
    ladders = []
    for count in (1, workers):
        proc, sip, _ = start_edge(procs, workdir / f"edge-{count}", uas_port,
                                  ["--redis", url, "--workers", str(count)])  # fmt: skip
        time.sleep(1.0)  # every worker listening (the parent is ready once all of them are)
        server = Server(proc, sip, process_tree(proc.pid))
        print(f"\ntrunkline edge --workers {count}: pid {proc.pid}, {len(server.pids)} processes on {sip}")
        name = edge_ladder(count)
        ladders.append(climb(Ladder(name, "calls"), server, workdir / f"calls-{count}", PBX_ACL_IP,
                             "pbx_call.xml", steps, seconds, [*call, *SPREAD]))  # fmt: skip
        stop_server(proc)
    if kamailio:
        for count in (1, workers):
            proc, address = start_kamailio(procs, workdir / f"kamailio-{count}", uas_port, children=count)
            server = Server(proc, address, process_tree(proc.pid))
            print(f"\nkamailio children={count}: pid {proc.pid}, {len(server.pids)} processes on {address}")
            name = kamailio_ladder(count)
            ladders.append(climb(Ladder(name, "calls"), server, workdir / f"kamailio-calls-{count}",
                                 PBX_ACL_IP, "pbx_call.xml", steps, seconds, [*call, *SPREAD]))  # fmt: skip
            stop_server(proc)
    return ladders


def scaling(ladders: list[Ladder], workers: int) -> None:
    """N workers' highest passing rate over one worker's, for the edge and for Kamailio."""
    by_name = {ladder.name: ladder for ladder in ladders}
    for label, name in (("trunkline edge", edge_ladder), ("kamailio", kamailio_ladder)):
        single, several = by_name.get(name(1)), by_name.get(name(workers))
        if not (single and several and single.best and several.best):
            continue
        capped = " (passed every step: the ratio is a lower bound)" if not several.stopped else ""
        rate, one = several.best.offered, single.best.offered
        print(
            f"\n  scaling, {label}: {workers} workers {rate}/s / 1 worker {one}/s = {rate / one:.2f}{capped}"
        )


# ---- the run ------------------------------------------------------------------------------------


def compare_cpu(ours: Ladder | None, ref: Ladder | None, ours_label: str, ref_label: str, note: str) -> None:
    """CPU per 1,000 calls of `ours` over `ref` at every step where both completed every call (behind
    or not: what a call costs does not depend on keeping up)."""
    if not (ours and ref):
        return
    done = {s.offered: s for s in ref.steps if s.success >= 100.0}
    for step in ours.steps:
        if step.success >= 100.0 and step.offered in done:
            mine, theirs = (
                step.per_1000(step.server_cpu),
                done[step.offered].per_1000(done[step.offered].server_cpu),
            )
            print(f"\n  CPU per 1,000 calls at {step.offered}/s: {ours_label} {mine:.2f} s, {ref_label} "
                  f"{theirs:.2f} s, ratio {mine / theirs:.2f} ({note})")  # fmt: skip


def compare(ours: Ladder | None, ref: Ladder | None, ours_label: str, ref_label: str, note: str) -> None:
    """Highest passing rate of `ours` over `ref`, and CPU per 1,000 at every step both passed."""
    if not (ours and ref and ours.best and ref.best):
        return
    ceiling = f" ({ref_label} passed every step: its ceiling is higher)" if not ref.stopped else ""
    rate = ours.best.offered / ref.best.offered
    note = f" ({note})" if note else ""
    print(f"\n  {ours_label} / {ref_label}, highest rate: {rate:.2f}{ceiling}{note}")
    passed = {s.offered: s for s in ref.steps if s.passed}
    for step in ours.steps:
        if step.passed and step.offered in passed:
            mine, theirs = (
                step.per_1000(step.server_cpu),
                passed[step.offered].per_1000(passed[step.offered].server_cpu),
            )
            print(f"  CPU per 1,000 calls at {step.offered}/s: {ours_label} {mine:.2f} s, "
                  f"{ref_label} {theirs:.2f} s, ratio {mine / theirs:.2f}")  # fmt: skip


# (label, sampler ratio, OTLP protocol)
TRACING_MODES = [
    ("off", None, None),
    ("ratio 1.0", "1.0", "grpc"),
    ("ratio 1.0 over OTLP/HTTP", "1.0", "http/protobuf"),
    ("ratio 0.01", "0.01", "grpc"),
]


def tracing_ladders(
    procs: Processes, workdir: Path, uas_port: int, steps: list[int], seconds: float, call: list[str]
) -> list[Ladder]:
    """The IP ACL call ladder on three edges, one per tracing mode, exporting to a local Jaeger (in-memory
    storage): the CPU the edge spends on its calls' traces, export included."""
    binary = jaeger_binary()
    if binary is None:
        print("no jaeger binary (scripts/jaeger.sh): no tracing ladders")
        return []
    jaeger = Jaeger(workdir / "jaeger", binary).start()
    assert jaeger.proc is not None
    procs.procs.append(("jaeger", jaeger.proc, []))
    ladders = []
    for label, ratio, protocol in TRACING_MODES:
        endpoint = jaeger.otlp_http if protocol == "http/protobuf" else jaeger.otlp_grpc
        extra = ["--otlp-endpoint", endpoint] if ratio else []
        # The sampler decides per call, at the call's root span; the rest of an unsampled call is free.
        env = {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": ratio} if ratio else {}
        if protocol:
            env["OTEL_EXPORTER_OTLP_PROTOCOL"] = protocol
        where = workdir / f"edge-tracing-{label.replace(' ', '-')}"
        proc, sip, _ = start_edge(procs, where, uas_port, extra, env)
        print(f"trunkline edge, tracing {label}: pid {proc.pid} on {sip}")
        name = f"trunkline calls, IP ACL, tracing {label}"
        ladders.append(climb(Ladder(name, "calls"), Server(proc, sip, process_tree(proc.pid)),
                             where / "calls", PBX_ACL_IP, "pbx_call.xml", steps, seconds, call))  # fmt: skip
    return ladders


def tracing_rounds(procs: Processes, workdir: Path, uas_port: int, rate: int, seconds: float, rounds: int,
                   call: list[str], references: list[str]) -> None:  # fmt: skip
    """Every tracing mode's edge (and each reference build's, off and ratio 1.0) one step each in
    turn, `rounds` times, the order rotated each round: the load of whatever else runs on the machine
    drifts over minutes, and ladders run one after another compare different loads; interleaved
    steps share it. Prints CPU per call per round and the ratios to the same build's untraced edge."""
    binary = jaeger_binary()
    if binary is None:
        print("no jaeger binary (scripts/jaeger.sh): no tracing rounds")
        return
    jaeger = Jaeger(workdir / "jaeger", binary).start()
    assert jaeger.proc is not None
    procs.procs.append(("jaeger", jaeger.proc, []))
    edges: list[tuple[str, Server]] = []
    builds = [("", str(TRUNKLINE))] + [(f"ref{n} ", exe) for n, exe in enumerate(references, 1)]
    for prefix, executable in builds:
        for label, ratio, protocol in TRACING_MODES:
            if prefix and label not in ("off", "ratio 1.0"):
                continue
            endpoint = jaeger.otlp_http if protocol == "http/protobuf" else jaeger.otlp_grpc
            extra = ["--otlp-endpoint", endpoint] if ratio else []
            env = {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": ratio} if ratio else {}
            if protocol:
                env["OTEL_EXPORTER_OTLP_PROTOCOL"] = protocol
            name = prefix + label
            where = workdir / f"edge-rounds-{name.replace(' ', '-').replace('/', '-')}"
            proc, sip, _ = start_edge(procs, where, uas_port, extra, env, executable=executable)
            print(f"{name}: {executable} pid {proc.pid} on {sip}")
            edges.append((name, Server(proc, sip, process_tree(proc.pid))))
    for name, server in edges:  # warm-up, not counted: the first calls of a process cost more (imports)
        run_sipp_step(workdir / "warm-up" / name.replace(" ", "-").replace("/", "-"), server.address,
                      PBX_ACL_IP, "pbx_call.xml", rate, 2.0, server.pids, call)  # fmt: skip
    per_call: dict[str, dict[int, float]] = {name: {} for name, _ in edges}  # round -> CPU ms per call
    for n in range(rounds):
        shift = n % len(edges)
        for name, server in edges[shift:] + edges[:shift]:
            where = workdir / f"round-{n}" / name.replace(" ", "-").replace("/", "-")
            step = run_sipp_step(where, server.address, PBX_ACL_IP, "pbx_call.xml", rate, seconds,
                                 server.pids, call)  # fmt: skip
            if step.success < 100.0:
                print(f"  round {n + 1} {name}: {step.ok}/{step.attempts} calls: not counted")
                continue
            per_call[name][n] = step.server_cpu / step.ok * 1000
        print(f"  round {n + 1}: " + ", ".join(f"{k} {v[n]:.2f}" for k, v in per_call.items() if n in v))
    print(f"\n== Tracing, {rounds} interleaved rounds of {rate} calls/s x {seconds:g} s: CPU ms per call")
    for name, values in per_call.items():
        if not values:
            continue
        base = per_call.get(name.split(" ")[0] + " off" if name.startswith("ref") else "off", {})
        pairs = [value / base[n] for n, value in values.items() if n in base]
        mean = sum(values.values()) / len(values)
        ratio = ""
        if pairs:
            base_mean = sum(base.values()) / len(base)
            ratio = f"ratio per round {min(pairs):.2f}-{max(pairs):.2f}, of the means {mean / base_mean:.2f}"
        print(f"  {name:28} {' '.join(f'{v:.2f}' for v in values.values())}  mean {mean:.2f}  {ratio}")


def media_rounds(procs: Processes, workdir: Path, uas_port: int, rate: int, seconds: float, rounds: int,
                 call: list[str], references: list[str]) -> None:  # fmt: skip
    """Digest calls with media allocation: this build's edge and relay, and each reference build's,
    one step each in turn, `rounds` times (the order rotated each round, as tracing_rounds). Prints the
    edge's and the relay's CPU per call apart, per round, and the ratios to the first reference."""
    pairs: list[tuple[str, Server, list[int]]] = []  # (name, edge, the relay's process tree)
    builds = [("this build", str(TRUNKLINE))] + [(f"ref{n}", exe) for n, exe in enumerate(references, 1)]
    for n, (name, executable) in enumerate(builds):
        where = workdir / f"media-{n}"
        low = 20000 + n * 6000  # each relay its own port range
        relay_proc, relay, _ = start_relay(procs, where / "relay", executable=executable,
                                           ports=f"{low}-{low + 5999}")  # fmt: skip
        flags = takes_current_flags(executable)
        to_relay = ["--media-relay", relay, "--insecure-grpc"]
        edge_proc, sip, _ = start_edge(procs, where / "edge", uas_port, to_relay, executable=executable,
                                       current_flags=flags)  # fmt: skip
        print(
            f"{name}: {executable}, edge pid {edge_proc.pid} on {sip}, relay pid {relay_proc.pid} on {relay}"
        )
        pairs.append(
            (name, Server(edge_proc, sip, process_tree(edge_proc.pid)), process_tree(relay_proc.pid))
        )
    auth = ["-au", USER, "-ap", PASSWORD]
    for name, edge, _ in pairs:  # warm-up, not counted
        run_sipp_step(workdir / "warm-up" / name.replace(" ", "-"), edge.address, PBX_AUTH_IP, "pbx_call.xml",
                      rate, 2.0, edge.pids, [*call, *auth])  # fmt: skip
    costs: dict[str, dict[int, tuple[float, float]]] = {name: {} for name, _, _ in pairs}  # (edge, relay) ms
    for n in range(rounds):
        shift = n % len(pairs)
        for name, edge, relay_pids in pairs[shift:] + pairs[:shift]:
            where = workdir / f"media-round-{n}" / name.replace(" ", "-")
            relay_before = cpu_seconds(relay_pids)
            step = run_sipp_step(where, edge.address, PBX_AUTH_IP, "pbx_call.xml", rate, seconds, edge.pids,
                                 [*call, *auth])  # fmt: skip
            relay_cpu = cpu_seconds(relay_pids) - relay_before
            if step.success < 100.0 or step.behind:
                print(f"  round {n + 1} {name}: {step.ok}/{step.attempts} calls, "
                      f"{step.achieved:.0f}/s: not counted")  # fmt: skip
                continue
            costs[name][n] = (step.server_cpu / step.ok * 1000, relay_cpu / step.ok * 1000)
        print(f"  round {n + 1}: " + ", ".join(f"{k} {v[n][0]:.2f} + {v[n][1]:.2f}" for k, v in costs.items()
                                               if n in v))  # fmt: skip
    print(f"\n== Media allocation, {rounds} interleaved rounds of {rate} digest calls/s x {seconds:g} s: "
          "CPU ms per call, edge + relay")  # fmt: skip
    base = costs.get("ref1", {})
    for name, values in costs.items():
        if not values:
            continue
        edge_mean = sum(v[0] for v in values.values()) / len(values)
        relay_mean = sum(v[1] for v in values.values()) / len(values)
        line = f"  {name:12} edge {edge_mean:.2f}  relay {relay_mean:.2f}  total {edge_mean + relay_mean:.2f}"
        if base and name != "ref1":
            ratios = [sum(v) / sum(base[n]) for n, v in values.items() if n in base]
            base_total = sum(sum(v) for v in base.values()) / len(base)
            base_edge = sum(v[0] for v in base.values()) / len(base)
            base_relay = sum(v[1] for v in base.values()) / len(base)
            line += (f"  / ref1: total {(edge_mean + relay_mean) / base_total:.2f} (per round "
                     f"{min(ratios):.2f}-{max(ratios):.2f}), edge {edge_mean / base_edge:.2f}, "
                     f"relay {relay_mean / base_relay:.2f}")  # fmt: skip
        print(line)


def report(ladders: list[Ladder]) -> None:
    print("\n== Summary (highest step: 100% success, achieved >= 90% of offered, <= 1% retransmitted)")
    print(f"  {'':50} {'rate/s':>7} {'server CPU s/1000':>17}")
    for ladder in ladders:
        best = ladder.best
        if best is None:
            print(f"  {ladder.name:50} {'none':>7}")
        else:
            print(f"  {ladder.name:50} {best.offered:>7} {best.per_1000(best.server_cpu):>17.2f}")
    by_name = {ladder.name.split(":")[0]: ladder for ladder in ladders}
    memory = by_name.get("trunkline calls, digest")
    compare(by_name.get("trunkline calls, digest, Redis store"), memory, "Redis store", "memory store",
            "the target: >= 0.75")  # fmt: skip
    compare(by_name.get("trunkline calls, digest, media relay"), memory, "edge + relay", "edge alone",
            "CPU of both processes")  # fmt: skip
    compare(memory, by_name.get("kamailio calls"), "trunkline (digest)", "kamailio", "")
    untraced = by_name.get("trunkline calls, IP ACL, tracing off")
    compare_cpu(by_name.get("trunkline calls, IP ACL, tracing ratio 1.0"), untraced, "traced (1.0)",
                "untraced", "target: <= 1.15")  # fmt: skip
    compare_cpu(by_name.get("trunkline calls, IP ACL, tracing ratio 1.0 over OTLP/HTTP"), untraced,
                "traced (1.0, OTLP/HTTP)", "untraced", "target: <= 1.15")  # fmt: skip
    compare_cpu(by_name.get("trunkline calls, IP ACL, tracing ratio 0.01"), untraced, "traced (0.01)",
                "untraced", "target: <= 1.03")  # fmt: skip
    for ladder in ladders:
        if ladder.stopped:
            print(f"  {ladder.name}: stopped at {ladder.stopped}")


def _rates(text: str) -> list[int]:
    return [int(r) for r in text.split(",") if r.strip()]


def takes_current_flags(executable: str) -> bool:
    """Whether another build's edge takes the flood and trunk-default flags (a build of today's main
    does, and without them would cap the benchmark at the default 5 calls/s)."""
    shown = subprocess.run(
        [executable, "edge", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    return "--default-calls-per-second" in shown.stdout


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="two short steps each (smoke run, < 60 s)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, SIPp traces)")
    parser.add_argument("--no-kamailio", action="store_true", help="skip the Kamailio reference")
    parser.add_argument("--redis", action="store_true", help="digest calls with the Redis store too")
    parser.add_argument("--media", action="store_true", help="digest calls with a media relay too")
    parser.add_argument("--only-calls", action="store_true", help="only the digest call ladder(s)")
    tracing_help = "IP ACL calls on edges tracing into a local Jaeger: off, ratio 1.0, 0.01"
    parser.add_argument("--tracing", action="store_true", help=tracing_help)
    parser.add_argument("--only-tracing", action="store_true", help="only the tracing ladders")
    parser.add_argument("--tracing-rounds", type=int, default=0, metavar="N",
                        help="instead of ladders: N interleaved rounds of one step per tracing mode "
                        "(and per --reference-trunkline, off and 1.0)")  # fmt: skip
    parser.add_argument("--tracing-rate", type=int, default=100, help="calls/s of --tracing-rounds' steps")
    parser.add_argument("--media-rounds", type=int, default=0, metavar="N",
                        help="instead of ladders: N interleaved rounds of one digest step with media "
                        "allocation per build (this one and each --reference-trunkline), edge and relay "
                        "CPU apart")  # fmt: skip
    parser.add_argument("--media-rate", type=int, default=300, help="calls/s of --media-rounds' steps")
    parser.add_argument(
        "--reference-trunkline", metavar="PATH", action="append",
        help="another build's trunkline executable (repeatable): its digest and IP ACL call ladders run "
        "in the same run",
    )  # fmt: skip
    steps_help = "comma-separated rates instead of the default ladder (a loaded machine: the low steps only)"
    parser.add_argument("--call-steps", type=_rates, metavar="R1,R2,...", help=steps_help)
    parser.add_argument("--register-steps", type=_rates, metavar="R1,R2,...", help=steps_help)
    parser.add_argument(
        "--workers", type=int, metavar="N",
        help="also IP ACL calls on `trunkline edge --workers N` against --workers 1, and Kamailio with N "
        "children against 1, calls spread over source ports; prints the scaling ratios",
    )  # fmt: skip
    parser.add_argument("--only-workers", type=int, metavar="N", help="only the --workers N ladders")
    args = parser.parse_args()
    for binary in ("sipp", str(TRUNKLINE)) + (() if args.no_kamailio else (KAMAILIO,)):
        if not shutil.which(binary):
            print(f"missing: {binary}")
            return 2
    call_steps = args.call_steps or (QUICK_CALL_STEPS if args.quick else CALL_STEPS)
    register_steps = args.register_steps or (QUICK_REGISTER_STEPS if args.quick else REGISTER_STEPS)
    seconds = QUICK_STEP_SECONDS if args.quick else STEP_SECONDS

    # SIGTERM (e.g. CI cancelling) and SIGINT unwind through the finally below. SIGINT is set
    # explicitly: a shell without job control starts background commands with SIGINT ignored.
    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    workdir = Path(tempfile.mkdtemp(prefix="edge-bench-"))
    procs = Processes()
    ladders: list[Ladder] = []
    print(
        f"{os.cpu_count()} cores, Python {sys.version.split()[0]}; steps of {seconds:g} s; work dir {workdir}"
    )
    try:
        uas_port = free_port()
        uas = ["sipp", "-sf", str(SCENARIOS / "carrier_uas.xml"), "-i", HOST, "-p", str(uas_port), "-nostdin"]
        procs.start("sipp carrier UAS", uas, workdir / "uas.log", workdir)
        if args.only_workers:
            steps = QUICK_WORKER_STEPS if args.quick else WORKER_STEPS
            call = ["-s", CALLEE, "-key", "caller", CALLER]
            ladders = worker_ladders(procs, workdir / "workers", args.only_workers, steps, seconds, call,
                                     not args.no_kamailio)  # fmt: skip
            report(ladders)
            scaling(ladders, args.only_workers)
            return 0
        edge_proc, sip, http = start_edge(procs, workdir / "edge", uas_port)
        edge = Server(edge_proc, sip, process_tree(edge_proc.pid))
        print(f"trunkline edge pid {edge_proc.pid} ({len(edge.pids)} process) on {sip}, "
              f"carrier = SIPp UAS on {HOST}:{uas_port}")  # fmt: skip
        rss_start = rss_mib(edge_proc.pid)
        auth = ["-au", USER, "-ap", PASSWORD]
        call = ["-s", CALLEE, "-key", "caller", CALLER]
        if args.media_rounds:
            media_rounds(procs, workdir, uas_port, args.media_rate, seconds, args.media_rounds, call,
                         args.reference_trunkline or [])  # fmt: skip
            return 0
        if args.tracing_rounds:
            tracing_rounds(procs, workdir, uas_port, args.tracing_rate, seconds, args.tracing_rounds, call,
                           args.reference_trunkline or [])  # fmt: skip
            return 0
        if args.tracing and args.only_tracing:
            ladders += tracing_ladders(procs, workdir, uas_port, call_steps, seconds, call)
            report(ladders)
            return 0
        name = "trunkline calls, digest: 407 + INVITE/200/ACK/BYE"
        ladders.append(climb(Ladder(name, "calls"), edge, workdir / "edge-calls", PBX_AUTH_IP, "pbx_call.xml",
                             call_steps, seconds, [*call, *auth]))  # fmt: skip
        for number, executable in enumerate(args.reference_trunkline or [], 1):
            ref_proc, ref_sip, _ = start_edge(
                procs,
                workdir / f"reference-{number}",
                uas_port,
                executable=executable,
                current_flags=takes_current_flags(executable),
            )
            reference = Server(ref_proc, ref_sip, process_tree(ref_proc.pid))
            print(f"reference {number} ({executable}): pid {ref_proc.pid} on {ref_sip}")
            name = f"reference {number} calls, digest: 407 + INVITE/200/ACK/BYE"
            where = workdir / f"ref-{number}"
            ladders.append(climb(Ladder(name, "calls"), reference, where / "calls", PBX_AUTH_IP,
                                 "pbx_call.xml", call_steps, seconds, [*call, *auth]))  # fmt: skip
            if not args.only_calls:
                name = f"reference {number} calls, IP ACL: INVITE/200/ACK/BYE"
                ladders.append(climb(Ladder(name, "calls"), reference, where / "acl", PBX_ACL_IP,
                                     "pbx_call.xml", call_steps, seconds, call))  # fmt: skip
        if args.redis:
            url = start_redis(procs, workdir / "redis")
            redis_proc, redis_sip, _ = start_edge(procs, workdir / "edge-redis", uas_port, ["--redis", url])
            redis_edge = Server(redis_proc, redis_sip, process_tree(redis_proc.pid))
            print(f"trunkline edge with --redis {url}: pid {redis_proc.pid} on {redis_sip}")
            name = "trunkline calls, digest, Redis store"
            ladders.append(climb(Ladder(name, "calls"), redis_edge, workdir / "edge-redis-calls", PBX_AUTH_IP,
                                 "pbx_call.xml", call_steps, seconds, [*call, *auth]))  # fmt: skip
        if args.media:
            relay_proc, relay, _ = start_relay(procs, workdir / "relay")
            media_proc, media_sip, _ = start_edge(
                procs, workdir / "edge-media", uas_port, ["--media-relay", relay, "--insecure-grpc"]
            )
            # The relay's CPU is part of the cost of a call with media allocation: both are counted.
            media_edge = Server(
                media_proc, media_sip, process_tree(media_proc.pid) + process_tree(relay_proc.pid)
            )
            print(f"trunkline edge with --media-relay {relay} (relay pid {relay_proc.pid}): "
                  f"pid {media_proc.pid} on {media_sip}; server CPU = edge + relay")  # fmt: skip
            name = "trunkline calls, digest, media relay"
            ladders.append(climb(Ladder(name, "calls"), media_edge, workdir / "edge-media-calls", PBX_AUTH_IP,
                                 "pbx_call.xml", call_steps, seconds, [*call, *auth]))  # fmt: skip
        if args.tracing:
            ladders += tracing_ladders(procs, workdir, uas_port, call_steps, seconds, call)
        if not args.only_calls:
            name = "trunkline REGISTER, digest: 401 + REGISTER/200"
            register = ["-key", "aor", USER, *auth]
            ladders.append(climb(Ladder(name, "registrations"), edge, workdir / "edge-register", PBX_AUTH_IP,
                                 "pbx_register_refresh.xml", register_steps, seconds, register))  # fmt: skip
            name = "trunkline calls, IP ACL: INVITE/200/ACK/BYE"
            ladders.append(climb(Ladder(name, "calls"), edge, workdir / "edge-acl", PBX_ACL_IP,
                                 "pbx_call.xml", call_steps, seconds, call))  # fmt: skip
        time.sleep(2)  # calls that failed may need a moment to be released
        print(f"\n  edge after all steps: RSS {rss_start:.0f} -> {rss_mib(edge_proc.pid):.0f} MiB, "
              f"live calls reported by /metrics: {edge_busy(http)} (0 expected)")  # fmt: skip
        if not args.no_kamailio and not args.only_calls:
            kamailio_proc, address = start_kamailio(procs, workdir / "kamailio", uas_port)
            kamailio = Server(kamailio_proc, address, process_tree(kamailio_proc.pid))
            print(f"\nkamailio pid {kamailio_proc.pid}: {len(kamailio.pids)} processes "
                  f"({KAMAILIO_CHILDREN} UDP worker) on {address}")  # fmt: skip
            name = "kamailio calls: INVITE/200/ACK/BYE via tm"
            ladders.append(climb(Ladder(name, "calls"), kamailio, workdir / "kamailio-calls", PBX_AUTH_IP,
                                 "pbx_call.xml", call_steps, seconds, call))  # fmt: skip
        if args.workers:
            steps = QUICK_WORKER_STEPS if args.quick else WORKER_STEPS
            ladders += worker_ladders(procs, workdir / "workers", args.workers, steps, seconds, call,
                                      not args.no_kamailio)  # fmt: skip
        report(ladders)
        if args.workers:
            scaling(ladders, args.workers)
        problems = (workdir / "edge" / "edge.log").read_text(errors="replace").count("Traceback")
        if problems:
            print(f"\n  edge log has {problems} Python traceback(s): {workdir / 'edge' / 'edge.log'}")
    except KeyboardInterrupt:
        print("\ninterrupted", flush=True)
        return 130
    finally:
        procs.stop_all()
        if args.keep:
            print(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
