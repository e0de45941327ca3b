"""Tracing's cost per call in instructions, not CPU seconds: what `--tracing-rounds` cannot resolve.

CPU time per call on a shared 2-core machine swings by several percent between two identical edges in
the same run, so a 3% target (sampling at 0.01) is below what bench/edge_calls.py can show. Here each
tracing mode's edge runs under `valgrind --tool=callgrind`, which counts the instructions the process
executes whatever else runs on the machine; the counters are zeroed once the edge is ready and warmed
up, then one SIPp run of the same calls goes through it, and the dump gives instructions per call.

    .venv/bin/python -m bench.tracing_instructions [--calls 200] [--rate 2]

Prints instructions per call for each mode and the ratio to tracing off. Calls must all succeed
without retransmissions (a retransmitted request is work of its own): the SIPp agents are run with
retransmissions off (`-nr`), and the run says when calls failed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.edge_calls import CALLEE, CALLER, HOST, PBX_ACL_IP, TRACING_MODES, Processes, run_sipp_step
from tests.support.jaeger import Jaeger, jaeger_binary
from tests.support.ports import free_port
from tests.support.processes import http_ready
from tests.support.sipp import SCENARIOS
from tests.support.trunkline_up import manifests

READY_TIMEOUT = 600.0  # Python's imports under callgrind: a minute or two on this machine


def start_counted_edge(
    procs: Processes, workdir: Path, uas_port: int, ratio: str | None, protocol: str | None, jaeger: Jaeger,
    full_batches: bool = False,
) -> tuple[subprocess.Popen[bytes], str]:  # fmt: skip
    """One edge under callgrind, ready, and its SIP address (dumps go to `workdir/callgrind.out.N`)."""
    workdir.mkdir(parents=True)
    (workdir / "manifests.yaml").write_text(manifests(uas_port, free_port()))
    sip, http = f"{HOST}:{free_port()}", f"{HOST}:{free_port()}"
    out = workdir / "callgrind.out"
    env = dict(os.environ)
    args = [sys.executable, "-m", "trunkline", "edge", "-f", "manifests.yaml", "--sip-listen", sip,
            "--http-listen", http, "--grace", "1", "--flood-rate", "1000000", "--flood-bytes", "1000000000",
            "--default-channels", "0", "--default-calls-per-second", "0"]  # fmt: skip
    if ratio:
        endpoint = jaeger.otlp_http if protocol == "http/protobuf" else jaeger.otlp_grpc
        args += ["--otlp-endpoint", endpoint]
        env.update(OTEL_TRACES_SAMPLER="traceidratio", OTEL_TRACES_SAMPLER_ARG=ratio)
        env["OTEL_EXPORTER_OTLP_PROTOCOL"] = protocol or "grpc"
        if full_batches:  # exports only when a batch is full (512 spans), as at production rates
            env["OTEL_BSP_SCHEDULE_DELAY"] = "600000"
    valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-line=no"]
    with (workdir / "edge.log").open("wb") as log:
        proc = subprocess.Popen(
            [*valgrind, *args], cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env=env
        )
    procs.procs.append(("edge under callgrind", proc, []))
    deadline = time.monotonic() + READY_TIMEOUT
    while not http_ready(f"http://{http}/readyz"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"edge under callgrind not ready: see {workdir / 'edge.log'}")
        time.sleep(1.0)
    return proc, sip


def instructions(out: Path) -> int:
    """The Ir total of a callgrind dump."""
    match = re.search(r"^(?:summary|totals): (\d+)", out.read_text(errors="replace"), re.M)
    if match is None:
        raise RuntimeError(f"no instruction total in {out}")
    return int(match[1])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=200, help="calls counted per mode")
    parser.add_argument(
        "--rate", type=int, default=2, help="calls/s (an edge under callgrind is ~50x slower)"
    )
    parser.add_argument(
        "--full-batches", action="store_true",
        help="batches exported only once full (OTEL_BSP_SCHEDULE_DELAY 10 min), as at 100 calls/s and "
        "more, not every 5 s as the default delay does at this run's slow rate; counted until the edge "
        "has exited (its last batch flushed at shutdown)",
    )  # fmt: skip
    parser.add_argument("--modes", help="comma-separated labels of the modes to run (default: all)")
    args = parser.parse_args()
    modes = [m for m in TRACING_MODES if not args.modes or m[0] in args.modes.split(",")]
    for binary in ("sipp", "valgrind", "callgrind_control"):
        if not shutil.which(binary):
            print(f"missing: {binary}")
            return 2
    binary = jaeger_binary()
    if binary is None:
        print("no jaeger binary (scripts/jaeger.sh)")
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="tracing-instructions-"))
    procs = Processes()
    # No retransmissions from SIPp: an edge under callgrind answers slowly, more so on a loaded
    # machine, and a retransmitted request is work of its own; on loopback nothing is lost.
    call = ["-s", CALLEE, "-key", "caller", CALLER, "-nr"]
    print(f"{args.calls} calls per mode at {args.rate}/s; work dir {workdir}")
    results: dict[str, float] = {}
    try:
        jaeger = Jaeger(workdir / "jaeger", binary).start()
        assert jaeger.proc is not None
        procs.procs.append(("jaeger", jaeger.proc, []))
        uas_port = free_port()
        uas = ["sipp", "-sf", str(SCENARIOS / "carrier_uas.xml"), "-i", HOST, "-p", str(uas_port), "-nostdin",
               "-nr"]  # fmt: skip
        procs.start("sipp carrier UAS", uas, workdir / "uas.log", workdir)
        for label, ratio, protocol in modes:
            where = workdir / label.replace(" ", "-").replace("/", "-")
            proc, sip = start_counted_edge(procs, where, uas_port, ratio, protocol, jaeger, args.full_batches)
            # Warm-up (first calls import and cache more), then counters zeroed, then the counted calls.
            run_sipp_step(where / "warm-up", sip, PBX_ACL_IP, "pbx_call.xml", args.rate, 10, [proc.pid], call)
            subprocess.run(["callgrind_control", "--zero", str(proc.pid)], check=True, capture_output=True)
            step = run_sipp_step(where / "counted", sip, PBX_ACL_IP, "pbx_call.xml", args.rate,
                                 args.calls / args.rate, [proc.pid], call)  # fmt: skip
            time.sleep(2.0)  # the last BYE's CDR and log line, the export of the last batch
            if args.full_batches:  # to the end: the spans still queued are flushed as the edge stops
                proc.terminate()
                proc.wait(timeout=300)
                dumps = [where / "callgrind.out"]
            else:
                subprocess.run(
                    ["callgrind_control", "--dump", str(proc.pid)], check=True, capture_output=True
                )
                dumps = sorted(where.glob("callgrind.out.*"), key=lambda p: p.stat().st_mtime)
            if not dumps or not dumps[-1].exists():
                raise RuntimeError(f"no callgrind dump in {where}")
            per_call = instructions(dumps[-1]) / step.ok
            clean = step.ok == step.attempts and step.retransmissions == 0
            results[label] = per_call
            note = (
                ""
                if clean
                else f"  (not clean: {step.ok}/{step.attempts} ok, {step.retransmissions} retrans)"
            )
            print(f"  {label:26} {per_call / 1e6:8.3f} M instructions per call{note}", flush=True)
            proc.terminate()
            proc.wait(timeout=120)
        base = results.get("off")
        if base:
            print("\n== Instructions per call, ratio to tracing off")
            for label, value in results.items():
                print(f"  {label:26} {value / 1e6:8.3f} M  {value / base:.3f}")
    finally:
        procs.stop_all()
        print(f"logs in {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
