"""Where CDRs are delivered: JSON lines, PostgreSQL, an HTTP webhook.

A sink's `write(batch)` returns only once the batch is durable on its side (fsync, COMMIT, a 2xx
answer) and raises `SinkError` otherwise; the exporter acknowledges stream entries only after every
sink returned. A batch can therefore arrive twice (an exporter killed between a write and its XACK):
every sink is idempotent by the CDR's id (PostgreSQL: the primary key; the webhook's receiver gets
the id in each record; the JSON lines file skips the ids it wrote in this process).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import sys
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp

from trunkline.core.cdr import Cdr
from trunkline.core.net import ConfigError

SIGNATURE_HEADER = "X-Trunkline-Signature"


class SinkError(Exception):
    """The sink did not confirm the batch: the exporter retries it later, unacknowledged."""


class Sink(Protocol):
    name: str

    async def open(self) -> None: ...

    async def write(self, batch: Sequence[Cdr]) -> None: ...

    def ready(self) -> bool: ...

    async def close(self) -> None: ...


# ---------------------------------------------------------------------------------------------- JSON lines
class JsonLinesSink:
    """One JSON object per line, on standard output (`-`) or appended to a file that is fsynced after
    every batch and rotated by size (`path` -> `path.1` -> ... -> `path.<keep>`, the oldest dropped)."""

    name = "jsonl"

    def __init__(
        self, target: str, max_bytes: int = 100 * 1024 * 1024, keep: int = 5, remember: int = 100_000
    ):
        if max_bytes < 1024:
            raise ConfigError(f"--jsonl-max-bytes {max_bytes}: at least 1024")
        self.path = None if target == "-" else Path(target)
        self.max_bytes = max_bytes
        self.keep = max(0, keep)
        self._recent: OrderedDict[str, None] = OrderedDict()  # ids written by this process, bounded
        self._remember = remember
        self._file: Any = None

    async def open(self) -> None:
        if self.path is not None:
            await asyncio.to_thread(self._open_file)

    def _open_file(self) -> None:
        assert self.path is not None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("ab")
        except OSError as exc:
            raise ConfigError(f"CDR file {self.path}: {exc.strerror or exc}") from exc

    def ready(self) -> bool:
        return self.path is None or self._file is not None

    async def write(self, batch: Sequence[Cdr]) -> None:
        fresh = [cdr for cdr in batch if str(cdr.id) not in self._recent]
        if not fresh:
            return
        data = b"".join(cdr.to_json().encode() + b"\n" for cdr in fresh)
        try:
            await asyncio.to_thread(self._append, data)
        except OSError as exc:
            raise SinkError(f"jsonl: {exc}") from exc
        for cdr in fresh:
            self._recent[str(cdr.id)] = None
        while len(self._recent) > self._remember:
            self._recent.popitem(last=False)

    def _append(self, data: bytes) -> None:
        if self.path is None:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
            return
        if self._file is None:
            self._file = self.path.open("ab")
        self._file.write(data)
        self._file.flush()
        os.fsync(self._file.fileno())
        if self._file.tell() >= self.max_bytes:
            self._rotate()

    def _rotate(self) -> None:
        assert self.path is not None
        self._file.close()
        self._file = None
        if self.keep == 0:
            self.path.unlink(missing_ok=True)
        else:
            for n in range(self.keep - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{n}")
                if older.exists():
                    older.replace(self.path.with_name(f"{self.path.name}.{n + 1}"))
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        self._file = self.path.open("ab")
        directory = os.open(self.path.parent, os.O_RDONLY)  # make the renames durable too
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    async def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


# ---------------------------------------------------------------------------------------------- PostgreSQL
TABLE = "trunkline_cdr"
MIGRATIONS_TABLE = "trunkline_cdr_migrations"
# (version, SQL): applied in order, each once, recorded in MIGRATIONS_TABLE. Never edit a released one.
MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        f"""
CREATE TABLE {TABLE} (
    id uuid PRIMARY KEY,
    call_id text NOT NULL,
    installation text NOT NULL,
    namespace text NOT NULL,
    trunk text NOT NULL,
    carrier text,
    gateway text,
    direction text NOT NULL,
    caller text,
    callee text NOT NULL,
    source_address text NOT NULL,
    source_transport text NOT NULL,
    invite_at timestamptz NOT NULL,
    ring_at timestamptz,
    answer_at timestamptz,
    end_at timestamptz NOT NULL,
    duration_seconds double precision NOT NULL,
    billable_seconds integer NOT NULL,
    final_status smallint,
    q850_cause smallint,
    hangup_side text NOT NULL,
    hangup_reason text NOT NULL,
    attempts jsonb NOT NULL,
    codec text,
    relay text,
    media jsonb,
    trace_id text,
    exported_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX {TABLE}_trunk_end_at ON {TABLE} (namespace, trunk, end_at);
CREATE INDEX {TABLE}_end_at ON {TABLE} (end_at);
""",
    ),
    # Rows written before it read false: no emergency call was flagged then.
    (2, f"ALTER TABLE {TABLE} ADD COLUMN emergency boolean NOT NULL DEFAULT false;"),
]
_COLUMNS = [
    "id", "call_id", "installation", "namespace", "trunk", "carrier", "gateway", "direction", "caller",
    "callee", "source_address", "source_transport", "invite_at", "ring_at", "answer_at", "end_at",
    "duration_seconds", "billable_seconds", "final_status", "q850_cause", "hangup_side", "hangup_reason",
    "attempts", "codec", "relay", "media", "trace_id", "emergency",
]  # fmt: skip
_INSERT = (
    f"INSERT INTO {TABLE} ({', '.join(_COLUMNS)}) VALUES ({', '.join(['%s'] * len(_COLUMNS))}) "
    "ON CONFLICT (id) DO NOTHING"
)


def _row(cdr: Cdr) -> tuple[Any, ...]:
    values = cdr.model_dump()
    values["direction"] = cdr.direction.value
    values["hangup_side"] = cdr.hangup_side.value
    values["attempts"] = json.dumps([a.model_dump() for a in cdr.attempts])
    values["media"] = cdr.media.model_dump_json() if cdr.media else None
    return tuple(values[c] for c in _COLUMNS)


def check_dsn(dsn: str) -> None:
    """A clear error for a DSN psycopg cannot parse (the message never repeats the DSN: a password)."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(dsn)
    except ProgrammingError as exc:
        raise ConfigError(f"the PostgreSQL DSN is not valid: {str(exc).split(':')[0]}") from None


class PostgresSink:
    """Rows in `trunkline_cdr` (schema: MIGRATIONS, docs/cdr.md), one transaction per batch,
    `INSERT ... ON CONFLICT (id) DO NOTHING` so a redelivered CDR is never a second row."""

    name = "postgres"

    def __init__(self, dsn: str, connect_timeout: float = 5.0):
        check_dsn(dsn)
        self.dsn = dsn
        self.connect_timeout = connect_timeout
        self._conn: Any = None

    async def open(self) -> None:
        try:
            await self._connect()
        except SinkError:
            pass  # the first write tries again; /readyz says not ready meanwhile

    async def _connect(self) -> Any:
        import psycopg

        if self._conn is not None and not self._conn.closed:
            return self._conn
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.dsn, connect_timeout=max(1, int(self.connect_timeout))
            )
            await self._migrate(conn)
        except (psycopg.Error, OSError) as exc:
            raise SinkError(f"postgres: {exc.__class__.__name__}: {str(exc).strip()[:300]}") from exc
        self._conn = conn
        return conn

    @staticmethod
    async def _migrate(conn: Any) -> None:
        async with conn.transaction():
            # Several exporters may start at once: one migrates, the others wait and find it done.
            await conn.execute("SELECT pg_advisory_xact_lock(7238215110)")
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} "
                "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cur = await conn.execute(f"SELECT version FROM {MIGRATIONS_TABLE}")
            done = {row[0] for row in await cur.fetchall()}
            for version, sql in MIGRATIONS:
                if version not in done:
                    await conn.execute(sql)
                    await conn.execute(f"INSERT INTO {MIGRATIONS_TABLE} (version) VALUES (%s)", (version,))

    def ready(self) -> bool:
        return self._conn is not None and not self._conn.closed

    async def write(self, batch: Sequence[Cdr]) -> None:
        import psycopg

        conn = await self._connect()
        try:
            async with conn.transaction(), conn.cursor() as cur:
                await cur.executemany(_INSERT, [_row(cdr) for cdr in batch])
        except (psycopg.Error, OSError) as exc:
            await self.close()  # reconnect on the next write
            raise SinkError(f"postgres: {exc.__class__.__name__}: {str(exc).strip()[:300]}") from exc

    async def close(self) -> None:
        if self._conn is not None:
            try:
                await self._conn.close()
            except Exception:
                pass
            self._conn = None


