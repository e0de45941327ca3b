"""The CDR pipeline with real processes: edges' ends -> Redis stream -> `trunkline cdr` -> sinks.

Killing the exporter mid-batch and stopping PostgreSQL mid-write lose nothing and duplicate nothing;
the webhook sink signs every body and rides out failing answers.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from redis import Redis as SyncRedis
from redis import asyncio as aioredis

from tests.conftest import free_port
from tests.support.postgres import PostgresProcess, start_postgres
from tests.support.redis_server import RedisProcess
from tests.support.wait import wait_for
from trunkline.cdr.exporter import Exporter, ExporterSettings
from trunkline.cdr.sinks import MIGRATIONS, SIGNATURE_HEADER, JsonLinesSink, PostgresSink, WebhookSink
from trunkline.core.cdr import Cdr, Direction, HangupSide, billable_seconds
from trunkline.core.state import CallEnd
from trunkline.core.state_redis import RedisStore


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresProcess]:
    proc = start_postgres()
    yield proc
    proc.cleanup()


def make_cdr(n: int) -> Cdr:
    start = time.time() - 120
    return Cdr(
        call_id=f"call-{n}@test", installation="trunkline", namespace="tenant-a", trunk="acme",
        carrier="carrier-1", gateway="gw1", direction=Direction.OUTBOUND, caller="+15550001",
        callee=f"+1555{n:07d}", source_address="127.0.0.1:5070", source_transport="udp",
        invite_at=datetime.fromtimestamp(start, UTC), answer_at=datetime.fromtimestamp(start + 2, UTC),
        end_at=datetime.fromtimestamp(start + 62.5, UTC), duration_seconds=62.5,
        billable_seconds=billable_seconds(start + 2, start + 62.5), final_status=200,
        hangup_side=HangupSide.CALLER, hangup_reason="BYE",
    )  # fmt: skip


async def end_calls(store: RedisStore, first: int, count: int) -> set[str]:
    """`count` calls ended through the store's real end-of-call step; returns their CDR ids."""
    ids = set()
    for n in range(first, first + count):
        cdr = make_cdr(n)
        assert await store.end_call_with_cdr(f"call-{n}", 0, cdr.to_json()) is CallEnd.ENDED
        ids.add(str(cdr.id))
    return ids


def rows(dsn: str) -> list[str]:
    try:
        with psycopg.connect(dsn) as conn:
            return [str(r[0]) for r in conn.execute("SELECT id FROM trunkline_cdr").fetchall()]
    except psycopg.errors.UndefinedTable:
        return []


