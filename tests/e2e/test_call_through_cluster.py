"""A call through control fed by a real kube-apiserver: the resources are `kubectl apply`d, control
runs as the operator's Deployment runs it (`--all-namespaces`, here with the fixture's KUBECONFIG), an
edge and a media relay take their configuration / registration from control, SIPp places the calls.
A `kubectl apply` that takes "+44" away from the trunk turns the next call into a 403 with no restart.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.support import sipp
from tests.support.certs import write_plane_certs
from tests.support.ports import free_port
from tests.support.wait import wait_for
from trunkline.control.kube_source import KubeSource, connect
from trunkline.control.store import ALL_KINDS, ConfigStore, Watch
from trunkline.control.v1 import control_pb2, control_pb2_grpc

from .cluster import REPO_ROOT, ControlPlane

BIN = str(Path(sys.executable).parent / "trunkline")
CRDS = REPO_ROOT / "charts" / "trunkline" / "crds"

# Other e2e tests apply examples/ (trunk "acme" admitting 127.0.0.2, DIDs +1415555010x, a default-route
# carrier) into their namespaces of the same API server, and control here watches every namespace. So
# this test's trunk, caller address, DID and carrier prefix are its own: no lookup can land elsewhere.
TRUNK = "calls-e2e"
PBX_IP = "127.0.0.12"
DID_NUMBER = "+14155550190"
CALLEE = "+442071234567"


def manifests(carrier_port: int, allowed: list[str]) -> str:
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Secret",
         "metadata": {"name": "calls-e2e-creds", "labels": {"trunkline.io/credentials": ""}},
         "stringData": {"username": "calls-e2e", "password": "s3cret-calls"}},
        {"apiVersion": "trunkline.io/v1alpha1", "kind": "Carrier", "metadata": {"name": "pstn-calls-e2e"},
         "spec": {"gateways": [{"uri": f"sip:127.0.0.1:{carrier_port}"}], "prefixes": ["+44"],
                  "inboundCidrs": ["127.0.0.1/32"]}},
        {"apiVersion": "trunkline.io/v1alpha1", "kind": "Trunk", "metadata": {"name": TRUNK},
         "spec": {"auth": {"digest": {"credentialsSecret": "calls-e2e-creds"}, "ipAcl": [f"{PBX_IP}/32"]},
                  "outbound": {"allowedPrefixes": allowed}}},
        {"apiVersion": "trunkline.io/v1alpha1", "kind": "DID", "metadata": {"name": "calls-e2e-main"},
         "spec": {"number": DID_NUMBER, "trunkRef": TRUNK}},
    ]  # fmt: skip
    return "\n---\n".join(json.dumps(d) for d in docs)


def http_ok(port: int, path: str = "/readyz") -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


class Processes:
    """trunkline processes, each logging to its own file; all stopped on exit."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        with (self.workdir / f"{name}.log").open("wb") as out:
            # cwd outside the repo: its `operator/` folder must not shadow the standard library's.
            proc = subprocess.Popen([BIN, *args], cwd=self.workdir, env=self.env, stdout=out,
                                    stderr=subprocess.STDOUT)  # fmt: skip
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def alive(self, name: str) -> bool:
        proc = self.procs[name]
        assert proc.poll() is None, f"{name} exited with {proc.returncode}:\n{self.log(name)[-4000:]}"
        return True

    def logs(self) -> str:
        return "".join(f"\n---- {name} log (tail) ----\n{self.log(name)[-3000:]}" for name in self.procs)

    def stop_all(self) -> None:
        for proc in reversed(self.procs.values()):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextmanager
def processes(workdir: Path, env: dict[str, str]) -> Iterator[Processes]:
    running = Processes(workdir, env)
    try:
        yield running
    finally:
        running.stop_all()
        print(running.logs())


def picked_relay(control: str, flags: list[str]) -> str | None:
    """The relay control hands out (PickRelay only considers registered relays with a fresh heartbeat),
    asked as an edge (`flags`: its --grpc-ca/--grpc-cert/--grpc-key)."""
    ca, cert, key = (Path(flags[i]).read_bytes() for i in (1, 3, 5))
    credentials = grpc.ssl_channel_credentials(ca, key, cert)
    options = [("grpc.ssl_target_name_override", "control.trunkline")]
    with grpc.secure_channel(control, credentials, options=options) as channel:
        stub = control_pb2_grpc.ControlStub(channel)  # type: ignore[no-untyped-call]
        try:
            return str(stub.PickRelay(control_pb2.PickRelayRequest(), timeout=2).relay_id)
        except grpc.RpcError:
            return None


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("calls")


