"""Carrier upkeep with real processes: two `trunkline edge` processes over Redis keep one registration
to a challenging registrar (one edge at a time; SIGKILL the holder and the other takes over), the
carrier's inbound call to the registered Contact reaches the DID's PBX, and a gateway that stops
answering OPTIONS is marked down, skipped by calls and taken back when it answers again."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.carrier_peer import CarrierPeer
from tests.support.cdr_cluster import Cluster
from tests.support.ports import free_port
from tests.support.redis_server import RedisProcess
from tests.support.trunkline_up import Up
from trunkline.sip.ua import UserAgent

# The edges' shared address is on their own host address, as a pod's is: answers to their requests go
# to Via's port at the source address (RFC 3261 18.2.2), which must be the edge's own socket.
SERVICE_IP = "127.0.0.1"
DID = "+14155550100"


def manifests(gateways: list[int], pbx_port: int, carrier_spec: dict[str, Any]) -> str:
    """Carrier `pstn` (gateways on 127.0.0.1, in priority order; calls from 127.0.0.1; credentials
    trunk-7), trunk `acme` (IP ACL 127.0.0.2, origination 127.0.0.4:pbx_port) and its DID."""
    origination = [{"uri": f"sip:127.0.0.4:{pbx_port}"}]
    spec = {
        "gateways": [
            {"uri": f"sip:127.0.0.1:{port}", "priority": 10 * (i + 1)} for i, port in enumerate(gateways)
        ],
        "inboundCidrs": ["127.0.0.1/32"],
        "auth": {"credentialsSecret": "pstn-creds"},
        **carrier_spec,
    }
    docs = [
        {"apiVersion": "v1", "kind": "Secret",
         "metadata": {"name": "pstn-creds", "labels": {"trunkline.io/credentials": ""}},
         "stringData": {"username": "trunk-7", "password": "carrier-s3cret"}},
        {"apiVersion": "trunkline.io/v1alpha1", "kind": "Carrier", "metadata": {"name": "pstn"},
         "spec": spec},
        {"apiVersion": "trunkline.io/v1alpha1", "kind": "Trunk", "metadata": {"name": "acme"},
         "spec": {"auth": {"ipAcl": ["127.0.0.2/32"]}, "origination": origination,
                  "outbound": {"allowedPrefixes": ["+1"]}}},
        {"apiVersion": "trunkline.io/v1alpha1", "kind": "DID", "metadata": {"name": "main"},
         "spec": {"number": DID, "trunkRef": "acme"}},
    ]  # fmt: skip
    return "\n---\n".join(json.dumps(d) for d in docs)


async def wait_until(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """Poll `check` (run off the loop: it may block on HTTP) until truthy, with a generous deadline."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await asyncio.to_thread(check)
        if last:
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def gauge(edge: Up, name: str, **labels: str) -> float | None:
    """A sample of `name` with these labels on the edge's /metrics (None: not there)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{edge.http_port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_one_edge_registers_and_the_other_takes_over_when_it_dies(
    tmp_path: Path, redis: RedisProcess, pbx_port: int
) -> None:
    registrar = CarrierPeer(username="trunk-7", password="carrier-s3cret", grant=60)
    pbx = UserAgent("127.0.0.4")
    port = (await registrar.start())[1]
    await pbx.start(pbx_port)
    service = f"{SERVICE_IP}:{free_port()}"
    cluster = Cluster(tmp_path, redis, port, service=service)
    cluster.text = manifests([port], pbx_port, {"registration": {"enabled": True}})
    try:
        edges = {name: cluster.start(name) for name in ("a", "b")}
        vias = {f"127.0.0.1:{edge.sip_port}": name for name, edge in edges.items()}
        await wait_until(lambda: registrar.registered, "a first registration")
        first = registrar.registered[0]
        assert registrar.challenged >= 1  # the 401 was answered with the carrier's credentials
        assert first.contact == f"sip:trunk-7@{service}" and first.expires == 60  # min(600, theirs)
        holder = vias[first.via]
        other = "b" if holder == "a" else "a"
        for name in ("a", "b"):  # both edges show what the store says
            shown = lambda n=name: gauge(edges[n], "trunkline_carrier_registered", carrier="pstn") == 1  # noqa: E731
            await wait_until(shown, f"edge {name}'s registered gauge")
        # Two lease renewals later, still only the holder has sent REGISTERs.
        await asyncio.sleep(8)
        assert {vias[r.via] for r in registrar.registered} == {holder}, registrar.registered

        # The carrier's call to the registered Contact reaches the DID's PBX.
        contact_host, contact_port = service.split(":")
        status = await registrar.call(f"sip:{DID}@{service}", (contact_host, int(contact_port)),
                                      from_user="+442071234567")  # fmt: skip
        assert status == 200 and pbx.calls_answered == 1
        # ... and so does one sent to the Contact exactly as bound, naming the DID in To.
        status = await registrar.call(first.contact, (contact_host, int(contact_port)),
                                      from_user="+442071234567", to=f"sip:{DID}@carrier.test")  # fmt: skip
        assert status == 200 and pbx.calls_answered == 2
        assert pbx.last_invite is not None and pbx.last_invite.uri.user == DID  # type: ignore[union-attr]

        count = len(registrar.registered)
        killed = time.monotonic()
        cluster.signal(holder, signal.SIGKILL)
        again = await wait_until(
            lambda: next((r for r in registrar.registered[count:] if vias[r.via] == other), None),
            "a registration by the other edge",
        )
        took = again.at - killed
        print(f"registration taken over {took:.1f} s after its holder was killed")
        # The same binding goes on: same Call-ID, CSeq higher (RFC 3261 10.2.4).
        assert again.call_id == first.call_id and again.cseq > registrar.registered[count - 1].cseq
        assert took < 45, "the lease (10 s) and a renewal period should be all it takes"
        assert re.search(r"carrier registered.*edge-" + other, cluster.edges[other].output())
    finally:
        cluster.stop()
        await registrar.close()
        await pbx.close()


async def test_a_silent_gateway_is_marked_down_skipped_and_taken_back(tmp_path: Path, pbx_port: int) -> None:
    first, second = CarrierPeer(), CarrierPeer()
    ports = [(await first.start())[1], (await second.start())[1]]
    uris = [f"sip:127.0.0.1:{port}" for port in ports]
    health = {"interval": 0.5, "timeout": 1, "failuresToDown": 2, "successesToUp": 2}
    edge = Up(tmp_path / "edge", manifests(ports, pbx_port, {"health": health}), command="edge").start()
    pbx = UserAgent("127.0.0.2")
    await pbx.start()
    edge_addr = ("127.0.0.1", edge.sip_port)

    async def call() -> int:
        return await pbx.call(f"sip:+14155551234@{edge.sip}", edge_addr, from_user=DID)

    def up(uri: str) -> float | None:
        return gauge(edge, "trunkline_gateway_up", carrier="pstn", gateway=uri)

    try:
        for uri in uris:  # a probe's round trip shows once it is answered
            probed = lambda u=uri: (gauge(edge, "trunkline_gateway_probe_seconds", gateway=u) or 0) > 0  # noqa: E731
            await wait_until(probed, f"{uri} probed")
            assert up(uri) == 1
        assert first.options >= 1 and second.options >= 1
        assert await call() == 200 and (first.invites, second.invites) == (1, 0)

        first.silent = True  # stops answering anything
        silenced = time.monotonic()
        await wait_until(lambda: up(uris[0]) == 0, "the silent gateway marked down")
        print(f"silent gateway marked down after {time.monotonic() - silenced:.1f} s (interval 0.5 s x 2)")
        assert "gateway down" in edge.output()
        placed = time.monotonic()
        assert await call() == 200
        print(f"call past the down gateway answered in {time.monotonic() - placed:.2f} s")
        assert (first.invites, second.invites) == (1, 1)  # the down gateway was not even tried

        first.silent = False
        await wait_until(lambda: up(uris[0]) == 1, "the gateway taken back once it answers")
        assert "gateway up" in edge.output()
        assert await call() == 200 and (first.invites, second.invites) == (2, 1)
    finally:
        edge.stop()
        for ua in (pbx, first, second):
            await ua.close()


async def test_a_gateway_that_fails_calls_in_a_row_is_taken_down(tmp_path: Path, pbx_port: int) -> None:
    first, second = CarrierPeer(), CarrierPeer()
    ports = [(await first.start())[1], (await second.start())[1]]
    uri = f"sip:127.0.0.1:{ports[0]}"
    health = {"interval": 0.5, "timeout": 1, "failuresToDown": 2, "successesToUp": 100}
    edge = Up(tmp_path / "edge", manifests(ports, pbx_port, {"health": health}), command="edge").start()
    pbx = UserAgent("127.0.0.2")
    await pbx.start()
    first.refuse_calls = 503  # it answers its probes, but no call gets through it
    try:
        for _ in range(2):  # each fails over to the second gateway
            assert (
                await pbx.call(f"sip:+14155551234@{edge.sip}", ("127.0.0.1", edge.sip_port), from_user=DID)
                == 200
            )
        assert (first.invites, second.invites) == (2, 2)
        down = lambda: gauge(edge, "trunkline_gateway_up", carrier="pstn", gateway=uri) == 0  # noqa: E731
        await wait_until(down, "the gateway that failed two calls in a row marked down")
        assert "calls_failed=2" in edge.output() and first.options >= 1
        assert (
            await pbx.call(f"sip:+14155551234@{edge.sip}", ("127.0.0.1", edge.sip_port), from_user=DID) == 200
        )
        assert (first.invites, second.invites) == (2, 3)  # not tried any more
    finally:
        edge.stop()
        for ua in (pbx, first, second):
            await ua.close()
