#!/usr/bin/env python3
"""Memory per held call: RSS of one `trunkline edge` and of one `trunkline media` relay (its engine
worker included) with 0, 500, 1,000 and 2,000 answered calls held open, and after they all hung up;
twice on the same processes, to show the memory of the first round is reused, not leaked.

    .venv/bin/python -m bench.held_calls [--steps 500,1000,2000] [--rounds 2] [--rate 100] [--redis] [--keep]

Everything on loopback, as in bench/edge_calls.py (whose helpers this uses): a SIPp carrier UAS
answering with SDP, the edge with `--media-relay`, one SIPp UAC per step placing its calls from the
trunk's IP ACL address (`pbx_call.xml`, no digest) and holding them (`-d`) until one hang-up time
common to the round, when each sends its BYE (retransmitted until answered). See bench/README-edge.md.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from bench.edge_calls import (
    CALLEE,
    CALLER,
    HOST,
    PBX_ACL_IP,
    Processes,
    metric,
    process_tree,
    rss_mib,
    run_sipp_step,
    sipp_stats,
    start_edge,
    start_redis,
    start_relay,
)
from tests.support.ports import free_port
from tests.support.processes import TRUNKLINE
from tests.support.sipp import SCENARIOS

STEPS = [500, 1000, 2000]  # held calls at each step; 0 (before the first call of a round) comes first
RATE = 100  # calls/s each step's SIPp places (and hangs up): well below what edge + relay set up
SETTLE = 3.0  # seconds between a step's last call answered and reading RSS: its work done, logs written
# Seconds a step may take beyond placing its calls at RATE: a loaded machine answers later. The
# round's hang-up time is planned from this; a step still short of its calls by then is measured
# with the calls it has (the table shows how many).
STEP_SLACK = 6.0
EDGE_CALLS = 'trunkline_component_busy{component="edge"}'
RELAY_SESSIONS = "trunkline_media_sessions"


def tree_rss(pid: int) -> float:
    """RSS of `pid` and its descendants, MiB (the relay spawns its engine worker and multiprocessing's
    resource tracker)."""
    total = 0.0
    for member in process_tree(pid):
        with contextlib.suppress(OSError):  # a process that ended between the listing and the read
            total += rss_mib(member)
    return total


def count(http: str, series: str) -> int:
    """A gauge from /metrics as an integer; -1 when it cannot be read (shown as such, never hidden)."""
    try:
        return int(float(metric(http, series)))
    except ValueError:
        return -1


@dataclass
class Sample:
    calls: int  # live calls the edge reports when RSS is read
    sessions: int  # the relay's sessions then
    edge: float  # RSS MiB
    relay: float
    redis: float | None  # with --redis: where the call records live instead of the edge


@dataclass
class Servers:
    edge: subprocess.Popen[bytes]
    sip: str
    edge_http: str
    relay: subprocess.Popen[bytes]
    relay_http: str
    redis: subprocess.Popen[bytes] | None

    def live(self) -> tuple[int, int]:
        return count(self.edge_http, EDGE_CALLS), count(self.relay_http, RELAY_SESSIONS)

    def sample(self) -> Sample:
        edge, relay = tree_rss(self.edge.pid), tree_rss(self.relay.pid)
        redis = tree_rss(self.redis.pid) if self.redis is not None else None
        calls, sessions = self.live()
        return Sample(calls, sessions, edge, relay, redis)

    def exited(self) -> str:
        for name, proc in (("edge", self.edge), ("relay", self.relay)):
            if proc.poll() is not None:
                return f"the {name} exited (code {proc.returncode})"
        return ""


@dataclass
class Round:
    samples: list[Sample] = field(default_factory=list)  # 0, then each step
    after: Sample | None = None  # once every call hung up
    ok: int = 0  # SIPp's successful calls (held, then BYE answered)
    failed: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def peak(self) -> Sample:
        return max(self.samples, key=lambda s: s.calls)


def slope(samples: list[Sample], rss: Callable[[Sample], float | None]) -> float:
    """Least-squares MiB per 1,000 live calls."""
    points = [(s.calls, y) for s in samples if (y := rss(s)) is not None and s.calls >= 0]
    if len(points) < 2:
        return float("nan")
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    var = sum((x - mean_x) ** 2 for x, _ in points)
    if not var:
        return float("nan")
    return 1000 * sum((x - mean_x) * (y - mean_y) for x, y in points) / var


def until(check: Callable[[], bool], deadline: float, interval: float = 0.25) -> bool:
    while not check():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


def start_holding(procs: Processes, workdir: Path, sip: str, calls: int, rate: int, hold: float,
                  timeout: float) -> subprocess.Popen[bytes]:  # fmt: skip
    """A SIPp UAC placing `calls` calls at `rate`/s, each hung up (BYE) `hold` seconds after its ACK."""
    workdir.mkdir(parents=True)
    args = [
        "sipp", "-sf", str(SCENARIOS / "pbx_call.xml"), sip,
        "-i", PBX_ACL_IP, "-p", str(free_port(host=PBX_ACL_IP)),
        "-s", CALLEE, "-key", "caller", CALLER,
        "-r", str(rate), "-m", str(calls), "-l", str(calls), "-d", str(int(hold * 1000)),
        "-recv_timeout", "10000", "-timeout", str(int(timeout)), "-timeout_error",
        "-nostdin", "-trace_stat", "-stf", "stat.csv", "-fd", "1", "-trace_err",
    ]  # fmt: skip
    return procs.start("sipp UAC", args, workdir / "sipp.out", workdir)


def print_sample(label: str, s: Sample) -> None:
    redis = f" {s.redis:>14.1f}" if s.redis is not None else ""
    print(f"  {label:>12} {s.calls:>10} {s.sessions:>14} {s.edge:>12.1f} {s.relay:>13.1f}{redis}", flush=True)


def hold_round(procs: Processes, servers: Servers, workdir: Path, steps: list[int], rate: int,
               settle: float) -> Round:  # fmt: skip
    """Hold `steps` calls in turn (RSS read at 0 and at each), then let every call hang up."""
    result = Round()
    header = f"  {'':>12} {'live calls':>10} {'relay sessions':>14} {'edge RSS MiB':>12}"
    header += f" {'relay RSS MiB':>13}"
    print(header + (f" {'redis RSS MiB':>14}" if servers.redis is not None else ""), flush=True)
    result.samples.append(servers.sample())
    print_sample("start", result.samples[0])
    started = time.monotonic()
    increments = [b - a for a, b in zip([0, *steps], steps, strict=False)]
    # Every call of the round hangs up in the order it was placed, at `rate`, from this time on.
    hang_up_at = started + sum(n / rate + STEP_SLACK + settle for n in increments) + 5.0
    uacs: list[tuple[subprocess.Popen[bytes], Path]] = []
    placed = 0
    for step, calls in zip(steps, increments, strict=False):
        hold = hang_up_at + placed / rate - time.monotonic()
        where = workdir / f"{step}"
        timeout = hold + 2 * calls / rate + 60
        uacs.append((start_holding(procs, where, servers.sip, calls, rate, hold, timeout), where))
        placed += calls

        def there(target: int = step) -> bool:
            return servers.live() == (target, target) or bool(servers.exited())

        if not until(there, hang_up_at - settle - 1):
            result.problems.append(f"step {step}: {servers.live()} (live calls, sessions) at the deadline")
        if why := servers.exited():
            result.problems.append(why)
            return result
        time.sleep(settle)
        sample = servers.sample()
        result.samples.append(sample)
        print_sample(f"{step} held", sample)
        if time.monotonic() > hang_up_at:
            result.problems.append(f"step {step} was read after the hang-up time: raise STEP_SLACK")
    print(f"  hanging up: BYEs from {hang_up_at - time.monotonic():.0f} s on, at {rate}/s", flush=True)
    for proc, where in uacs:
        try:
            proc.wait(timeout=max(1.0, hang_up_at + placed / rate + 60 - time.monotonic()))
        except subprocess.TimeoutExpired:
            result.problems.append(f"{where.name}: SIPp still running after its calls' BYEs: stopped")
            proc.terminate()
            proc.wait()
        stats = sipp_stats(where / "stat.csv")
        result.ok += int(stats.get("SuccessfulCall(C)", 0))
        result.failed += int(stats.get("FailedCall(C)", 0))
    if not until(lambda: servers.live() == (0, 0), time.monotonic() + 40):
        result.problems.append(f"not released after 40 s: {servers.live()} (live calls, sessions)")
    time.sleep(settle)
    result.after = servers.sample()
    print_sample("hung up", result.after)
    print(f"  SIPp: {result.ok} calls held and hung up, {result.failed} failed", flush=True)
    for problem in result.problems:
        print(f"  !! {problem}", flush=True)
    return result


def report(rounds: list[Round], redis: bool) -> None:
    kinds: list[tuple[str, Callable[[Sample], float | None]]] = [
        ("edge", lambda s: s.edge), ("relay", lambda s: s.relay)
    ]  # fmt: skip
    if redis:
        kinds.append(("redis", lambda s: s.redis))
    print("\n== MiB per 1,000 held calls (least squares over each round's steps; KiB a call)")
    for n, r in enumerate(rounds, 1):
        slopes = [(name, slope(r.samples, rss)) for name, rss in kinds]
        print(f"  round {n}: " + ", ".join(f"{name} {v:.1f} ({v * 1024 / 1000:.1f})" for name, v in slopes))
    print("\n== Bounded? RSS at the round's start, at its peak, once hung up (MiB)")
    for name, rss in kinds:
        figures = []
        for n, r in enumerate(rounds, 1):
            start, peak, after = rss(r.samples[0]), rss(r.peak), rss(r.after) if r.after else None
            if start is None or peak is None:
                continue
            kept = f"{after:.1f} ({after - start:+.1f})" if after is not None else "?"
            figures.append(f"round {n}: {start:.1f} -> {peak:.1f} -> {kept}")
        print(f"  {name:5} " + "; ".join(figures))
        first, last = rss(rounds[0].peak), rss(rounds[-1].peak)
        base = rss(rounds[0].samples[0])
        if len(rounds) > 1 and first is not None and last is not None and base is not None:
            # Memory kept per ended call would add round 1's rise again at every round.
            print(f"        round {len(rounds)}'s peak is {last - first:+.1f} MiB over round 1's "
                  f"(round 1 rose {first - base:.1f})")  # fmt: skip


def _sizes(text: str) -> list[int]:
    sizes = sorted({int(n) for n in text.split(",") if n.strip()})
    if not sizes or sizes[0] <= 0:
        raise argparse.ArgumentTypeError("held-call counts must be positive")
    return sizes


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=_sizes, default=STEPS, metavar="N1,N2,...",
                        help="held calls at each step (default %(default)s; the relay's ports "
                        "20000-39999 hold 5,000 calls)")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=2, help="rounds on the same processes (default 2)")
    parser.add_argument("--rate", type=int, default=RATE, help="calls/s placed, then hung up (default 100)")
    parser.add_argument("--settle", type=float, default=SETTLE, help="seconds before each RSS reading")
    parser.add_argument("--redis", action="store_true", help="the edge with a redis-server store")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, SIPp traces)")
    args = parser.parse_args()
    for binary in ("sipp", TRUNKLINE):
        if not shutil.which(binary):
            print(f"missing: {binary}")
            return 2

    def on_signal(signum: int, frame: FrameType | None) -> None:  # unwind through the finally below
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    workdir = Path(tempfile.mkdtemp(prefix="held-calls-"))
    procs = Processes()
    began = time.monotonic()
    try:
        uas_port = free_port()
        uas = ["sipp", "-sf", str(SCENARIOS / "carrier_uas.xml"), "-i", HOST, "-p", str(uas_port), "-nostdin"]
        procs.start("sipp carrier UAS", uas, workdir / "uas.log", workdir)
        # A held call sends no RTP: without --inactivity-timeout 0 the relay would end it after 60 s.
        # The edge is one caller to the relay: its per-caller bound (4,000) is not what is measured.
        flags = ["--inactivity-timeout", "0", "--max-sessions-per-caller", str(max(args.steps))]
        relay, relay_grpc, relay_http = start_relay(procs, workdir / "relay", flags)
        extra = ["--media-relay", relay_grpc, "--insecure-grpc"]
        redis = None
        if args.redis:
            extra += ["--redis", start_redis(procs, workdir / "redis"), "--workers", "1"]
            redis = procs.procs[-1][1]  # the redis-server start_redis just added
        edge, sip, edge_http = start_edge(procs, workdir / "edge", uas_port, extra)
        servers = Servers(edge, sip, edge_http, relay, relay_http, redis)
        print(f"trunkline edge pid {edge.pid} on {sip} ({'Redis' if redis else 'memory'} store), "
              f"relay pid {relay.pid} ({len(process_tree(relay.pid))} processes); steps {args.steps} "
              f"held calls at {args.rate}/s; work dir {workdir}", flush=True)  # fmt: skip
        # Not counted: a process's first calls import and build what every later call reuses.
        warm = run_sipp_step(workdir / "warm-up", sip, PBX_ACL_IP, "pbx_call.xml", args.rate, 1.0,
                             [edge.pid], ["-s", CALLEE, "-key", "caller", CALLER])  # fmt: skip
        if not until(lambda: servers.live() == (0, 0), time.monotonic() + 20) or warm.ok < warm.attempts:
            print(f"warm-up: {warm.ok}/{warm.attempts} calls, then {servers.live()} live: giving up")
            return 1
        rounds = []
        for n in range(1, args.rounds + 1):
            print(f"\n== Round {n}", flush=True)
            where = workdir / f"round-{n}"
            rounds.append(hold_round(procs, servers, where, args.steps, args.rate, args.settle))
            if servers.exited():
                break
        report(rounds, redis is not None)
        problems = (workdir / "edge" / "edge.log").read_text(errors="replace").count("Traceback")
        problems += (workdir / "relay" / "media.log").read_text(errors="replace").count("Traceback")
        if problems:
            print(f"\n  {problems} Python traceback(s) in the edge's and relay's logs ({workdir})")
        print(f"\n{time.monotonic() - began:.0f} s in all")
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
