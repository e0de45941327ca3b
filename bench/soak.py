#!/usr/bin/env python3
"""Soak: calls at a steady rate through two edges sharing one address, over Redis, a media relay and
the CDR exporter into PostgreSQL, while one edge is SIGKILLed every `--kill-every` seconds and
started again as Kubernetes restarts a container (same `--edge-id`, same `--cdr-spool` folder, a new
process), and Redis is SIGSTOPped for `--stall` seconds every `--stall-every` (0: never, either).

At the end it prints: calls placed by SIPp (how many it saw succeed, how many the edges refused at
admission: 503 while Redis was stalled; those get their CDR once Redis answers, from the spool of a
restarted edge when need be), CDR rows in
PostgreSQL, duplicate rows, calls without a CDR, relay sessions left, channels still counted. The run
passes (exit 0) when rows == calls placed, 0 duplicates, 0 relay sessions, 0 channels.
See bench/README-soak.md.

    .venv/bin/python -m bench.soak --minutes 30 [--rate 5] [--hold 3] [--kill-every 120]
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.support.cdr_cluster import Cluster, Exporter, cdr_call_ids
from tests.support.media_relay import RelayProcess
from tests.support.ports import free_port
from tests.support.postgres import start_postgres
from tests.support.redis_server import start_redis
from tests.support.sipp import SCENARIOS, _sipp

CALLEE = "+442071234567"


def relay_sessions(metrics_port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = re.search(r'trunkline_component_busy\{component="media"\} ([0-9.]+)', text)
    return int(float(found.group(1))) if found else -1


def sipp_placed(stat_lines: str) -> tuple[int, int]:
    """(calls created, successful calls) from SIPp's final statistics screen."""
    created = re.findall(r"Total Calls? created\s*\|[^|]*\|\s*(\d+)", stat_lines)
    ok = re.findall(r"Successful call\s*\|[^|]*\|\s*(\d+)", stat_lines)
    return (int(created[-1]) if created else -1, int(ok[-1]) if ok else -1)


def refused(workdir: Path) -> int:
    """Calls the edges turned away at admission (503 while Redis stalled: no channel can be counted),
    from SIPp's error trace; each still gets a CDR of the refusal once Redis answers."""
    text = "".join(p.read_text(errors="replace") for p in workdir.glob("*_errors.log"))
    return len(re.findall(r"while expecting '\d+' \(index \d+\), received 'SIP/2.0 503", text))


@dataclass(frozen=True)
class Figures:
    """What a soak run shows; `ok` when PostgreSQL holds exactly one CDR per call placed and nothing
    is left behind (relay sessions, channels)."""

    minutes: float
    rate: float
    hold: float
    kills: int
    stalls: int
    placed: int  # calls SIPp created
    succeeded: int  # calls SIPp saw succeed
    refused: int  # answered 503 at admission while Redis stalled (each still gets a CDR)
    rows: int  # CDR rows in PostgreSQL
    distinct: int  # distinct Call-IDs among them
    sessions: int  # relay sessions left
    channels: int  # channels still counted in the store

    @property
    def duplicates(self) -> int:
        return self.rows - self.distinct

    @property
    def without_cdr(self) -> int:
        return max(0, self.placed - self.distinct)

    @property
    def ok(self) -> bool:
        return (
            self.placed > 0
            and self.rows == self.placed
            and self.duplicates == 0
            and self.sessions == 0
            and self.channels == 0
        )

    def report(self) -> str:
        return (
            f"minutes: {self.minutes}  rate: {self.rate}/s  hold: {self.hold} s  edge kills: {self.kills}  "
            f"Redis stalls: {self.stalls}\n"
            f"calls placed (SIPp): {self.placed}  succeeded (SIPp): {self.succeeded}  "
            f"refused at admission (503): {self.refused}\n"
            f"CDR rows: {self.rows}  distinct calls: {self.distinct}  duplicates: {self.duplicates}  "
            f"calls without a CDR: {self.without_cdr}\n"
            f"relay sessions left: {self.sessions}  channels counted: {self.channels}\n"
            + ("PASS" if self.ok else "FAIL")
        )


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=30.0, help="how long calls are placed")
    parser.add_argument("--rate", type=float, default=5.0, help="new calls per second")
    parser.add_argument("--hold", type=float, default=3.0, help="seconds each call lasts")
    parser.add_argument("--kill-every", type=float, default=120.0, metavar="SECONDS", help="0: no kills")
    parser.add_argument("--stall-every", type=float, default=300.0, metavar="SECONDS", help="0: no stalls")
    parser.add_argument("--stall", type=float, default=10.0, metavar="SECONDS", help="Redis SIGSTOP length")
    parser.add_argument("--max-call-duration", type=float, default=30.0, metavar="SECONDS",
                        help="the edges' limit (a safety net: a call whose every end was lost with a "
                             "killed edge ends there, on the edge that adopted it, with a CDR)")  # fmt: skip
    parser.add_argument("--settle", type=float, default=120.0, metavar="SECONDS",
                        help="at most this long after the last call for CDRs and releases")  # fmt: skip
    parser.add_argument("--workdir", type=Path, default=None, help="default: a new temporary folder")
    return parser


