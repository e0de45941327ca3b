"""Exactly one CDR per call in PostgreSQL (edges -> Redis stream -> `trunkline cdr`), whatever fails:
an edge SIGKILLed while its calls end (anywhere, and right before or right after its CDR write),
Redis stalled longer than the owners' TTL, an edge stopped longer than its TTL and then resumed
(docs/failover.md "One holder per call"). And what the rows say of the carrier side of a call."""

from __future__ import annotations

import re
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import sipp
from tests.support.cdr_cluster import Cluster, Exporter, cdr_call_ids, cdr_rows, clear_cdrs
from tests.support.ports import free_port
from tests.support.postgres import PostgresProcess, start_postgres
from tests.support.redis_server import RedisProcess
from tests.support.wait import wait_for

STALL = 10.0  # seconds: longer than the owners' TTL (6 s)


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresProcess]:
    proc = start_postgres()
    yield proc
    proc.cleanup()


@pytest.fixture
def cluster(
    tmp_path: Path, redis: RedisProcess, carrier_port: int, postgres: PostgresProcess
) -> Iterator[Cluster]:
    clear_cdrs(postgres.dsn)
    edges = Cluster(tmp_path, redis, carrier_port, service=f"127.0.0.10:{free_port()}")
    exporter = Exporter(tmp_path / "exporter", redis.url, postgres.dsn).start()
    yield edges
    edges.stop()
    exporter.stop()


def one_each(dsn: str, calls: int, timeout: float = 40.0, logs: Callable[[], str] = str) -> Counter[str]:
    """The CDR rows per Call-ID once `calls` calls have theirs (failing with `logs()` after `timeout`)."""
    deadline = time.monotonic() + timeout
    while len(rows := Counter(cdr_call_ids(dsn))) < calls:
        if time.monotonic() > deadline:
            pytest.fail(f"{len(rows)} of {calls} calls have a CDR after {timeout:.0f} s: {rows}\n{logs()}")
        time.sleep(0.2)
    time.sleep(1.0)  # a duplicate would come with the same batch or the next one
    return Counter(cdr_call_ids(dsn))


def test_an_edge_killed_as_its_calls_end_leaves_one_cdr_per_call(
    cluster: Cluster, tmp_path: Path, carrier_port: int, postgres: PostgresProcess
) -> None:
    calls = 6
    gateway = sipp.uas(tmp_path / "gw", "127.0.0.1", carrier_port)
    try:
        a = cluster.start("a")
        assert cluster.service is not None
        pbx = sipp.Background(lambda: sipp.uac(tmp_path / "pbx", cluster.service or "", "127.0.0.2",
                                               "+442071234567", calls=calls, hold_ms=4000))  # fmt: skip
        a.wait_busy(calls, timeout=30)
        cluster.start("b")
        deadline = time.monotonic() + 30
        while cluster.stream_length() < 1:  # polled tightly: the kill must land while calls end
            assert time.monotonic() < deadline, "no call ended"
            time.sleep(0.01)
        cluster.signal("a", signal.SIGKILL)  # right after a BYE: its neighbours are mid-end
        pbx.result(timeout=90)  # some BYEs may get 481 (ended just before the kill): CDRs tell
        per_call = one_each(postgres.dsn, calls)
    finally:
        sipp.stop(gateway)
    assert len(per_call) == calls and set(per_call.values()) == {1}, per_call
    wait_for(lambda: cluster.channels_in_use() == 0, timeout=20, what="every channel freed")