@pytest.fixture(scope="module")
def certs(workdir: Path) -> dict[str, list[str]]:
    """mTLS between the processes, as in a cluster: each its own certificate and role."""
    return write_plane_certs(workdir / "certs", "control/control", "relay/calls-e2e-relay", "edge/edge")


@pytest.fixture(scope="module")
def procs(workdir: Path, control_plane: ControlPlane) -> Iterator[Processes]:
    with processes(workdir, control_plane.env()) as running:
        yield running


@pytest.fixture(scope="module")
def carrier_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def namespace(control_plane: ControlPlane, workdir: Path, carrier_port: int) -> Iterator[str]:
    """The CRDs (as the chart ships them) and this test's resources, in a namespace of its own."""
    cp = control_plane
    cp.kubectl("apply", "-f", str(CRDS))
    cp.kubectl("wait", "--for=condition=Established", "--timeout=30s",
               *(f"crd/{plural}.trunkline.io" for plural in ("trunks", "dids", "carriers")))  # fmt: skip
    ns = f"calls-{secrets.token_hex(3)}"
    cp.kubectl("create", "namespace", ns)
    manifest = workdir / "trunk.yaml"
    manifest.write_text(manifests(carrier_port, ["+1", "+44"]))
    cp.kubectl("apply", "-n", ns, "-f", str(manifest))
    yield ns
    # Other tests' operators watch every namespace: leave them nothing of ours to reconcile.
    cp.kubectl("delete", "-n", ns, "-f", str(manifest), "--ignore-not-found", "--wait=false")


@pytest.fixture(scope="module")
def control(procs: Processes, namespace: str, certs: dict[str, list[str]]) -> str:
    """`trunkline control` as the operator's Deployment runs it, on the fixture's KUBECONFIG."""
    address, http = f"127.0.0.1:{free_port()}", free_port()
    procs.start("control", "control", "--listen", address, "--all-namespaces", *certs["control/control"],
                "--http-listen", f"127.0.0.1:{http}")  # fmt: skip
    # Ready only once everything is listed and gRPC serves.
    wait_for(lambda: procs.alive("control") and http_ok(http), "control /readyz")
    return address


@pytest.fixture(scope="module")
def relay(procs: Processes, control: str, certs: dict[str, list[str]]) -> str:
    """A media relay registered with control: the edge asks control for it on every call."""
    low = free_port()
    procs.start("media", "media", "--listen", "127.0.0.1:0", "--media-listen", "127.0.0.1",
                "--media-ports", f"{low}-{low + 99}", "--workers", "1",
                "--control", control, "--relay-id", "calls-e2e-relay",
                *certs["relay/calls-e2e-relay"])  # fmt: skip
    # PickRelay hands out only a registered relay with a fresh heartbeat: control sees it healthy.
    return str(
        wait_for(
            lambda: procs.alive("media") and picked_relay(control, certs["edge/edge"]), "the relay registered"
        )
    )


def test_media_relay_registers_with_control(relay: str) -> None:
    assert relay == "calls-e2e-relay"


