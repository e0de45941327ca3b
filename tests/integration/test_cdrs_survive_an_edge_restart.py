"""A container restart, as Kubernetes does it: the edge process SIGKILLed and started again in the same
pod (same `--edge-id`, same `--cdr-spool` folder). The new process is a new owner: it carries its
predecessor's calls (their BYEs, their timers), and it replays the call ends its predecessor spooled
while Redis did not answer, so every call still has exactly one CDR (docs/cdr.md, docs/failover.md)."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.support import sipp
from tests.support.cdr_cluster import Cluster
from tests.support.ports import free_port
from tests.support.redis_server import RedisProcess
from tests.support.wait import wait_for


def stream_cdrs(cluster: Cluster) -> list[dict[str, object]]:
    with cluster.redis_client() as client:
        return [json.loads(fields[b"cdr"]) for _, fields in client.xrange("trunkline:cdr")]


def one_cdr_each(cluster: Cluster, calls: int, logs: str = "") -> dict[str, dict[str, object]]:
    """The CDRs by Call-ID once `calls` calls have one, failing on a call with two."""
    wait_for(lambda: len(stream_cdrs(cluster)) >= calls, timeout=60, what=f"{calls} CDRs\n{logs}")
    time.sleep(2.0)  # a second CDR for a call would come with its first or right after
    cdrs = stream_cdrs(cluster)
    per_call = Counter(str(c["call_id"]) for c in cdrs)
    assert len(per_call) == calls and set(per_call.values()) == {1}, f"{per_call}\n{logs}"
    return {str(c["call_id"]): c for c in cdrs}


@pytest.mark.parametrize("hung_up_by", ["caller", "edge"])
def test_a_restarted_edge_process_carries_its_predecessors_calls(
    hung_up_by: str, tmp_path: Path, redis: RedisProcess, carrier_port: int
) -> None:
    """caller: the PBX hangs up after 30 s, long after the restart; edge: the PBX never hangs up and
    the calls' maximum duration (30 s) is due after the restart. Either way one CDR per call, and the
    process that ends them is the restarted one, which took the calls over as soon as it started."""
    calls = 3
    cluster = Cluster(tmp_path, redis, carrier_port, service=f"127.0.0.10:{free_port()}", spool=True,
                      extra=["--max-call-duration", "30" if hung_up_by == "edge" else "120"])  # fmt: skip
    gateway = sipp.uas(tmp_path / "gw", "127.0.0.1", carrier_port, scenario="gateway_answers_via.xml")
    scenario = "pbx_call.xml" if hung_up_by == "caller" else "pbx_waits_for_bye.xml"
    try:
        a = cluster.start("a")
        service = cluster.service or ""
        pbx = sipp.Background(lambda: sipp.uac(tmp_path / "pbx", service, "127.0.0.2", "+442071234567",
                                               calls=calls, hold_ms=30000, scenario=scenario,
                                               timeout=120))  # fmt: skip
        a.wait_busy(calls, timeout=30)
        wait_for(lambda: cluster.answered_calls("a") >= calls, timeout=30, what="answered calls stored")
        cluster.signal("a", signal.SIGKILL)  # the container dies; the pod (its name, its folder) stays
        a = cluster.start("a")
        # Taken over before any of them is due to end (the PBX's BYEs or the limit, 30 s after answer).
        wait_for(lambda: a.output().count("call adopted") >= calls, timeout=20, what="the restart adopts")
        result = pbx.result(timeout=150)
        cdrs = one_cdr_each(cluster, calls, a.output())
        wait_for(lambda: cluster.channels_in_use() == 0, timeout=30, what="every channel freed")
    finally:
        sipp.stop(gateway)
        cluster.stop()
    assert result.ok, result.output + a.output()
    assert {c["hangup_side"] for c in cdrs.values()} == {hung_up_by}, cdrs
    assert all(isinstance(c["billable_seconds"], int) and c["billable_seconds"] < 60 for c in cdrs.values())


def test_calls_refused_while_redis_stalls_keep_their_cdrs_through_a_restart(
    tmp_path: Path, redis: RedisProcess, carrier_port: int
) -> None:
    """Redis SIGSTOPped: calls refused 503 (their ends spooled before the 503 went out), the edge
    SIGKILLed while Redis is still stopped, started again on the same spool, Redis SIGCONTed: each
    refused call has exactly one CDR, the refusal's, written by the restarted process."""
    calls = 4
    cluster = Cluster(tmp_path, redis, carrier_port, service=f"127.0.0.10:{free_port()}", spool=True)
    a = cluster.start("a")
    spool_file = tmp_path / "edge-a" / "spool" / "pending.jsonl"
    assert redis.proc is not None
    redis.proc.send_signal(signal.SIGSTOP)
    try:
        refused = sipp.uac_expect(tmp_path / "pbx", cluster.service or "", "127.0.0.2", "+442071234567", 503,
                                  calls=calls)  # fmt: skip
        assert refused.ok, refused.output + a.output()
        # Every 503 went out after its end was on disk.
        assert len(spool_file.read_text().splitlines()) == calls, spool_file.read_text()
        cluster.signal("a", signal.SIGKILL)
        a = cluster.start("a")  # the same pod again: the spool is still there
    finally:
        redis.proc.send_signal(signal.SIGCONT)
    try:
        cdrs = one_cdr_each(cluster, calls, a.output())
        wait_for(lambda: cluster.channels_in_use() == 0, timeout=30, what="every channel freed")
        wait_for(lambda: spool_file.stat().st_size == 0, timeout=30, what="the spool emptied")
    finally:
        cluster.stop()
    assert {(c["final_status"], c["hangup_reason"]) for c in cdrs.values()} == {
        (503, "store unavailable at admission")
    }, cdrs
    assert a.output().count("spooled call end replayed") == calls, a.output()
