#!/usr/bin/env python3
"""Soak: calls at a steady rate through two edges sharing one address, over Redis, a media relay and
the CDR exporter into PostgreSQL, while one edge is SIGKILLed (and a new one started) every
`--kill-every` seconds and Redis is SIGSTOPped for `--stall` seconds every `--stall-every`.

At the end it prints: calls placed by SIPp (how many it saw succeed, how many the edges refused at
admission: 503 while Redis was stalled; those get their CDR once Redis answers), CDR rows in
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
from collections import Counter
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=30.0, help="how long calls are placed")
    parser.add_argument("--rate", type=float, default=5.0, help="new calls per second")
    parser.add_argument("--hold", type=float, default=3.0, help="seconds each call lasts")
    parser.add_argument("--kill-every", type=float, default=120.0, metavar="SECONDS")
    parser.add_argument("--stall-every", type=float, default=300.0, metavar="SECONDS")
    parser.add_argument("--stall", type=float, default=10.0, metavar="SECONDS", help="Redis SIGSTOP length")
    parser.add_argument("--settle", type=float, default=60.0, metavar="SECONDS",
                        help="at most this long after the last call for CDRs and releases")  # fmt: skip
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="trunkline-soak-"))
    redis = start_redis(work / "redis")
    postgres = start_postgres()
    relay_http = free_port()
    relay = RelayProcess(work / "relay", ["--http-listen", f"127.0.0.1:{relay_http}"],
                         ports=(30000, 31999)).start()  # fmt: skip
    exporter = Exporter(work / "exporter", redis.url, postgres.dsn).start()
    carrier_port = free_port()
    cluster = Cluster(work, redis, carrier_port, service=f"127.0.0.10:{free_port()}",
                      extra=["--media-relay", relay.target, "--insecure-grpc",  # and no trunk caps:
                             "--default-channels", "0", "--default-calls-per-second", "0"])  # fmt: skip
    gateway_cmd = [_sipp(), "-sn", "uas", "-i", "127.0.0.1", "-p", str(carrier_port), "-nostdin"]
    gateway = subprocess.Popen(gateway_cmd, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    total = max(1, int(args.rate * args.minutes * 60))
    generation = {"a": 0, "b": 0}
    live = [cluster.start("a0"), cluster.start("b0")]
    names = ["a0", "b0"]
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
    next_kill, next_stall = began + args.kill_every, began + args.stall_every
    print(f"soak: {total} calls at {args.rate}/s, {args.hold} s each, in {work}", flush=True)
    try:
        while pbx.poll() is None:
            now = time.monotonic()
            if now >= next_kill:
                victim = kills % 2
                side = "ab"[victim]
                cluster.signal(names[victim], signal.SIGKILL)
                generation[side] += 1
                names[victim] = f"{side}{generation[side]}"
                live[victim] = cluster.start(names[victim])  # a new pod under a new name
                kills += 1
                next_kill = now + args.kill_every
                print(f"  {now - began:7.1f} s: SIGKILL edge {side}, started {names[victim]}", flush=True)
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
        duplicates = sum(n - 1 for n in Counter(rows).values())
        sessions, channels = relay_sessions(relay_http), cluster.channels_in_use()
        print(f"minutes: {args.minutes}  rate: {args.rate}/s  hold: {args.hold} s  edge kills: {kills}  "
              f"Redis stalls: {stalls}")  # fmt: skip
        print(f"calls placed (SIPp): {created}  succeeded (SIPp): {succeeded}  "
              f"refused at admission (503): {turned_away}")  # fmt: skip
        print(f"CDR rows: {len(rows)}  distinct calls: {len(set(rows))}  duplicates: {duplicates}  "
              f"calls without a CDR: {max(0, created - len(set(rows)))}")  # fmt: skip
        print(f"relay sessions left: {sessions}  channels counted: {channels}")
        ok = len(rows) == created and duplicates == 0 and sessions == 0 and channels == 0
        print("PASS" if ok else "FAIL")
        return 0 if ok else 1
    finally:
        if pbx.poll() is None:
            pbx.kill()
        gateway.kill()
        cluster.stop()
        exporter.stop()
        relay.stop()
        redis.stop()
        postgres.cleanup()


if __name__ == "__main__":
    raise SystemExit(main())