def test_a_redis_stall_adopts_nothing_and_ends_nothing(
    tmp_path: Path, redis: RedisProcess, carrier_port: int, postgres: PostgresProcess
) -> None:
    clear_cdrs(postgres.dsn)
    cluster = Cluster(tmp_path, redis, carrier_port)  # each edge on its own address: calls on both
    exporter = Exporter(tmp_path / "exporter", redis.url, postgres.dsn).start()
    gateway = sipp.uas(tmp_path / "gw", "127.0.0.1", carrier_port)
    calls = 2
    try:
        a, b = cluster.start("a"), cluster.start("b")
        runs = [
            sipp.Background(lambda e=edge, n=name: sipp.uac(tmp_path / f"pbx-{n}", e.sip, "127.0.0.2",
                                                            "+442071234567", calls=calls, hold_ms=22000))
            for name, edge in (("a", a), ("b", b))
        ]  # fmt: skip
        a.wait_busy(calls, timeout=30)
        b.wait_busy(calls, timeout=30)
        assert redis.proc is not None
        redis.proc.send_signal(signal.SIGSTOP)
        try:
            time.sleep(STALL)
        finally:
            redis.proc.send_signal(signal.SIGCONT)
        results = [run.result(timeout=90) for run in runs]
        per_call = one_each(postgres.dsn, 2 * calls)
        gateway_out = sipp.stop(gateway, finish_within=5)
    finally:
        cluster.stop()
        exporter.stop()
    logs = a.output() + b.output()
    assert all(r.ok for r in results), "".join(r.output for r in results) + logs
    assert "call adopted" not in logs and "stood down" not in logs, logs
    assert sipp.received(gateway_out, "BYE") == 2 * calls  # the callers' BYEs only: the edges sent none
    assert len(per_call) == 2 * calls and set(per_call.values()) == {1}, per_call


def test_an_edge_stopped_past_its_ttl_stands_down_and_its_calls_go_on_once(
    tmp_path: Path, redis: RedisProcess, carrier_port: int, postgres: PostgresProcess
) -> None:
    clear_cdrs(postgres.dsn)
    cluster = Cluster(tmp_path, redis, carrier_port)
    exporter = Exporter(tmp_path / "exporter", redis.url, postgres.dsn).start()
    gateway = sipp.uas(tmp_path / "gw", "127.0.0.1", carrier_port)
    calls = 3
    try:
        a, b = cluster.start("a"), cluster.start("b")
        pbx = sipp.Background(lambda: sipp.uac(tmp_path / "pbx", a.sip, "127.0.0.2", "+442071234567",
                                               calls=calls, hold_ms=20000))  # fmt: skip
        a.wait_busy(calls, timeout=30)
        # Stopped only once every call is stored as answered: a call stored while ringing is failed
        # (503) by its adopter, not carried on.
        wait_for(lambda: cluster.answered_calls("a") >= calls, timeout=30, what="answered calls stored")
        cluster.signal("a", signal.SIGSTOP)
        try:
            wait_for(lambda: b.output().count("call adopted") >= calls, timeout=30, what="edge b adopts")
        finally:
            cluster.signal("a", signal.SIGCONT)
        result = pbx.result(timeout=90)
        per_call = one_each(postgres.dsn, calls)
        gateway_out = sipp.stop(gateway, finish_within=5)
    finally:
        cluster.stop()
        exporter.stop()
    logs = a.output() + b.output()
    assert result.ok, result.output + logs
    assert b.output().count("call adopted") == calls, logs  # carried by exactly one other edge
    assert a.output().count("stood down") >= calls, logs  # the resumed edge found it lost them
    assert sipp.received(gateway_out, "BYE") == calls  # one BYE per call towards the callee
    assert len(per_call) == calls and set(per_call.values()) == {1}, per_call


def test_the_rows_name_the_carrier_and_the_gateway(
    tmp_path: Path, redis: RedisProcess, carrier_port: int, pbx_port: int, postgres: PostgresProcess
) -> None:
    """Outbound: the Carrier (namespace/name) and the gateway address that answered; inbound: the
    Carrier the INVITE came from (by its source CIDR) and that source."""
    clear_cdrs(postgres.dsn)
    cluster = Cluster(tmp_path, redis, carrier_port, pbx_port=pbx_port)
    exporter = Exporter(tmp_path / "exporter", redis.url, postgres.dsn).start()
    gateway = sipp.uas(tmp_path / "gw", "127.0.0.1", carrier_port)
    pbx = sipp.uas(tmp_path / "pbx-uas", "127.0.0.4", pbx_port)
    try:
        edge = cluster.start("a")
        outbound = sipp.uac(tmp_path / "pbx", edge.sip, "127.0.0.2", "+442071234567")
        inbound = sipp.uac(tmp_path / "carrier", edge.sip, "127.0.0.1", "+14155550100",
                           caller="+442071234567")  # fmt: skip
        one_each(postgres.dsn, 2)
    finally:
        sipp.stop(gateway)
        sipp.stop(pbx)
        cluster.stop()
        exporter.stop()
    assert outbound.ok and inbound.ok, outbound.output + inbound.output + edge.output()
    rows = {r[0]: r[1:] for r in cdr_rows(postgres.dsn, "direction", "carrier", "gateway", "attempts")}
    out_carrier, out_gateway, out_attempts = rows["outbound"]
    assert (out_carrier, out_gateway) == ("default/pstn", f"127.0.0.1:{carrier_port}")
    assert out_attempts == [{"target": f"sip:127.0.0.1:{carrier_port}", "status": 200,
                             "gateway": f"127.0.0.1:{carrier_port}"}]  # fmt: skip
    in_carrier, in_gateway, in_attempts = rows["inbound"]
    assert in_carrier == "default/pstn" and re.fullmatch(r"127\.0\.0\.1:\d+", str(in_gateway)), rows
    assert [a["gateway"] for a in in_attempts] == [f"127.0.0.4:{pbx_port}"]  # the PBX it went to


