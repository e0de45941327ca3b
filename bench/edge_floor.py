#!/usr/bin/env python3
"""What a call costs the edge against the least a SIP message costs it (bench/README-edge.md, "The floor").

    .venv/bin/python -m bench.edge_floor [--rounds 4] [--call-rate 200] [--options-rate 1000]

One edge process, one SIPp carrier UAS. Each round runs a step of IP ACL calls (INVITE/180/200/ACK/BYE
through the B2BUA) and a step of OPTIONS keep-alives from the same PBX (one request in, one 200 out,
one server transaction: transport, parser, transaction layer, the stack and its timers, nothing of the
rooms), the order swapped every round. Per step: the edge's CPU per call or per OPTIONS, and the SIP
messages it handled (received + sent, read from its /metrics) per call. Then the medians, and how much
of a call's cost is that many messages at the OPTIONS price: the share a faster B2BUA (the rooms)
could remove at most, and the rest that is the per-message floor of this runtime.

CPU is read from /proc in clock ticks (10 ms): keep steps long enough for hundreds of them (the
defaults: 8 s at 200 calls/s and 1,000 OPTIONS/s).
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import urllib.request
from pathlib import Path

from bench.edge_calls import (
    CALLEE,
    CALLER,
    HOST,
    PBX_ACL_IP,
    SCENARIOS,
    Processes,
    Step,
    process_tree,
    run_sipp_step,
    start_edge,
)
from tests.support.ports import free_port


def sip_messages(http: str) -> float:
    """Requests and responses the edge received and sent so far (its SIP traffic counters)."""
    with urllib.request.urlopen(f"http://{http}/metrics", timeout=5) as response:
        text = response.read().decode()
    series = re.findall(r"^trunkline_sip_(?:requests|responses)_total\{[^}]*\} (\S+)", text, re.M)
    return sum(float(value) for value in series)


def measured(step: Step, messages: float, unit: str) -> tuple[float, float]:
    """(CPU microseconds per unit, messages per unit) of a step, or NaNs when it did not pass."""
    if not step.passed:
        print(f"    {unit} step at {step.offered}/s did not pass: {step.ok}/{step.attempts} ok, "
              f"{step.achieved:.0f}/s, {dict(step.errors)}")  # fmt: skip
        return float("nan"), float("nan")
    return 1e6 * step.server_cpu / step.ok, messages / step.ok


def main(argv: list[str] | None = None) -> int:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--call-rate", type=int, default=200, help="IP ACL calls/s")
    parser.add_argument("--options-rate", type=int, default=1000, help="OPTIONS/s")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each step")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="edge-floor-"))
    procs = Processes()
    calls: list[tuple[float, float]] = []
    options: list[tuple[float, float]] = []
    try:
        uas_port = free_port()
        uas = ["sipp", "-sf", str(SCENARIOS / "carrier_uas.xml"), "-i", HOST, "-p", str(uas_port), "-nostdin"]
        procs.start("sipp carrier UAS", uas, workdir / "uas.log", workdir)
        proc, sip, http = start_edge(procs, workdir / "edge", uas_port)
        pids = process_tree(proc.pid)
        key = ["-s", CALLEE, "-key", "caller", CALLER]
        warm = run_sipp_step(workdir / "warm-up", sip, PBX_ACL_IP, "pbx_call.xml", 50, 2, pids, key)
        print(f"work dir {workdir}; warm-up: {warm.ok}/{warm.attempts} calls")
        for round_ in range(args.rounds):
            order = ["calls", "options"] if round_ % 2 == 0 else ["options", "calls"]
            for kind in order:
                before = sip_messages(http)
                if kind == "calls":
                    step = run_sipp_step(workdir / f"calls-{round_}", sip, PBX_ACL_IP, "pbx_call.xml",
                                         args.call_rate, args.seconds, pids, key)  # fmt: skip
                    calls.append(measured(step, sip_messages(http) - before, "call"))
                else:
                    step = run_sipp_step(workdir / f"options-{round_}", sip, PBX_ACL_IP, "pbx_options.xml",
                                         args.options_rate, args.seconds, pids, key)  # fmt: skip
                    options.append(measured(step, sip_messages(http) - before, "OPTIONS"))
            (call_us, call_msgs), (options_us, options_msgs) = calls[-1], options[-1]
            print(f"  round {round_ + 1}: call {call_us:.0f} us ({call_msgs:.1f} messages), "
                  f"OPTIONS {options_us:.0f} us ({options_msgs:.1f} messages)", flush=True)  # fmt: skip
    finally:
        procs.stop_all()
    good_calls = [c for c in calls if c[0] == c[0]]
    good_options = [o for o in options if o[0] == o[0]]
    if not good_calls or not good_options:
        print("no passed step of each kind: nothing to compare")
        return 1
    call_us = statistics.median(c[0] for c in good_calls)
    call_msgs = statistics.median(c[1] for c in good_calls)
    options_us = statistics.median(o[0] for o in good_options)
    options_msgs = statistics.median(o[1] for o in good_options)
    per_message = options_us / options_msgs
    floor = per_message * call_msgs
    print(f"\nmedians of {len(good_calls)} call and {len(good_options)} OPTIONS steps:")
    print(f"  IP ACL call        {call_us:7.0f} us CPU, {call_msgs:.1f} SIP messages handled")
    print(f"  OPTIONS            {options_us:7.0f} us CPU, {options_msgs:.1f} SIP messages handled")
    print(f"  one message at the OPTIONS price: {per_message:.0f} us")
    print(f"  a call's messages at that price:  {floor:.0f} us = {floor / call_us:.2f} of the call's CPU "
          f"(the floor); the rest, {call_us - floor:.0f} us, is the B2BUA's own work")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
