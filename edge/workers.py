"""`trunkline edge --workers N`: one process per CPU of the pod. The parent starts N edge processes
(workers), each a full edge with its own edge id and its own SIP port (where the answers to its
requests come back), all sharing the SIP listening address with SO_REUSEPORT, as edges behind a
Service do with `--service-listen`. Calls live in the shared store, so any worker carries any request
of any call (docs/failover.md). The parent stays small: it restarts a worker that dies (workers that
keep dying end the parent, non-zero), forwards SIGTERM/SIGINT (drain), and serves /healthz, /readyz
and /metrics by asking its workers on their own loopback ports."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
import sys
import tempfile
from collections import deque
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from trunkline.core.logs import event
from trunkline.core.net import HostPort
from trunkline.edge.worker_metrics import exposition

log = logging.getLogger("trunkline.edge")

RESTART_DELAY = 1.0  # seconds before a dead worker is started again
RESTARTS_ALLOWED = 5  # more restarts than this within RESTART_WINDOW: give up
RESTART_WINDOW = 60.0
HEALTH_GRACE = 60.0  # a worker younger than this may not answer /healthz yet (it is starting)
ASK_TIMEOUT = 1.5  # each worker's /healthz, /readyz, /metrics: inside the kubelet probes' 2 s
KILL_AFTER = 10.0  # seconds past the grace period before workers still draining are killed


class RestartBudget:
    """At most `allowed` restarts within any `window` seconds."""

    def __init__(self, allowed: int = RESTARTS_ALLOWED, window: float = RESTART_WINDOW) -> None:
        self.allowed, self.window = allowed, window
        self._times: deque[float] = deque()

    def allow(self, now: float) -> bool:
        while self._times and now - self._times[0] > self.window:
            self._times.popleft()
        if len(self._times) >= self.allowed:
            return False
        self._times.append(now)
        return True


@dataclass
class WorkerPlan:
    """How the parent runs its workers (from its own command line)."""

    count: int
    argv: list[str]  # the parent's arguments: every worker gets them, then its own overrides
    listen: HostPort  # the shared SIP address (--sip-listen)
    edge_id: str  # worker i is `<edge_id>-w<i>`, after a restart too
    first_port: int = 0  # worker i's own SIP port is first_port + i (0: any free port)
    grace: float = 30.0
    log_level: str = "INFO"
    # No --nonce-secret-file: the parent makes one key for its workers, so that a challenge one
    # issued is good at the others (a caller's next request may land on any of them).
    own_nonce_key: bool = False
    cdr_spool: str | None = None  # --cdr-spool: worker i spools in its folder `w<i>` there


def worker_id(edge_id: str, index: int) -> str:
    """Kept across restarts: each process is a new owner of it (`adoption.incarnation`), which takes
    its dead predecessor's calls at once, as a restarted container does in its pod."""
    return f"{edge_id}-w{index}"


def worker_argv(plan: WorkerPlan, index: int, http_fd: int, parent: int) -> list[str]:
    """Worker `index`'s arguments: the parent's, then (argparse keeps the last) its own address on the
    shared address's IP, the shared address itself, its id, its CDR spool and its ops socket."""
    own = HostPort(plan.listen.host, plan.first_port + index if plan.first_port else 0)
    spool = ["--cdr-spool", os.path.join(plan.cdr_spool, f"w{index}")] if plan.cdr_spool else []  # 1 writer
    return [
        *plan.argv,
        "--workers", "1",
        "--sip-listen", str(own),
        "--service-listen", str(plan.listen),
        "--edge-id", worker_id(plan.edge_id, index),
        *spool,
        "--http-fd", str(http_fd),
        "--worker-of", str(parent),
        "--log-level", plan.log_level,
    ]  # fmt: skip


@dataclass
class Worker:
    index: int
    http: socket.socket  # bound by the parent, handed to each process of the slot: a stable port to ask
    proc: asyncio.subprocess.Process | None = None
    started: float = 0.0

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    @property
    def url(self) -> str:
        host, port = self.http.getsockname()[:2]
        return f"http://{host}:{port}"