def metrics(port: int) -> dict[str, float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return {}
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


class ExporterProcess:
    def __init__(self, trunkline_bin: str, redis_url: str, dsn: str, workdir: Path):
        self.http_port = free_port()
        self.cmd = [trunkline_bin, "cdr", "--redis", redis_url, "--postgres", "--batch", "50",
                    "--claim-idle", "1", "--consumer", "exporter-test",
                    "--http-listen", f"127.0.0.1:{self.http_port}"]  # fmt: skip
        self.env = {**os.environ, "TRUNKLINE_CDR_POSTGRES_DSN": dsn}
        self.log = workdir / "exporter.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ExporterProcess:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture
async def store(redis: RedisProcess) -> AsyncIterator[RedisStore]:
    redis_store = RedisStore.from_url(redis.url, timeout=5.0)
    yield redis_store
    await redis_store.close()


def clear(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("DROP TABLE IF EXISTS trunkline_cdr, trunkline_cdr_migrations")


async def test_an_exporter_killed_mid_batch_loses_and_duplicates_nothing(
    store: RedisStore, redis: RedisProcess, postgres: PostgresProcess, trunkline_bin: str, tmp_path: Path
) -> None:
    clear(postgres.dsn)
    ids = await end_calls(store, 0, 1000)
    exporter = ExporterProcess(trunkline_bin, redis.url, postgres.dsn, tmp_path).start()
    pending = SyncRedis.from_url(redis.url)
    try:
        wait_for(lambda: len(rows(postgres.dsn)) >= 300, "the first batches in PostgreSQL", timeout=120)
        # Hold the exporter inside a write: the table locked against INSERTs (reads still work), so the
        # batch in hand is read from the stream, half-way into PostgreSQL and not acknowledged.
        with psycopg.connect(postgres.dsn) as lock:
            lock.execute("LOCK TABLE trunkline_cdr IN SHARE MODE")
            ids |= await end_calls(store, 1000, 1000)
            wait_for(lambda: pending.xpending("trunkline:cdr", "trunkline-cdr")["pending"] > 0,
                     "a batch read and not acknowledged", timeout=60)  # fmt: skip
            before = len(rows(postgres.dsn))
            exporter.kill()
            lock.rollback()
        assert before < 2000
        exporter.cmd[exporter.cmd.index("exporter-test")] = "exporter-test-2"  # a new pod's new name
        exporter.start()  # claims the dead one's unacknowledged batch once it idled --claim-idle
        wait_for(lambda: len(rows(postgres.dsn)) >= 2000, "all 2000 CDRs after the restart", timeout=180)
        wait_for(lambda: metrics(exporter.http_port).get("cdr_stream_pending") == 0.0,
                 "every stream entry acknowledged", timeout=60)  # fmt: skip
        assert ready(exporter.http_port)
    finally:
        exporter.stop()
        pending.close()
    found = rows(postgres.dsn)
    assert len(found) == len(set(found)) == 2000
    assert set(found) == ids
    with psycopg.connect(postgres.dsn) as conn:
        versions = conn.execute("SELECT version FROM trunkline_cdr_migrations").fetchall()
        row = conn.execute(
            "SELECT trunk, namespace, billable_seconds, direction, hangup_side FROM trunkline_cdr LIMIT 1"
        ).fetchone()
    assert versions == [(v,) for v, _ in MIGRATIONS]
    assert row == ("acme", "tenant-a", 61, "outbound", "caller")


async def test_a_sink_outage_mid_write_loses_nothing(
    store: RedisStore, redis: RedisProcess, postgres: PostgresProcess, trunkline_bin: str, tmp_path: Path
) -> None:
    clear(postgres.dsn)
    ids = await end_calls(store, 10_000, 300)
    exporter = ExporterProcess(trunkline_bin, redis.url, postgres.dsn, tmp_path).start()
    try:
        wait_for(lambda: len(rows(postgres.dsn)) == 300, "the first 300 CDRs", timeout=120)
        # Stop the database while the exporter is inside a write: the table locked against INSERTs,
        # new records arrive, the exporter's transaction waits; then PostgreSQL goes down under it.
        lock = psycopg.connect(postgres.dsn)
        lock.execute("LOCK TABLE trunkline_cdr IN SHARE MODE")
        ids |= await end_calls(store, 20_000, 300)  # calls go on ending
        wait_for(lambda: metrics(exporter.http_port).get("cdr_stream_pending", 0) > 0,
                 "a batch read and not acknowledged", timeout=60)  # fmt: skip
        postgres.stop()
        lock.close()
        ids |= await end_calls(store, 30_000, 100)  # and more while the database is down
        wait_for(lambda: metrics(exporter.http_port).get('cdr_sink_errors_total{sink="postgres"}', 0) > 0,
                 "the exporter to notice the outage", timeout=60)  # fmt: skip
        wait_for(lambda: not ready(exporter.http_port), "/readyz to say not ready", timeout=60)
        wait_for(lambda: metrics(exporter.http_port).get("cdr_stream_pending", 0) > 0,
                 "the batch held unacknowledged", timeout=60)  # fmt: skip
        postgres.start()
        wait_for(lambda: len(rows(postgres.dsn)) >= 700, "all 700 CDRs after the outage", timeout=180)
        wait_for(lambda: metrics(exporter.http_port).get("cdr_stream_pending") == 0.0,
                 "every stream entry acknowledged", timeout=60)  # fmt: skip
        wait_for(lambda: ready(exporter.http_port), "ready again", timeout=60)
    finally:
        exporter.stop()
    found = rows(postgres.dsn)
    assert len(found) == 700
    assert set(found) == ids
    assert exporter.proc is not None and exporter.proc.returncode == 0  # SIGTERM: a clean stop


async def test_rows_of_an_older_schema_read_not_emergency_once_migrated(postgres: PostgresProcess) -> None:
    """A database the first schema made, with a row in it: the exporter adds the `emergency` column
    (migration 2), the old row reads false and a new emergency CDR lands true."""
    clear(postgres.dsn)
    old = make_cdr(1)
    with psycopg.connect(postgres.dsn) as conn:
        conn.execute(
            "CREATE TABLE trunkline_cdr_migrations "
            "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute(MIGRATIONS[0][1])
        conn.execute("INSERT INTO trunkline_cdr_migrations (version) VALUES (1)")
        conn.execute(
            "INSERT INTO trunkline_cdr (id, call_id, installation, namespace, trunk, direction, callee, "
            "source_address, source_transport, invite_at, end_at, duration_seconds, billable_seconds, "
            "hangup_side, hangup_reason, attempts) VALUES (%s, 'old', '', '', 'acme', 'outbound', "
            "'+15550000001', '', 'udp', now(), now(), 1, 1, 'caller', '', '[]')",
            (old.id,),
        )
    new = make_cdr(2).model_copy(update={"callee": "911", "emergency": True})
    sink = PostgresSink(postgres.dsn)
    await sink.open()
    try:
        await sink.write([new])
    finally:
        await sink.close()
    with psycopg.connect(postgres.dsn) as conn:
        found = dict(conn.execute("SELECT callee, emergency FROM trunkline_cdr").fetchall())
        versions = conn.execute("SELECT version FROM trunkline_cdr_migrations ORDER BY version").fetchall()
    assert found == {"+15550000001": False, "911": True}
    assert versions == [(v,) for v, _ in MIGRATIONS]


async def test_the_webhook_gets_signed_batches_through_failures(redis: RedisProcess, tmp_path: Path) -> None:
    secret = b"s3cret-for-tests"
    received: dict[str, int] = {}
    bad_signatures = 0
    answers = iter([500, 503, 502])  # the first three posts fail, then all succeed

    async def hook(request: web.Request) -> web.Response:
        nonlocal bad_signatures
        body = await request.read()
        expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(request.headers.get(SIGNATURE_HEADER, ""), expected):
            bad_signatures += 1
            return web.Response(status=401)
        status = next(answers, 200)
        if status == 200:
            for cdr in json.loads(body)["cdrs"]:
                received[cdr["id"]] = received.get(cdr["id"], 0) + 1
        return web.Response(status=status)

    app = web.Application()
    app.router.add_post("/cdr", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    client = aioredis.Redis.from_url(redis.url)
    store = RedisStore(client)
    ids: set[str] = set()
    for n in range(100):
        cdr = make_cdr(n)
        assert await store.end_call_with_cdr(f"w{n}", 0, cdr.to_json()) is CallEnd.ENDED
        ids.add(str(cdr.id))
    await client.xadd(store.cdr_stream, {"cdr": b"not a CDR"})  # hostile entry: set aside, not retried
    registry = CollectorRegistry()
    lines = tmp_path / "cdr.jsonl"
    sinks = [WebhookSink(f"http://127.0.0.1:{port}/cdr", secret, attempts=2, backoff=0.1),
             JsonLinesSink(str(lines), max_bytes=8192, keep=50)]  # fmt: skip
    exporter = Exporter(client, sinks, ExporterSettings(batch=30, block=0.2), registry)
    await exporter.start()
    try:
        deadline = time.monotonic() + 60
        while set(received) != ids and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert set(received) == ids
        while registry.get_sample_value("cdr_invalid_total") != 1.0 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert registry.get_sample_value("cdr_invalid_total") == 1.0
        assert registry.get_sample_value("cdr_sink_errors_total", {"sink": "webhook"}) >= 1.0
        assert registry.get_sample_value("cdr_exported_total", {"sink": "jsonl"}) == 100.0
    finally:
        await exporter.stop()
        await runner.cleanup()
    assert bad_signatures == 0
    assert await client.xlen(f"{store.cdr_stream}:invalid") == 1
    assert (await client.xpending(store.cdr_stream, "trunkline-cdr"))["pending"] == 0
    await client.aclose()
    # The JSON lines sink, retried with the webhook's failed batches, wrote each CDR once and rotated.
    files = sorted(tmp_path.glob("cdr.jsonl*"))
    assert len(files) > 2
    written = [json.loads(line)["id"] for f in files for line in f.read_text().splitlines()]
    assert sorted(written) == sorted(ids)
    # A file is rotated after the batch that took it past the limit: over it by less than a batch.
    assert all(f.stat().st_size < 8192 + 30 * 1024 for f in files)
    assert all(f.stat().st_size >= 8192 for f in files if f.name != "cdr.jsonl")
