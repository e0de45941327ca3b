#!/usr/bin/env python3
"""Profile one `trunkline edge` process under a steady SIPp load with py-spy (bench/README-edge.md).

    .venv/bin/pip install py-spy
    .venv/bin/python -m bench.profile_edge [--acl | --register] [--redis] [--media] [--rate 300]
        [--seconds 20]

Starts the SIPp carrier UAS and an edge as `bench/edge_calls.py` does, runs one SIPp step at `--rate`
while `py-spy record --format raw` samples the edge, then prints the top functions by own samples and
by samples with their callees (cumulative), as shares of all samples.

py-spy samples wall-clock time: on a loaded machine a process waiting for a core is sampled where it
was preempted, often right after a `sendto` that woke SIPp. `--cprofile` runs the edge under cProfile
timed by the process's CPU clock instead (slower, but the shares are CPU shares) and prints its top.
"""

from __future__ import annotations

import argparse
import pstats
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

from bench.edge_calls import (
    CALLEE,
    CALLER,
    HOST,
    PASSWORD,
    PBX_ACL_IP,
    PBX_AUTH_IP,
    USER,
    Processes,
    run_sipp_step,
    start_edge,
    start_redis,
    start_relay,
)
from tests.support.ports import free_port
from tests.support.processes import TRUNKLINE
from tests.support.sipp import SCENARIOS

TOP = 15


def top_entries(raw: Path, top: int = TOP) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """(self, cumulative) shares of the samples in py-spy's raw (collapsed stacks) output."""
    own: Counter[str] = Counter()
    cumulative: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1] + ")"
                  if " (" in f else f for f in stack.split(";")]  # fmt: skip
        own[frames[-1]] += count
        for frame in set(frames):
            cumulative[frame] += count
    share = 100.0 / total if total else 0.0
    # The frames under (almost) every sample, the entry point and the event loop's run, say nothing.
    inner = [(f, n) for f, n in cumulative.most_common() if n < 0.9 * total]
    return [(f, n * share) for f, n in own.most_common(top)], [(f, n * share) for f, n in inner[:top]]


def profiled_trunkline(workdir: Path, stats: Path) -> Path:
    """An executable running `trunkline` under cProfile on the process's CPU clock; stats at exit."""
    script = workdir / "trunkline-cprofile"
    script.write_text(
        f"#!{sys.executable}\n"
        "import cProfile, sys, time\n"
        "from trunkline.cli import main\n"
        "profile = cProfile.Profile(time.process_time)\n"
        "profile.enable()\n"
        "try:\n"
        "    code = main()\n"
        "finally:\n"
        "    profile.disable()\n"
        f"    profile.dump_stats({str(stats)!r})\n"
        "sys.exit(code)\n"
    )
    script.chmod(0o755)
    return script


def print_cprofile(stats: Path, out: Path | None) -> None:
    if out is not None:
        shutil.copy(stats, out)
    for key in ("tottime", "cumulative"):
        pstats.Stats(str(stats)).sort_stats(key).print_stats(TOP + 10)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--acl", action="store_true", help="IP ACL calls (no challenge)")
    parser.add_argument("--register", action="store_true", help="REGISTER with digest")
    parser.add_argument("--redis", action="store_true", help="the edge on a redis-server store")
    parser.add_argument("--media", action="store_true", help="the edge with a media relay")
    parser.add_argument("--rate", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path, help="keep py-spy's raw output here")
    parser.add_argument("--cprofile", action="store_true", help="cProfile on CPU time instead of py-spy")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, SIPp traces)")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not args.cprofile and not Path(py_spy).exists():
        print("missing: py-spy (pip install py-spy)")
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="edge-profile-"))
    procs = Processes()
    try:
        uas_port = free_port()
        uas = ["sipp", "-sf", str(SCENARIOS / "carrier_uas.xml"), "-i", HOST, "-p", str(uas_port), "-nostdin"]
        procs.start("sipp carrier UAS", uas, workdir / "uas.log", workdir)
        extra = ["--redis", start_redis(procs, workdir / "redis")] if args.redis else []
        if args.media:
            extra += ["--media-relay", start_relay(procs, workdir / "relay")[1], "--insecure-grpc"]
        stats = workdir / "edge.prof"
        executable = str(profiled_trunkline(workdir, stats)) if args.cprofile else str(TRUNKLINE)
        edge, sip, _ = start_edge(procs, workdir / "edge", uas_port, extra, executable=executable)
        auth = ["-au", USER, "-ap", PASSWORD]
        if args.register:
            scenario, source, sipp_extra = (
                "pbx_register_refresh.xml",
                PBX_AUTH_IP,
                ["-key", "aor", USER, *auth],
            )
        else:
            call = ["-s", CALLEE, "-key", "caller", CALLER]
            scenario, source = "pbx_call.xml", PBX_ACL_IP if args.acl else PBX_AUTH_IP
            sipp_extra = call if args.acl else [*call, *auth]
        raw = args.out or workdir / "profile.txt"
        spy = None if args.cprofile else subprocess.Popen(
            [py_spy, "record", "--pid", str(edge.pid), "--format", "raw", "--output", str(raw),
             "--nonblocking", "--duration", str(int(args.seconds)), "--rate", "250"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        result: list[object] = []
        runner = threading.Thread(
            target=lambda: result.append(
                run_sipp_step(
                    workdir / "step", sip, source, scenario, args.rate, args.seconds, [edge.pid], sipp_extra
                )
            )
        )
        runner.start()
        runner.join()
        step = result[0]
        print(step)
        if spy is None:
            procs.stop_all()  # the edge writes its stats as it exits
            print_cprofile(stats, args.out)
            return 0
        spy.wait(timeout=args.seconds + 60)
        own, cumulative = top_entries(raw)
        print(f"\n{'self %':>7}  function")
        for name, pct in own:
            print(f"{pct:7.1f}  {name}")
        print(f"\n{'cum %':>7}  function")
        for name, pct in cumulative:
            print(f"{pct:7.1f}  {name}")
    finally:
        procs.stop_all()
        if args.keep:
            print(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