@dataclass
class Supervisor:
    plan: WorkerPlan
    ops: socket.socket  # the parent's --http-listen
    budget: RestartBudget = field(default_factory=RestartBudget)
    workers: list[Worker] = field(default_factory=list)
    failed: bool = False
    signals: int = 0

    def __post_init__(self) -> None:
        self.stopping = asyncio.Event()
        self.registry = CollectorRegistry()
        self.restarts = Counter(
            "trunkline_edge_worker_restarts", "Edge workers started again after they died",
            registry=self.registry,
        )  # fmt: skip
        running = Gauge("trunkline_edge_workers", "Edge worker processes running", registry=self.registry)
        running.set_function(lambda: sum(w.alive for w in self.workers))
        self._session: aiohttp.ClientSession | None = None

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=ASK_TIMEOUT))
        self.workers = [Worker(i, _loopback_listener()) for i in range(self.plan.count)]
        runner = web.AppRunner(self._app(), access_log=None, handle_signals=False)
        key_file = _nonce_key_file() if self.plan.own_nonce_key else None
        if key_file is not None:
            self.plan.argv = [*self.plan.argv, "--nonce-secret-file", key_file]
        try:
            await runner.setup()
            await web.SockSite(runner, self.ops).start()
            event(log, logging.INFO, "edge workers starting", workers=self.plan.count,
                  address=str(self.plan.listen))  # fmt: skip
            await asyncio.gather(*(self._keep(w) for w in self.workers))
        finally:
            await runner.cleanup()
            await self._session.close()
            for worker in self.workers:
                worker.http.close()
            if key_file is not None:
                os.unlink(key_file)
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        event(log, logging.INFO, "edge workers stopped", failed=self.failed)
        return 1 if self.failed else 0

    async def _keep(self, worker: Worker) -> None:
        """Run worker slot `worker` until the parent stops, starting it again each time it dies."""
        loop = asyncio.get_running_loop()
        while not self.stopping.is_set():
            args = worker_argv(self.plan, worker.index, worker.http.fileno(), os.getpid())
            try:
                worker.proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "trunkline", "edge", *args, pass_fds=(worker.http.fileno(),)
                )
            except OSError as exc:  # out of processes or memory: counted as a death
                event(log, logging.ERROR, "edge worker not started", worker=worker.index, error=str(exc))
                code = -1
            else:
                worker.started = loop.time()
                if self.stopping.is_set():  # the signal came while it was being started
                    worker.proc.send_signal(signal.SIGTERM)
                code = await self._wait(worker.proc)
            if self.stopping.is_set():
                return
            event(log, logging.WARNING, "edge worker exited", worker=worker.index, code=code)
            if not self.budget.allow(loop.time()):
                event(log, logging.ERROR, "edge workers keep dying: stopping", restarts=RESTARTS_ALLOWED,
                      window=RESTART_WINDOW)  # fmt: skip
                self.failed = True
                self._stop()
                return
            self.restarts.inc()
            try:  # a pause, so that a worker failing at once does not spin
                await asyncio.wait_for(self.stopping.wait(), RESTART_DELAY)
            except TimeoutError:
                pass

    async def _wait(self, proc: asyncio.subprocess.Process) -> int:
        """The worker's exit code; once the parent stops, killed if still draining past the grace."""
        waiting = asyncio.ensure_future(proc.wait())
        stopped = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({waiting, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not waiting.done():
                try:
                    return await asyncio.wait_for(asyncio.shield(waiting), self.plan.grace + KILL_AFTER)
                except TimeoutError:
                    proc.kill()
            return await waiting
        finally:
            stopped.cancel()

    def _on_signal(self, signum: int) -> None:
        # The first signal drains every worker; a second one is passed on too (they stop waiting).
        self.signals += 1
        event(log, logging.INFO, "signal received", signal=signal.Signals(signum).name, workers=True)
        self._stop()

    def _stop(self) -> None:
        self.stopping.set()
        for worker in self.workers:
            if worker.proc is not None and worker.proc.returncode is None:
                worker.proc.send_signal(signal.SIGTERM)

    # ------------------------------------------------------------ ops endpoints

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def _ask(self, worker: Worker, path: str) -> tuple[int, str]:
        """A worker's answer on its ops port: (status, body); (0, why) when it gives none."""
        if not worker.alive:
            return 0, "not running"
        assert self._session is not None
        try:
            async with self._session.get(worker.url + path) as response:
                return response.status, await response.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            return 0, f"no answer ({type(exc).__name__})"

    async def _ask_all(self, path: str) -> list[tuple[int, str]]:
        return list(await asyncio.gather(*(self._ask(w, path) for w in self.workers)))

    async def _healthz(self, _: web.Request) -> web.Response:
        """Healthy while every worker past its start-up answers (a dead one is being restarted here;
        a hung one needs the container restarted)."""
        now = asyncio.get_running_loop().time()
        answers = await self._ask_all("/healthz")
        hung = [
            w.index
            for w, (status, _) in zip(self.workers, answers, strict=True)
            if w.alive and status != 200 and now - w.started > HEALTH_GRACE
        ]
        if hung:
            return web.Response(status=503, text=f"workers not answering: {hung}\n")
        return web.Response(text="ok\n")

    async def _readyz(self, _: web.Request) -> web.Response:
        answers = await self._ask_all("/readyz")
        lines = []
        for worker, (status, body) in zip(self.workers, answers, strict=True):
            why = body.strip().replace("\n", "; ")
            lines.append(f"worker {worker.index}: {'ready' if status == 200 else 'not ready'} ({why})")
        ok = not self.stopping.is_set() and all(status == 200 for status, _ in answers)
        if self.stopping.is_set():
            lines.append("draining")
        return web.Response(status=200 if ok else 503, text="\n".join(lines) + "\n")

    async def _metrics(self, _: web.Request) -> web.Response:
        answers = await self._ask_all("/metrics")
        texts = {str(w.index): body for w, (status, body) in zip(self.workers, answers, strict=True)
                 if status == 200}  # fmt: skip
        return web.Response(
            body=exposition(texts, self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )


def _loopback_listener() -> socket.socket:
    """A worker's ops socket, bound and listening in the parent so its port outlives the worker."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _nonce_key_file() -> str:
    """A private file holding one random nonce key, for the workers (removed when the parent ends)."""
    fd, path = tempfile.mkstemp(prefix="trunkline-edge-nonce-")  # mode 0600
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_hex(32) + "\n")
    return path


def default_edge_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"