def test_call_through_control_fed_by_the_api_server(
    control_plane: ControlPlane, procs: Processes, control: str, relay: str, namespace: str,
    carrier_port: int, workdir: Path, tmp_path: Path, certs: dict[str, list[str]],
) -> None:  # fmt: skip
    edge_sip, edge_http = free_port(), free_port()
    carrier = sipp.uas(tmp_path / "carrier", "127.0.0.1", carrier_port)
    try:
        procs.start("edge", "edge", "--control", control, *certs["edge/edge"],
                    "--sip-listen", f"127.0.0.1:{edge_sip}", "--http-listen", f"127.0.0.1:{edge_http}",
                    "--grace", "1")  # fmt: skip
        wait_for(lambda: procs.alive("edge") and http_ok(edge_http), "edge /readyz")
        # The first snapshot is complete: control serves only after its first full list.
        wait_for(lambda: "configuration applied" in procs.log("edge"), "the edge's first configuration")

        first = sipp.uac(tmp_path / "call-1", f"127.0.0.1:{edge_sip}", PBX_IP, CALLEE, caller=DID_NUMBER)
        assert first.ok, first.output + procs.logs()

        # A live change: "+44" is no longer allowed. Nothing restarts.
        applied = procs.log("edge").count("configuration applied")
        manifest = workdir / "trunk.yaml"
        manifest.write_text(manifests(carrier_port, ["+1"]))
        control_plane.kubectl("apply", "-n", namespace, "-f", str(manifest))
        wait_for(lambda: procs.log("edge").count("configuration applied") > applied,
                 "the edge to apply the changed trunk")  # fmt: skip

        second = sipp.uac(tmp_path / "call-2", f"127.0.0.1:{edge_sip}", PBX_IP, CALLEE, caller=DID_NUMBER)
        assert not second.ok, "the call to +44 went through after +44 was taken away" + procs.logs()
        assert "403" in second.output, second.output
        edge_log = procs.log("edge")
        assert f"trunk={TRUNK}" in edge_log and "rule=allowedPrefixes" in edge_log, edge_log[-3000:]
        for name in ("control", "edge"):
            procs.alive(name)
        control_log = procs.log("control")
        assert "s3cret-calls" not in control_log and "Traceback" not in control_log, control_log
    finally:
        sipp.stop(carrier)


async def next_change(watch: Watch, timeout: float = 15.0) -> tuple[bool, str, str]:
    change = await asyncio.wait_for(watch.next(), timeout)
    return (change.deleted, change.entry.kind, change.entry.name)


async def test_source_follows_the_api_server_and_recovers(
    control_plane: ControlPlane, namespace: str
) -> None:
    """The source in this process, one namespace: events, Secrets by reference, a cut watch."""

    def kubectl(*args: str, input: str | None = None) -> Awaitable[subprocess.CompletedProcess[str]]:
        return asyncio.to_thread(control_plane.kubectl, *args, "-n", namespace, input=input)

    store = ConfigStore()
    source = KubeSource(store, namespace, connect())
    source.start()
    try:
        await asyncio.wait_for(source.synced.wait(), 15)
        assert {(type(i).__name__, i.metadata.name) for i in store.items()} == {
            ("Secret", "calls-e2e-creds"), ("Carrier", "pstn-calls-e2e"), ("Trunk", TRUNK),
            ("DID", "calls-e2e-main"),
        }  # fmt: skip
        watch, _, _ = store.watch(ALL_KINDS)

        unrelated = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "unrelated"},
                     "stringData": {"token": "not-for-edges"}}  # fmt: skip
        await kubectl("apply", "-f", "-", input=json.dumps(unrelated))
        extra = {"apiVersion": "trunkline.io/v1alpha1", "kind": "DID",
                 "metadata": {"name": "calls-e2e-extra"},
                 "spec": {"number": "+14155550191", "trunkRef": TRUNK}}  # fmt: skip
        await kubectl("apply", "-f", "-", input=json.dumps(extra))
        # The unreferenced Secret never shows up: the first change is the DID.
        assert await next_change(watch) == (False, "DID", "calls-e2e-extra")
        await kubectl("delete", "did", "calls-e2e-extra")
        assert await next_change(watch) == (True, "DID", "calls-e2e-extra")

        # Cut every watch connection; what changes meanwhile arrives through the fresh list.
        for response in list(source._responses.values()):
            response.shutdown()
        await kubectl("apply", "-f", "-", input=json.dumps(extra))
        assert await next_change(watch) == (False, "DID", "calls-e2e-extra")
        assert store.get("Secret", namespace, "unrelated") is None

        # Control reads only Secrets labelled as credentials: without the label it is gone.
        await kubectl("label", "secret", "calls-e2e-creds", "trunkline.io/credentials-")
        assert await next_change(watch) == (True, "Secret", "calls-e2e-creds")
        await kubectl("label", "secret", "calls-e2e-creds", "trunkline.io/credentials=")
        assert await next_change(watch) == (False, "Secret", "calls-e2e-creds")
    finally:
        await source.stop()
        await asyncio.to_thread(control_plane.kubectl, "delete", "did", "calls-e2e-extra", "-n", namespace,
                                "--ignore-not-found")  # fmt: skip
