"""A relay's advertised (SDP) address from its Node, read from a real kube-apiserver: the Node's
ExternalIP or a 1:1 NAT address annotated on it goes into the sessions it hands out, and a Node without
one makes the relay refuse sessions, say why (log, /readyz, an Event on its pod) and recover once the
Node gets the address. The Nodes are written into the API directly (there is no kubelet here)."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from tests.support.helm import render
from tests.support.media_relay import RelayProcess, media_ports
from tests.support.ports import free_port
from trunkline.media.v1 import media_pb2, media_pb2_grpc

from .cluster import ControlPlane

KEY = "trunkline.io/media-address"
DEADLINE = 60.0  # the relay retries every 10 s; a loaded machine may need a few rounds


def node(name: str, addresses: dict[str, str], annotation: str | None) -> str:
    annotations = {KEY: annotation} if annotation is not None else {}
    return json.dumps({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "annotations": annotations},
        "status": {"addresses": [{"type": t, "address": a} for t, a in addresses.items()]},
    })  # fmt: skip


def put_node(cp: ControlPlane, name: str, addresses: dict[str, str], annotation: str | None = None) -> None:
    """Create the Node, then write its addresses through the status subresource (as a kubelet would)."""
    cp.kubectl("apply", "-f", "-", input=node(name, addresses, annotation))
    patch = {"status": {"addresses": [{"type": t, "address": a} for t, a in addresses.items()]}}
    cp.kubectl("patch", "node", name, "--subresource=status", "--type=merge", "-p", json.dumps(patch))


def readyz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, repr(exc)


def until(check: Callable[[], bool], what: str, explain: Callable[[], str]) -> None:
    deadline = time.monotonic() + DEADLINE
    while not check():
        assert time.monotonic() < deadline, f"{what} within {DEADLINE:g} s: {explain()}"
        time.sleep(0.5)


async def create_session(relay: RelayProcess, session_id: str) -> media_pb2.CreateSessionResponse:
    async with grpc.aio.insecure_channel(relay.target) as channel:
        stub = media_pb2_grpc.MediaRelayStub(channel)
        response: media_pb2.CreateSessionResponse = await stub.CreateSession(
            media_pb2.CreateSessionRequest(session_id=session_id), timeout=10
        )
        return response


class Relays:
    """Relay processes with their own port ranges and ops ports, stopped at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[RelayProcess] = []
        self.low = media_ports(40)[0]

    def start(
        self, name: str, node_name: str, setting: str, env: dict[str, str] | None = None
    ) -> tuple[RelayProcess, int]:
        http = free_port()
        low = self.low + 10 * len(self.started)
        relay = RelayProcess(
            self.workdir / name,
            ["--advertise", setting, "--node-name", node_name, "--http-listen", f"127.0.0.1:{http}"],
            ports=(low, low + 9),
        )
        self.started.append(relay)
        with pytest.MonkeyPatch.context() as patch:  # the relay process inherits it
            for var, value in (env or {}).items():
                patch.setenv(var, value)
            return relay.start(timeout=60), http

    def stop(self) -> None:
        for relay in self.started:
            if relay.proc is not None:
                relay.stop()


@pytest.fixture
def relays(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Relays]:
    # The relay's pod, as the downward API names it: the Event about its address goes on it.
    monkeypatch.setenv("POD_NAMESPACE", "default")
    monkeypatch.setenv("POD_NAME", "relay-on-bare-node")
    started = Relays(tmp_path)
    yield started
    started.stop()


def test_the_relay_advertises_its_nodes_external_ip_or_annotated_address(
    control_plane: ControlPlane, relays: Relays
) -> None:
    cp = control_plane
    put_node(cp, "media-node-a", {"InternalIP": "127.0.0.4", "ExternalIP": "127.0.0.5"}, " 127.0.0.6 ")

    external, external_http = relays.start("external", "media-node-a", "nodeExternalIP")
    annotated, _ = relays.start("annotated", "media-node-a", f"nodeAnnotation:{KEY}")
    internal, _ = relays.start("internal", "media-node-a", "nodeInternalIP")
    for relay, address in ((external, "127.0.0.5"), (annotated, "127.0.0.6"), (internal, "127.0.0.4")):
        response = asyncio.run(create_session(relay, "s1"))
        assert (response.leg_a.address, response.leg_b.address) == (address, address), relay.output()
        assert f"advertises {address}" in relay.output()
    status, body = readyz(external_http)
    assert status == 200, body