PAUSED = re.compile(r'msg="test pause at the CDR write" .*call_id=(\S+)')


@pytest.mark.parametrize("where", ["before", "after"])
def test_an_edge_killed_at_its_cdr_write_leaves_one_cdr_per_call(
    where: str, tmp_path: Path, redis: RedisProcess, carrier_port: int, postgres: PostgresProcess
) -> None:
    """Edge a holds every end of a call right before (or right after) its fenced CDR write and is
    SIGKILLed there, with the caller's BYE not yet answered (an edge answers a BYE once the end is
    stored). Before: the call is still in the store; the caller sends its BYE again, edge b (started
    behind the same address once a is dead) takes the call over and ends it: one CDR, b's, with the
    caller's hang-up and not a run to the maximum duration. After: the record is in the stream and the
    call gone from the store: one CDR, a's; the BYE sent again finds no call."""
    clear_cdrs(postgres.dsn)
    cluster = Cluster(tmp_path, redis, carrier_port, service=f"127.0.0.10:{free_port()}",
                      extra=["--max-call-duration", "60"])  # fmt: skip
    exporter = Exporter(tmp_path / "exporter", redis.url, postgres.dsn).start()
    gateway = sipp.uas(tmp_path / "gw", "127.0.0.1", carrier_port)
    calls = 3
    try:
        # b only once a is dead: with both behind the address, the PBX's BYEs might all reach b.
        a = cluster.start("a", "--test-pause-at-cdr", where)
        service = cluster.service or ""
        pbx = sipp.Background(lambda: sipp.uac(tmp_path / "pbx", service, "127.0.0.2", "+442071234567",
                                               calls=calls, hold_ms=4000, timeout=90))  # fmt: skip
        a.wait_busy(calls, timeout=30)
        paused = wait_for(lambda: PAUSED.search((a.workdir / "trunkline.log").read_text(errors="replace")),
                          timeout=60, what="edge a paused at a CDR write")  # fmt: skip
        cluster.signal("a", signal.SIGKILL)  # a's end of that call stops exactly there
        b = cluster.start("b")
        per_call = one_each(postgres.dsn, calls, timeout=90,
                            logs=lambda: a.output() + b.output() + exporter.output())  # fmt: skip
        result = pbx.result(timeout=120)
        rows = cdr_rows(postgres.dsn, "call_id", "hangup_side", "hangup_reason", "billable_seconds")
        wait_for(lambda: cluster.channels_in_use() == 0, timeout=30, what="every channel freed")
    finally:
        sipp.stop(gateway)
        cluster.stop()
        exporter.stop()
    logs = a.output() + b.output()
    assert len(per_call) == calls and set(per_call.values()) == {1}, f"{per_call}\n{logs}"
    ends = {str(r[0]): r[1:] for r in rows}
    side, reason, billable = ends[paused.group(1)]
    # The caller hung up: ended by a BYE (a's, or the one sent again to b), billed to about then.
    assert (side, reason) == ("caller", ""), f"{ends}\n{logs}"
    assert isinstance(billable, int) and billable < 40, f"{ends}\n{logs}"
    if where == "before":  # the BYE sent again was b's to take: the call was not over in the store
        assert "call adopted" in b.output() and result.ok, result.output + logs
