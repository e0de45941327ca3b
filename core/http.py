"""The operations HTTP endpoint every trunkline process serves: /healthz, /readyz, /metrics.

/healthz: the process's event loop answers. /readyz: 200 only when every component is ready and the
process is not draining (so a Kubernetes Service stops sending new work before shutdown).
/metrics: Prometheus text from the process's own registry.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from functools import partial

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from trunkline.core.component import Component, ExplainsReadiness
from trunkline.core.telemetry import TelemetryCollector
from trunkline.core.version import package_version


def _as_float(read: Callable[[], bool | int]) -> float:
    return float(read())


def _not_ready(component: Component) -> str:
    reason = component.why_not_ready() if isinstance(component, ExplainsReadiness) else None
    return f"not ready ({reason})" if reason else "not ready"


class OpsServer:
    def __init__(self, sock: socket.socket, components: Sequence[Component], registry: CollectorRegistry):
        self.sock = sock
        self.components = components
        self.registry = registry
        self.draining = False
        self._runner: web.AppRunner | None = None
        registry.register(TelemetryCollector())
        Gauge("trunkline_build_info", "Version of this process", ["version"], registry=registry).labels(
            package_version()
        ).set(1)
        ready = Gauge(
            "trunkline_component_ready", "1 when the component is ready", ["component"], registry=registry
        )
        busy = Gauge(
            "trunkline_component_busy", "Live work (calls, sessions)", ["component"], registry=registry
        )
        for component in components:
            ready.labels(component.name).set_function(partial(_as_float, component.ready))
            busy.labels(component.name).set_function(partial(_as_float, component.busy))

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.SockSite(self._runner, self.sock).start()

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _: web.Request) -> web.Response:
        lines = [f"{c.name}: {'ready' if c.ready() else _not_ready(c)}" for c in self.components]
        ok = not self.draining and all(c.ready() for c in self.components)
        if self.draining:
            lines.append("draining")
        return web.Response(status=200 if ok else 503, text="\n".join(lines) + "\n")

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )
