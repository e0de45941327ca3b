#!/usr/bin/env python3
"""CPU per call of this checkout's edge against another build's, steps interleaved (bench/README-edge.md).

    .venv/bin/python -m bench.edge_ab --reference PATH/TO/trunkline [--rate 50] [--rounds 3] [--redis]

On a machine others share, the load moves between two ladders run one after the other. Here both edges
run side by side (one SIPp carrier UAS behind them) and each round runs one SIPp step per scenario
(digest calls, IP ACL calls, REGISTER with digest) on each edge, the order swapped every round. Per
step: CPU ms per call (or REGISTER) of each edge and their ratio; then the median ratio per scenario.
With `--kamailio`, each round also runs the call scenario without credentials through Kamailio (the
stateful proxy of bench/edge_calls.py) and prints each call scenario's ratio to it.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
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
    Server,
    process_tree,
    run_sipp_step,
    start_edge,
    start_kamailio,
    start_redis,
    takes_current_flags,
)
from tests.support.ports import free_port
from tests.support.sipp import SCENARIOS

AUTH = ["-au", USER, "-ap", PASSWORD]
CALL = ["-s", CALLEE, "-key", "caller", CALLER]
# name -> (source address, scenario, SIPp arguments, rate multiplier)
SCENARIO_RUNS = {
    "digest calls": (PBX_AUTH_IP, "pbx_call.xml", [*CALL, *AUTH], 1),
    "IP ACL calls": (PBX_ACL_IP, "pbx_call.xml", CALL, 1),
    "REGISTER digest": (PBX_AUTH_IP, "pbx_register_refresh.xml", ["-key", "aor", USER, *AUTH], 5),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reference", required=True, help="the other build's trunkline executable")
    parser.add_argument("--rate", type=int, default=50, help="calls/s (REGISTER: 5x this)")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--redis", action="store_true", help="both edges on a redis-server store (each its own)"
    )
    parser.add_argument("--kamailio", action="store_true", help="and Kamailio (plain calls) each round")
    parser.add_argument("--only", choices=sorted(SCENARIO_RUNS), action="append", help="this scenario only")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="edge-ab-"))
    procs = Processes()
    ratios: dict[str, list[float]] = {}
    try:
        uas_port = free_port()
        uas = ["sipp", "-sf", str(SCENARIOS / "carrier_uas.xml"), "-i", HOST, "-p", str(uas_port), "-nostdin"]
        procs.start("sipp carrier UAS", uas, workdir / "uas.log", workdir)
        edges: dict[str, Server] = {}
        for label, executable in (("this", None), ("reference", args.reference)):
            extra = ["--redis", start_redis(procs, workdir / f"redis-{label}")] if args.redis else []
            kwargs = {} if executable is None else {
                "executable": executable, "current_flags": takes_current_flags(executable)
            }  # fmt: skip
            proc, sip, _ = start_edge(procs, workdir / label, uas_port, extra, **kwargs)
            edges[label] = Server(proc, sip, process_tree(proc.pid))
        kamailio: Server | None = None
        if args.kamailio:
            kamailio_proc, address = start_kamailio(procs, workdir / "kamailio", uas_port)
            kamailio = Server(kamailio_proc, address, process_tree(kamailio_proc.pid))
        kamailio_ms: list[float] = []
        to_kamailio: dict[str, list[float]] = {}
        print(
            f"{'round':>5} {'scenario':<16} {'this ms':>8} {'ref ms':>8} {'ratio':>6}   (ok this/ref)",
            flush=True,
        )
        for round_ in range(args.rounds):
            order = ["this", "reference"] if round_ % 2 == 0 else ["reference", "this"]
            for name, (source, scenario, extra, times) in SCENARIO_RUNS.items():
                if args.only and name not in args.only:
                    continue
                ms: dict[str, float] = {}
                ok: dict[str, str] = {}
                for label in order:
                    edge = edges[label]
                    where = workdir / f"{label}-{round_}-{scenario}"
                    rate = args.rate * times
                    step = run_sipp_step(where, edge.address, source, scenario, rate, args.seconds, edge.pids,
                                         extra)  # fmt: skip
                    ms[label] = step.per_1000(step.server_cpu)
                    ok[label] = f"{step.ok}/{step.attempts}"
                ratio = ms["this"] / ms["reference"] if ms["reference"] else float("nan")
                ratios.setdefault(name, []).append(ratio)
                print(f"{round_:>5} {name:<16} {ms['this']:>8.2f} {ms['reference']:>8.2f} {ratio:>6.2f}   "
                      f"({ok['this']} / {ok['reference']})", flush=True)  # fmt: skip
                if scenario == "pbx_call.xml":
                    to_kamailio.setdefault(name, []).append(ms["this"])
            if kamailio is not None:
                where = workdir / f"kamailio-{round_}"
                step = run_sipp_step(where, kamailio.address, PBX_AUTH_IP, "pbx_call.xml", args.rate,
                                     args.seconds, kamailio.pids, CALL)  # fmt: skip
                kamailio_ms.append(step.per_1000(step.server_cpu))
                print(f"{round_:>5} {'kamailio calls':<16} {kamailio_ms[-1]:>8.2f}   "
                      f"({step.ok}/{step.attempts})", flush=True)  # fmt: skip
        print()
        for name, values in ratios.items():
            print(f"median ratio this/reference, {name}: {statistics.median(values):.2f} "
                  f"({', '.join(f'{v:.2f}' for v in values)})")  # fmt: skip
        for name, values in to_kamailio.items() if kamailio_ms else ():
            per_round = [v / k for v, k in zip(values, kamailio_ms, strict=False) if k]
            print(f"median ratio this/kamailio, {name}: {statistics.median(per_round):.2f} "
                  f"({', '.join(f'{v:.2f}' for v in per_round)})")  # fmt: skip
    except KeyboardInterrupt:
        return 130
    finally:
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