def test_a_node_without_the_address_is_refused_until_it_has_one(
    control_plane: ControlPlane, relays: Relays
) -> None:
    cp = control_plane
    put_node(cp, "media-node-b", {"InternalIP": "127.0.0.8"}, "nat.example.net")

    relay, http = relays.start("no-external", "media-node-b", "nodeExternalIP")
    _, junk_http = relays.start("junk-annotation", "media-node-b", f"nodeAnnotation:{KEY}")

    # Not ready, with the reason; the log line says it too; sessions refused with it.
    status, body = readyz(http)
    assert status == 503 and "node media-node-b has no usable ExternalIP" in body, body
    assert "refuses sessions: no usable media address" in relay.output()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        asyncio.run(create_session(relay, "s1"))
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "no usable ExternalIP" in (refused.value.details() or "")
    status, body = readyz(junk_http)  # a host name in the annotation is not an address
    assert status == 503 and "'nat.example.net' is not an IP address" in body, body

    # `kubectl describe pod` shows why: a Warning Event on the relay's pod.
    def event_written() -> bool:
        out = cp.kubectl("get", "events", "-n", "default", "-o", "json").stdout
        return any(
            e["reason"] == "MediaAddressUnusable"
            and e["involvedObject"]["name"] == "relay-on-bare-node"
            and "no usable ExternalIP" in e["message"]
            for e in json.loads(out)["items"]
        )

    until(event_written, "the MediaAddressUnusable Event", relay.output)

    # The Node gets its ExternalIP: the relay takes it at its next attempt, and serves.
    put_node(cp, "media-node-b", {"InternalIP": "127.0.0.8", "ExternalIP": "127.0.0.9"}, "nat.example.net")
    until(
        lambda: readyz(http)[0] == 200, "the relay to become ready", lambda: readyz(http)[1] + relay.output()
    )
    response = asyncio.run(create_session(relay, "s2"))
    assert response.leg_a.address == "127.0.0.9"
    assert readyz(junk_http)[0] == 503  # still junk: still refused


def test_the_charts_rbac_is_what_the_relay_needs(
    control_plane: ControlPlane, relays: Relays, tmp_path: Path
) -> None:
    """The relay as its ServiceAccount (a token, not the admin): refused without the chart's roles,
    served with them; its Event goes through them too."""
    cp = control_plane
    put_node(cp, "media-node-c", {"InternalIP": "127.0.0.10", "ExternalIP": "127.0.0.11"})
    put_node(cp, "media-node-d", {"InternalIP": "127.0.0.12"})
    docs = render("media.kind=DaemonSet", "media.advertise=nodeExternalIP", namespace="relays")
    account = next(
        d for d in docs if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == "tl-trunkline-media"
    )
    roles = [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
             and d["metadata"]["name"].endswith("tl-trunkline-media")]  # fmt: skip
    assert {d["kind"] for d in roles} == {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    cp.kubectl("create", "namespace", "relays")
    cp.kubectl("apply", "-n", "relays", "-f", "-", input=json.dumps(account))
    token = cp.kubectl("create", "token", "tl-trunkline-media", "-n", "relays").stdout.strip()
    admin = json.loads(cp.kubeconfig.read_text())
    admin["users"] = [{"name": "relay", "user": {"token": token}}]
    admin["contexts"][0]["context"]["user"] = "relay"
    kubeconfig = tmp_path / "relay-kubeconfig"
    kubeconfig.write_text(json.dumps(admin))
    env = {"KUBECONFIG": str(kubeconfig), "POD_NAMESPACE": "relays", "POD_NAME": "tl-trunkline-media-d"}

    relay, http = relays.start("as-its-account", "media-node-c", "nodeExternalIP", env)
    status, body = readyz(http)
    assert status == 503 and "not allowed to get node media-node-c (HTTP 403" in body, body

    cp.kubectl(
        "apply",
        "-n",
        "relays",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": roles}),
    )
    until(
        lambda: readyz(http)[0] == 200, "the relay to read its Node", lambda: readyz(http)[1] + relay.output()
    )
    assert asyncio.run(create_session(relay, "s1")).leg_a.address == "127.0.0.11"

    # No ExternalIP on that Node: the Event on the relay's pod, written with the chart's Role.
    bare, bare_http = relays.start("bare-node", "media-node-d", "nodeExternalIP", env)
    assert readyz(bare_http)[0] == 503

    def event_written() -> bool:
        out = cp.kubectl("get", "events", "-n", "relays", "-o", "json").stdout
        return any(e["reason"] == "MediaAddressUnusable" and "media-node-d" in e["message"]
                   for e in json.loads(out)["items"])  # fmt: skip

    until(event_written, "the Event written as the relay's account", bare.output)