# ---------------------------------------------------------------------------------------------- webhook
def sign(secret: bytes, body: bytes) -> str:
    """The signature header's value: `sha256=` and the hex HMAC-SHA256 of the exact body bytes."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--webhook-url {url!r}: needs http:// or https:// and a host")


class WebhookSink:
    """POSTs each batch as `{"cdrs": [...]}` with the body's HMAC-SHA256 in X-Trunkline-Signature; a
    2xx answer confirms it. Other answers and transport errors are retried `attempts` times with
    exponential back-off before the batch counts as failed (and the exporter retries it later)."""

    name = "webhook"

    def __init__(
        self, url: str, secret: bytes, attempts: int = 4, timeout: float = 10.0, backoff: float = 0.5
    ):
        check_url(url)
        if not secret:
            raise ConfigError(
                "the webhook secret is empty (--webhook-secret-file or TRUNKLINE_CDR_WEBHOOK_SECRET)"
            )
        self.url = url
        self.secret = secret
        self.attempts = max(1, attempts)
        self.timeout = timeout
        self.backoff = backoff
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))

    def ready(self) -> bool:
        return self._session is not None

    async def write(self, batch: Sequence[Cdr]) -> None:
        if self._session is None:
            await self.open()
        assert self._session is not None
        body = b'{"cdrs":[' + b",".join(cdr.to_json().encode() for cdr in batch) + b"]}"
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(self.secret, body)}
        problem = ""
        for attempt in range(self.attempts):
            if attempt:
                await asyncio.sleep(min(10.0, self.backoff * 2 ** (attempt - 1)))
            try:
                async with self._session.post(self.url, data=body, headers=headers) as response:
                    await response.read()
                    if 200 <= response.status < 300:
                        return
                    problem = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                problem = f"{exc.__class__.__name__}: {exc}"
        raise SinkError(f"webhook: {problem} after {self.attempts} attempts")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
