"""Two `trunkline edge` processes over one Redis, with the `trunkline cdr` exporter writing to
PostgreSQL: what the tests of "one CDR per call through failures" and `bench/soak.py` run.

Each edge has its own SIP address (and, with `service`, a shared one too, as a Kubernetes Service
gives pods); the exporter reads the store's CDR stream into the `trunkline_cdr` table."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from redis import Redis as SyncRedis

from tests.support.ports import free_port
from tests.support.processes import http_ready, stop, wait_started
from tests.support.redis_server import RedisProcess
from tests.support.trunkline_up import BIN, Up, manifests


@dataclass
class Exporter:
    """`trunkline cdr --postgres`: the stream's CDRs into PostgreSQL, acknowledged once stored."""

    workdir: Path
    redis_url: str
    dsn: str
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Exporter:
        self.workdir.mkdir(parents=True, exist_ok=True)
        http = f"127.0.0.1:{free_port()}"
        cmd = [BIN, "cdr", "--redis", self.redis_url, "--postgres", "--batch", "50", "--claim-idle", "1",
               "--consumer", "exporter-test", "--http-listen", http]  # fmt: skip
        env = {**os.environ, "TRUNKLINE_CDR_POSTGRES_DSN": self.dsn}
        with (self.workdir / "exporter.log").open("ab") as out:
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        # Up before the test goes on: an exporter that could not start fails here, with its log.
        wait_started(self.proc, lambda: http_ready(f"http://{http}/healthz"), "trunkline cdr", self.output,
                     timeout=30)  # fmt: skip
        return self

    def output(self) -> str:
        return (self.workdir / "exporter.log").read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)


def cdr_call_ids(dsn: str) -> list[str]:
    """The Call-IDs of the CDR rows in PostgreSQL (one per row: duplicates show as repeats)."""
    try:
        with psycopg.connect(dsn) as conn:
            return [str(r[0]) for r in conn.execute("SELECT call_id FROM trunkline_cdr").fetchall()]
    except (psycopg.errors.UndefinedTable, psycopg.OperationalError):
        return []


def cdr_rows(dsn: str, *columns: str) -> list[tuple[object, ...]]:
    """The named columns of every CDR row in PostgreSQL."""
    with psycopg.connect(dsn) as conn:
        return list(conn.execute(f"SELECT {', '.join(columns)} FROM trunkline_cdr").fetchall())


def clear_cdrs(dsn: str) -> None:
    try:
        with psycopg.connect(dsn) as conn:
            conn.execute("DELETE FROM trunkline_cdr")
    except psycopg.errors.UndefinedTable:
        pass


@dataclass
class Cluster:
    """Edges "a" and "b" (started on demand) sharing `redis`; `service`: their shared address."""

    workdir: Path
    redis: RedisProcess
    carrier_port: int
    service: str | None = None
    extra: list[str] = field(default_factory=list)  # more flags for every edge
    spool: bool = False  # each edge with --cdr-spool in its own folder (a pod's emptyDir)
    pbx_port: int = 0  # where inbound calls go (0: nowhere in particular)
    edges: dict[str, Up] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.text = manifests(self.carrier_port, self.pbx_port or free_port())
        secret = self.workdir / "nonce-secret"
        self.workdir.mkdir(parents=True, exist_ok=True)
        secret.write_text("the same for every edge")
        self.flags = ["--redis", self.redis.url, "--nonce-secret-file", str(secret), *self.extra]
        if self.service:
            self.flags += ["--service-listen", self.service]

    @property
    def host(self) -> str:
        """Each edge's own SIP address's IP: the shared address's, when there is one, so that a peer
        answering at Via's port reaches the edge that asked (docs/failover.md)."""
        return self.service.rsplit(":", 1)[0] if self.service else "127.0.0.1"

    def start(self, name: str, *flags: str) -> Up:
        """Edge `name` (its id edge-<name>) with `flags` added. Started again under the same name, it is
        a restarted container of the same pod: same edge id, same folder (and spool), a new process."""
        workdir = self.workdir / f"edge-{name}"
        spool = ["--cdr-spool", str(workdir / "spool")] if self.spool else []
        edge = Up(workdir, self.text, [*self.flags, "--edge-id", f"edge-{name}", *spool, *flags],
                  command="edge", host=self.host).start()  # fmt: skip
        self.edges[name] = edge
        return edge

    def signal(self, name: str, sig: signal.Signals) -> None:
        proc = self.edges[name].proc
        assert proc is not None
        proc.send_signal(sig)
        if sig == signal.SIGKILL:
            proc.wait()

    def stop(self) -> None:
        for edge in self.edges.values():
            if edge.proc is not None and edge.proc.poll() is None:
                edge.proc.send_signal(signal.SIGCONT)
                edge.stop()

    def redis_client(self) -> SyncRedis:
        return SyncRedis(host="127.0.0.1", port=self.redis.port, socket_timeout=5)

    def stream_length(self) -> int:
        with self.redis_client() as client:
            return int(client.xlen("trunkline:cdr"))

    def answered_calls(self, edge: str) -> int:
        """Calls whose stored record says answered and held by `edge`: what another edge can carry on
        (a call stored while ringing is answered 503 by its adopter instead)."""
        count = 0
        with self.redis_client() as client:
            for key in client.scan_iter("trunkline:call:*", count=100):
                owner, data = client.hmget(key, ["owner", "data"])
                mine = owner is not None and owner.startswith(f"edge-{edge}/".encode())  # any process of it
                if mine and data and json.loads(data)["record"]["answer"]:
                    count += 1
        return count

    def channels_in_use(self) -> int:
        with self.redis_client() as client:
            return int(client.zcard("trunkline:channels:default/acme"))