def run(argv: list[str] | None = None) -> Figures:
    """One soak with the command line's options (`bench.soak.run([...])` from a test: the same run)."""
    args = parser().parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="trunkline-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    redis = start_redis(work / "redis")
    postgres = start_postgres()
    relay_http = free_port()
    relay = RelayProcess(work / "relay", ["--http-listen", f"127.0.0.1:{relay_http}"],
                         ports=(30000, 31999)).start()  # fmt: skip
    exporter = Exporter(work / "exporter", redis.url, postgres.dsn).start()
    carrier_port = free_port()
    cluster = Cluster(work, redis, carrier_port, service=f"127.0.0.10:{free_port()}", spool=True,
                      extra=["--media-relay", relay.target, "--insecure-grpc",  # and no trunk caps:
                             "--default-channels", "0", "--default-calls-per-second", "0",
                             "--max-call-duration", str(args.max_call_duration)])  # fmt: skip
    gateway_cmd = [_sipp(), "-sf", str(SCENARIOS / "gateway_answers_via.xml"), "-i", "127.0.0.1",
                   "-p", str(carrier_port), "-nostdin", "-trace_err", "-trace_stat"]  # fmt: skip
    gateway_dir = work / "gateway"
    gateway_dir.mkdir(exist_ok=True)
    with (gateway_dir / "gateway.log").open("w") as out:
        gateway = subprocess.Popen(gateway_cmd, cwd=gateway_dir, stdout=out, stderr=subprocess.STDOUT)
    total = max(1, int(args.rate * args.minutes * 60))
    cluster.start("a")
    cluster.start("b")
    assert cluster.service is not None
    pbx_log = work / "pbx.log"
    pbx_cmd = [_sipp(), "-sf", str(SCENARIOS / "pbx_call.xml"), cluster.service, "-i", "127.0.0.2", "-p", "0",
               "-s", CALLEE, "-key", "caller", "+14155550100", "-d", str(int(args.hold * 1000)),
               "-r", str(args.rate), "-m", str(total), "-nostdin", "-timeout",
               str(int(args.minutes * 60 + 300)), "-recv_timeout", "60000", "-trace_err"]  # fmt: skip
    with pbx_log.open("w") as out:
        pbx = subprocess.Popen(pbx_cmd, cwd=work, stdout=out, stderr=subprocess.STDOUT)
    began = time.monotonic()
    kills = stalls = 0
    never = float("inf")
    next_kill = began + args.kill_every if args.kill_every > 0 else never
    next_stall = began + args.stall_every if args.stall_every > 0 else never
    print(f"soak: {total} calls at {args.rate}/s, {args.hold} s each, in {work}", flush=True)
    try:
        while pbx.poll() is None:
            now = time.monotonic()
            if now >= next_kill:
                side = "ab"[kills % 2]
                cluster.signal(side, signal.SIGKILL)
                cluster.start(side)  # the container restarted: same pod name and spool, new process
                kills += 1
                next_kill = now + args.kill_every
                print(f"  {now - began:7.1f} s: SIGKILL edge {side}, restarted it", flush=True)
            if now >= next_stall:
                assert redis.proc is not None
                redis.proc.send_signal(signal.SIGSTOP)
                try:
                    time.sleep(args.stall)
                finally:
                    redis.proc.send_signal(signal.SIGCONT)
                stalls += 1
                next_stall = time.monotonic() + args.stall_every
                print(f"  {now - began:7.1f} s: Redis stalled {args.stall} s", flush=True)
            time.sleep(0.2)
        output = pbx_log.read_text(errors="replace")
        created, succeeded = sipp_placed(output)
        turned_away = refused(work)
        deadline = time.monotonic() + args.settle
        rows: list[str] = []
        while time.monotonic() < deadline:
            rows = cdr_call_ids(postgres.dsn)
            if (
                len(set(rows)) >= created
                and relay_sessions(relay_http) == 0
                and cluster.channels_in_use() == 0
            ):
                break
            time.sleep(1.0)
        time.sleep(2.0)
        rows = cdr_call_ids(postgres.dsn)
        return Figures(
            minutes=args.minutes, rate=args.rate, hold=args.hold, kills=kills, stalls=stalls,
            placed=created, succeeded=succeeded, refused=turned_away, rows=len(rows),
            distinct=len(set(rows)), sessions=relay_sessions(relay_http), channels=cluster.channels_in_use(),
        )  # fmt: skip
    finally:
        if pbx.poll() is None:
            pbx.kill()
        gateway.kill()
        cluster.stop()
        exporter.stop()
        relay.stop()
        redis.stop()
        postgres.cleanup()


def main(argv: list[str] | None = None) -> int:
    figures = run(argv)
    print(figures.report())
    return 0 if figures.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
