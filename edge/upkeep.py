"""Carrier upkeep: what one edge of all does for the installation, under a lease in the shared store.

Per Carrier with `spec.registration.enabled`, a task keeps the registration alive (the state machine
is edge/carrier_registration.py); per Carrier with `spec.health`, a task probes its gateways with
OPTIONS (hysteresis in edge/gateway_health.py). Each task works only while its edge holds the lease
`upkeep:<kind>:<carrier>` (renewed every third of `lease_ttl`): when that edge dies, another edge's
task takes the lease within `lease_ttl` and carries on from the state in the store. Every edge reads
that state every `observe_every` seconds: routing skips down gateways, /metrics shows it all; and the
5-minute gateway figures of the Carriers with `routing: quality`, which rank their gateways.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial

from trunkline.core.gateway_figures import SHORT_WINDOW, GatewayFigures, window
from trunkline.core.logs import event
from trunkline.core.models import Carrier, CarrierRouting
from trunkline.core.state import StoreUnavailable, upkeep_key
from trunkline.edge.call_failures import CALL_FAILURES_TTL
from trunkline.edge.carrier_registration import (
    CarrierRegistration,
    Progress,
    RegistrationPlan,
    Step,
    plan_for,
)
from trunkline.edge.context import EdgeContext
from trunkline.edge.gateway_health import NO_ANSWER, GatewayHealth, down_gateways, options_request
from trunkline.sip.message import Request, Response
from trunkline.sip.uri import SipUri, parse_uri

log = logging.getLogger("trunkline.edge")
Key = tuple[str, str]
REQUEST_TIMEOUT = 4.0  # seconds a REGISTER may take before it counts as unanswered


class Upkeep:
    def __init__(self, ctx: EdgeContext, lease_ttl: float = 10.0, observe_every: float = 2.0) -> None:
        self.ctx, self.lease_ttl, self.observe_every = ctx, lease_ttl, observe_every
        self._tasks: dict[tuple[str, Key], asyncio.Task[None]] = {}
        self._held: set[str] = set()
        self._seen: dict[Key, tuple[str, list[str]]] = {}  # carrier key -> (name, gateways) on /metrics

    async def run(self) -> None:
        while True:
            try:
                self._start_tasks()
                await self._observe()
            except StoreUnavailable:
                pass  # routing keeps the last view; the next round tries again
            except Exception:
                log.exception("carrier upkeep round failed")
            await self.ctx.sleep(self.observe_every)

    async def stop(self) -> None:
        """Stop, giving up the leases held so that another edge takes over at once."""
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        for name in list(self._held):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ctx.store.release_lease(name, self.ctx.owner), 1.0)

    # -- who does what ------------------------------------------------------------------------------
    def _carrier(self, key: Key) -> Carrier | None:
        return next((c for c in self.ctx.directory.carriers if c.key == key), None)

    def _start_tasks(self) -> None:
        for carrier in self.ctx.directory.carriers:
            wanted = {"registration": carrier.spec.registration.enabled, "health": carrier.spec.health}
            for kind, work in (("registration", self._register), ("health", self._probe)):
                task = self._tasks.get((kind, carrier.key))
                if wanted[kind] and (task is None or task.done()):
                    self._tasks[(kind, carrier.key)] = asyncio.create_task(
                        self._guarded(kind, carrier.key, work)
                    )

    async def _guarded(self, kind: str, key: Key, work: Callable[[Key, str], Awaitable[None]]) -> None:
        """Run one carrier's task; it ends when the carrier no longer wants it (lease given up)."""
        name = upkeep_key(kind, *key)
        try:
            await work(key, name)
        finally:
            if name in self._held:
                self._held.discard(name)
                with contextlib.suppress(Exception):
                    await self.ctx.store.release_lease(name, self.ctx.owner)

    async def _hold(self, name: str) -> bool | None:
        """Take or renew the lease: True held, False another edge holds it, None the store did not
        answer (do nothing now; what this edge knows is kept, a hiccup costs no extra REGISTER)."""
        try:
            held = await self.ctx.store.hold_lease(name, self.ctx.owner, self.lease_ttl)
        except StoreUnavailable:
            return None
        if held and name not in self._held:
            event(log, logging.INFO, "upkeep lease taken", lease=name, edge=self.ctx.owner)
        (self._held.add if held else self._held.discard)(name)
        return held

    async def _wait_holding(self, name: str, until: float, same: Callable[[], bool]) -> None:
        """Sleep until `until` (store clock) renewing the lease; back early when it is lost or the
        work is no longer `same` (the configuration changed)."""
        while (left := until - self.ctx.clock()) > 0:
            await self.ctx.sleep(min(left, self.lease_ttl / 3))
            if not await self._hold(name) or not same():
                return

    async def _send(self, request: Request, target: SipUri, timeout: float) -> Response | None:
        """One request in a client transaction: its final response, None without one in `timeout`."""
        hops = await self.ctx.resolver.resolve(target, "udp")  # as outbound calls to gateways do
        if not hops:
            return None
        hop = hops[0]
        if hop.transport == "tls" and hop.host != target.host.strip("[]"):
            self.ctx.stack.verify_tls_name((hop.host, hop.port), target.host)  # RFC 5922
        request.add("Via", self.ctx.local.via(hop.transport), first=True)
        try:
            future = self.ctx.stack.request(request, (hop.host, hop.port), hop.transport)
        except (OSError, ValueError):
            return None
        if not await self.ctx.wait_at_most(future, timeout):
            self.ctx.stack.abandon(request)
            return None
        try:
            return future.result()
        except (TimeoutError, OSError, asyncio.CancelledError):
            return None

    # -- registration -------------------------------------------------------------------------------
    def _plan(self, key: Key) -> RegistrationPlan | None:
        carrier, local = self._carrier(key), self.ctx.local
        if carrier is None or not carrier.spec.registration.enabled:
            return None
        return plan_for(carrier, self.ctx.directory, local.contact_host, local.contact_port)

    def _plan_is(self, key: Key, plan: RegistrationPlan) -> bool:
        return self._plan(key) == plan

    async def _register(self, key: Key, name: str) -> None:
        machine: CarrierRegistration | None = None
        warned = False  # about a registration that cannot be done, once until it can
        while (carrier := self._carrier(key)) is not None and carrier.spec.registration.enabled:
            try:
                plan = self._plan(key)
                if plan is None and not warned:
                    why = "no spec.registration.user nor credentials, or no SIP URI to register at"
                    event(
                        log, logging.WARNING, "carrier registration impossible", carrier=carrier.name, why=why
                    )
                warned = plan is None
                held = await self._hold(name) if plan is not None else False
                if not held or plan is None:
                    machine = machine if held is None else None
                    await self.ctx.sleep(self.lease_ttl / 3)
                    continue
                if machine is None:
                    machine = CarrierRegistration(
                        plan, Progress.from_state(await self.ctx.store.upkeep(name))
                    )
                elif plan != machine.given:  # the Carrier or its Secret changed
                    machine = CarrierRegistration(plan, machine.progress)
                await self._register_round(carrier, name, machine)
                await self._wait_holding(name, machine.wake_at, partial(self._plan_is, key, machine.given))
            except StoreUnavailable:
                await self.ctx.sleep(self.lease_ttl / 3)
            except Exception:
                log.exception("carrier registration of %s/%s failed", *key)
                machine = None
                await self.ctx.sleep(self.lease_ttl / 3)
        if machine is not None and name in self._held and machine.progress.registered(self.ctx.clock()):
            await self._exchange(name, machine, machine.unregister())  # the carrier stops calling us
            event(log, logging.INFO, "carrier unregistered", carrier=key[1], status=machine.progress.status)

    async def _exchange(self, name: str, machine: CarrierRegistration, step: Step) -> None:
        """Send the machine's REGISTERs (an answered challenge is another) until it has none."""
        while step.request is not None and step.target is not None:
            if not await self._hold(name):
                machine.no_answer(self.ctx.clock())
                return
            response = await self._send(step.request, step.target, REQUEST_TIMEOUT)
            now = self.ctx.clock()
            step = machine.receive(response, now) if response is not None else machine.no_answer(now)

    async def _register_round(self, carrier: Carrier, name: str, machine: CarrierRegistration) -> None:
        was = machine.progress.registered_until, machine.progress.failures
        await self._exchange(name, machine, machine.handle_timer(self.ctx.clock()))
        progress, now = machine.progress, self.ctx.clock()
        state = {**progress.to_state(), "holder": self.ctx.owner, "registrar_uri": str(machine.registrar)}
        ttl = max(progress.registered_until - now, 0) + machine.plan.expires + 2 * self.lease_ttl
        await self.ctx.store.put_upkeep(name, state, ttl)
        if progress.registered_until > was[0]:  # a 200 this round (a refresh too: one line per refresh)
            expires = round(progress.registered_until - now)
            event(log, logging.INFO, "carrier registered", carrier=carrier.name, edge=self.ctx.owner,
                  registrar=str(machine.registrar), expires=expires)  # fmt: skip
        elif progress.failures > was[1]:
            event(log, logging.WARNING, "carrier registration failed", carrier=carrier.name,
                  status=progress.status, reason=progress.reason, failures=progress.failures,
                  retry_in=round(machine.wake_at - now, 1))  # fmt: skip

    # -- gateway health -----------------------------------------------------------------------------
    async def _probe(self, key: Key, name: str) -> None:
        states: dict[str, GatewayHealth] | None = None
        while (carrier := self._carrier(key)) is not None and (spec := carrier.spec.health) is not None:
            try:
                held = await self._hold(name)
                if not held:
                    states = states if held is None else None
                    await self.ctx.sleep(min(spec.interval, self.lease_ttl / 3))
                    continue
                if states is None:
                    stored = (await self.ctx.store.upkeep(name) or {}).get("gateways") or {}
                    states = {u: GatewayHealth.from_state(s) for u, s in stored.items()}
                gateways = [g.uri for g in carrier.spec.gateways]
                states = {uri: states.get(uri) or GatewayHealth() for uri in gateways}
                due = self.ctx.clock() + spec.interval
                results = await asyncio.gather(*(self._options(uri, spec.timeout) for uri in gateways))
                now = self.ctx.clock()
                for uri, (status, seconds) in zip(gateways, results, strict=True):
                    if states[uri].observe(status, seconds, now, spec):
                        event(log, logging.INFO if states[uri].up else logging.WARNING,
                              "gateway up" if states[uri].up else "gateway down", carrier=carrier.name,
                              gateway=uri, status=status)  # fmt: skip
                await self._calls_failed(carrier, spec.failuresToDown, states, now)
                record = {"holder": self.ctx.owner, "gateways": {u: s.to_state() for u, s in states.items()}}
                await self.ctx.store.put_upkeep(name, record, 3 * spec.interval + 2 * self.lease_ttl)
                await self._wait_holding(name, due, lambda: self._carrier(key) == carrier)
            except StoreUnavailable:
                await self.ctx.sleep(min(spec.interval, self.lease_ttl / 3))
            except Exception:
                log.exception("gateway probes of %s/%s failed", *key)
                states = None
                await self.ctx.sleep(spec.interval)

    async def _calls_failed(
        self, carrier: Carrier, failures: int, states: dict[str, GatewayHealth], now: float
    ) -> None:
        """Take down the gateways that failed `failures` calls in a row (counted by every edge)."""
        name = upkeep_key("calls", *carrier.key)
        for uri, count in (await self.ctx.store.call_failures(name)).items():
            if count >= failures and uri in states:
                await self.ctx.store.count_call_failure(name, uri, False, CALL_FAILURES_TTL)  # once
                if states[uri].take_down(now):
                    event(log, logging.WARNING, "gateway down", carrier=carrier.name, gateway=uri,
                          calls_failed=count)  # fmt: skip

    async def _options(self, gateway: str, timeout: float) -> tuple[int, float]:
        """Probe one gateway: (final status or 408 without one, round trip seconds)."""
        target = parse_uri(gateway)
        if not isinstance(target, SipUri):
            return NO_ANSWER, 0.0
        request = options_request(target, self.ctx.local.contact_host, self.ctx.local.contact_port)
        started = time.monotonic()
        response = await self._send(request, target, timeout)
        return (response.status if response is not None else NO_ANSWER), time.monotonic() - started

    # -- what every edge sees -----------------------------------------------------------------------
    async def _observe(self) -> None:
        ctx, now = self.ctx, self.ctx.clock()
        seen: dict[Key, tuple[str, list[str]]] = {}
        down: dict[Key, frozenset[str]] = {}
        quality: dict[Key, dict[str, GatewayFigures]] = {}
        for carrier in ctx.directory.carriers:
            if carrier.spec.routing is CarrierRouting.QUALITY:
                buckets = await ctx.store.counts_per_minute(upkeep_key("figures", *carrier.key), SHORT_WINDOW)
                quality[carrier.key] = window(buckets, SHORT_WINDOW, {g.uri for g in carrier.spec.gateways})
            registered: bool | None = None
            gateways: dict[str, tuple[bool, float]] | None = None
            if carrier.spec.registration.enabled:
                found = await ctx.store.upkeep(upkeep_key("registration", *carrier.key))
                registered = Progress.from_state(found).registered(now)
            if carrier.spec.health is not None:
                health = await ctx.store.upkeep(upkeep_key("health", *carrier.key))
                down[carrier.key] = down_gateways(health)
                stored = (health or {}).get("gateways") or {}
                states = {g.uri: GatewayHealth.from_state(stored.get(g.uri)) for g in carrier.spec.gateways}
                gateways = {u: (g.up, g.latency) for u, g in states.items()}
            if registered is not None or gateways is not None:
                ctx.metrics.upkeep_seen(carrier.name, registered, gateways)
                seen[carrier.key] = (carrier.name, list(gateways or ()))
        ctx.gateways_down, ctx.gateway_quality = down, quality
        for key, (carrier_name, uris) in self._seen.items():
            if key not in seen:
                ctx.metrics.forget_carrier(carrier_name, uris)
        self._seen = seen
