"""mTLS on the internal gRPC planes, with real `trunkline control`, `media` and `edge` processes: every
RPC refuses a caller without a certificate from the installation's CA, and a caller whose role may not
call it; a relay speaks only for its own id; only edges read Secrets; plaintext stays on loopback."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.support.certs import write_plane_certs
from tests.support.media_relay import BIN, RelayProcess, media_ports
from tests.support.ports import free_port
from tests.support.processes import http_ready
from tests.support.trunkline_up import Up, manifests
from tests.support.wait import wait_for
from trunkline.control.client import RelayPicker
from trunkline.control.server import ControlServer
from trunkline.control.v1 import control_pb2, control_pb2_grpc
from trunkline.core.grpc_tls import GrpcSecurity
from trunkline.core.pki import server_name
from trunkline.media.v1 import media_pb2, media_pb2_grpc

pytestmark = pytest.mark.integration

IDENTITIES = (
    "control/control-1",
    "relay/relay-a",
    "relay/relay-b",
    "relay/pool-*",
    "edge/edge-1",
    "operator/operator-1",
)
REFUSED = {grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED}


class Plane:
    """Certificates, a control process and a relay (relay-a) registered with it, both on mTLS."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.flags = write_plane_certs(workdir / "certs", *IDENTITIES)
        # The same names from a CA nobody trusts: a stranger's certificate.
        self.strangers = write_plane_certs(workdir / "stranger", "edge/edge-1", "operator/operator-1")
        self.control = f"127.0.0.1:{free_port()}"
        self.procs: list[subprocess.Popen[str]] = []
        self.relay: RelayProcess | None = None

    def security(self, identity: str, stranger: bool = False) -> GrpcSecurity:
        flags = (self.strangers if stranger else self.flags)[identity]
        return GrpcSecurity(Path(flags[1]), Path(flags[3]), Path(flags[5]))

    def control_log(self) -> str:
        return (self.workdir / "control.log").read_text(errors="replace")

    def start(self) -> Plane:
        files = self.workdir / "manifests.yaml"
        files.write_text(manifests(free_port(), free_port()))
        log = (self.workdir / "control.log").open("w")
        self.procs.append(
            subprocess.Popen(
                [
                    BIN,
                    "control",
                    "-f",
                    str(files),
                    "--listen",
                    self.control,
                    *self.flags["control/control-1"],
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
        wait_for(lambda: "control listening" in self.control_log(), "control listening")
        self.relay = RelayProcess(
            self.workdir / "relay",
            [*self.flags["relay/relay-a"], "--control", self.control, "--relay-id", "relay-a"],
        ).start()
        return self

    def stop(self) -> None:
        if self.relay is not None:
            self.relay.stop()
        for proc in self.procs:
            proc.terminate()
            proc.wait(timeout=15)


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    plane = Plane(tmp_path_factory.mktemp("planes")).start()
    try:
        yield plane
    finally:
        plane.stop()


async def call(
    channel: grpc.aio.Channel, method: str, request: Any, timeout: float = 30, refused: bool = False
) -> Any:
    """One RPC; a streaming one is read up to its first message.

    A Sessions stream that is expected to be refused is only read, never written: the server ends it
    before reading, and a client write racing that end makes grpc's asyncio client report INTERNAL
    instead of the server's status (grpc/grpc#36066)."""
    control = request.DESCRIPTOR.full_name.startswith("trunkline.control.")
    stub = control_pb2_grpc.ControlStub(channel) if control else media_pb2_grpc.MediaRelayStub(channel)
    rpc = getattr(stub, method)
    if method in ("WatchConfig", "WatchEvents", "Sessions"):
        stream = rpc(timeout=timeout) if method == "Sessions" else rpc(request, timeout=timeout)
        try:
            if method == "Sessions" and not refused:
                await stream.write(request)
            return await stream.read()
        finally:
            stream.cancel()
    return await rpc(request, timeout=timeout)


async def code_of(
    channel: grpc.aio.Channel, method: str, request: Any, refused: bool = True
) -> grpc.StatusCode:
    """The status the call ends with. A refusal comes at once; an accepted watch may send nothing (no
    session events): when no refusal is expected, a deadline of a few seconds ends it (not refused)."""
    try:
        await call(channel, method, request, timeout=30 if refused else 5, refused=refused)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


CONTROL_RPCS = {
    "Register": control_pb2.RegisterRequest(
        relay_id="relay-a", grpc_address="127.0.0.1:1", media_address="127.0.0.1"
    ),
    "Heartbeat": control_pb2.HeartbeatRequest(relay_id="relay-a"),
    "PickRelay": control_pb2.PickRelayRequest(),
    "WatchConfig": control_pb2.WatchConfigRequest(),
}
CONTROL_ALLOWED = {
    "Register": {"relay"},
    "Heartbeat": {"relay"},
    "PickRelay": {"edge"},
    "WatchConfig": {"edge", "relay"},
}
MEDIA_RPCS = {
    "CreateSession": media_pb2.CreateSessionRequest(session_id="probe"),
    "UpdateSession": media_pb2.UpdateSessionRequest(session_id="probe"),
    "DeleteSession": media_pb2.DeleteSessionRequest(session_id="probe"),
    "DeleteSessions": media_pb2.DeleteSessionsRequest(session_ids=["probe"]),
    "GetSessionStats": media_pb2.GetSessionStatsRequest(session_id="probe"),
    "WatchEvents": media_pb2.WatchEventsRequest(),
    "Sessions": media_pb2.SessionCommands(
        commands=[
            media_pb2.SessionCommand(id=1, delete=media_pb2.DeleteSessionsRequest(session_ids=["probe"]))
        ]
    ),
    "Drain": media_pb2.DrainRequest(),
}
MEDIA_ALLOWED = {name: {"operator"} if name == "Drain" else {"edge"} for name in MEDIA_RPCS}
ROLES = {"relay": "relay/relay-b", "edge": "edge/edge-1", "operator": "operator/operator-1"}


async def unauthenticated_codes(plane: Plane, target: str, role: str, method: str, request: Any) -> list[str]:
    """What a caller without a trusted certificate gets: plaintext, TLS without a client certificate,
    and a certificate from another CA. None of them reaches the servicer: the TLS handshake fails."""
    flags = plane.flags["edge/edge-1"]
    ca = Path(flags[1]).read_bytes()
    options = [("grpc.ssl_target_name_override", server_name(role))]
    channels = [
        grpc.aio.insecure_channel(target),
        grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(ca), options=options),
        plane.security("edge/edge-1", stranger=True).channel(target, role),
    ]
    codes = []
    for channel in channels:
        async with channel:
            codes.append((await code_of(channel, method, request)).name)
    return codes


async def test_every_control_rpc_refuses_strangers_and_wrong_roles(plane: Plane) -> None:
    for method, request in CONTROL_RPCS.items():
        codes = await unauthenticated_codes(plane, plane.control, "control", method, request)
        assert codes == ["UNAVAILABLE"] * 3, (method, codes)
        for role, identity in ROLES.items():
            # relay-b may register and heartbeat, but only as relay-b (these requests name relay-a).
            allowed = role in CONTROL_ALLOWED[method] and not (role == "relay" and method != "WatchConfig")
            async with plane.security(identity).channel(plane.control, "control") as channel:
                code = await code_of(channel, method, request, refused=not allowed)
            if allowed:
                assert code not in REFUSED, (method, role, code)
            else:
                assert code is grpc.StatusCode.PERMISSION_DENIED, (method, role, code)


async def test_every_media_rpc_refuses_strangers_and_wrong_roles(plane: Plane) -> None:
    assert plane.relay is not None
    target = plane.relay.target
    for method, request in MEDIA_RPCS.items():
        codes = await unauthenticated_codes(plane, target, "relay", method, request)
        assert codes == ["UNAVAILABLE"] * 3, (method, codes)
        for role, identity in ROLES.items():
            if method == "Drain" and role == "operator":
                continue  # below, last: a drained relay takes no new sessions
            async with plane.security(identity).channel(target, "relay") as channel:
                code = await code_of(channel, method, request, refused=role not in MEDIA_ALLOWED[method])
            if role in MEDIA_ALLOWED[method]:
                assert code not in REFUSED, (method, role, code)
            else:
                assert code is grpc.StatusCode.PERMISSION_DENIED, (method, role, code)
    # The edge's session calls do what they did before mTLS.
    async with plane.security("edge/edge-1").channel(target, "relay") as channel:
        stub = media_pb2_grpc.MediaRelayStub(channel)
        created = await stub.CreateSession(media_pb2.CreateSessionRequest(session_id="call-1"), timeout=10)
        assert created.leg_a.rtp_port and created.leg_b.rtp_port
        await stub.DeleteSession(media_pb2.DeleteSessionRequest(session_id="call-1"), timeout=10)


async def test_the_operator_drains_a_relay(tmp_path: Path, plane: Plane) -> None:
    """On a relay of its own (the module's relay keeps serving): Drain works for the operator only."""
    low, high = media_ports()
    relay = RelayProcess(tmp_path / "relay", [*plane.flags["relay/relay-b"]], ports=(low + 5000, high + 5000))
    relay.start()
    try:
        async with plane.security("operator/operator-1").channel(relay.target, "relay") as channel:
            answer = await media_pb2_grpc.MediaRelayStub(channel).Drain(media_pb2.DrainRequest(), timeout=10)
        assert answer.active_sessions == 0
        async with plane.security("edge/edge-1").channel(relay.target, "relay") as channel:
            code = await code_of(channel, "CreateSession", media_pb2.CreateSessionRequest(session_id="late"))
        assert code is grpc.StatusCode.UNAVAILABLE  # draining: the operator's call took effect
    finally:
        relay.stop()


async def test_only_edges_read_secrets(plane: Plane) -> None:
    wanted = control_pb2.WatchConfigRequest(kinds=["Trunk", "Secret"])
    async with plane.security("edge/edge-1").channel(plane.control, "control") as channel:
        snapshot = await call(channel, "WatchConfig", wanted)
    assert "Secret" in {r.kind for r in snapshot.snapshot.resources}
    async with plane.security("relay/relay-a").channel(plane.control, "control") as channel:
        assert await code_of(channel, "WatchConfig", wanted) is grpc.StatusCode.PERMISSION_DENIED
        # Without Secrets a relay gets the configuration.
        snapshot = await call(channel, "WatchConfig", control_pb2.WatchConfigRequest(kinds=["Trunk"]))
    assert {r.kind for r in snapshot.snapshot.resources} == {"Trunk"}


async def test_a_rogue_relay_cannot_speak_for_another(plane: Plane) -> None:
    register = control_pb2.RegisterRequest(
        relay_id="relay-a", grpc_address="127.0.0.9:7100", media_address="127.0.0.9"
    )
    async with plane.security("relay/relay-b").channel(plane.control, "control") as channel:
        stub = control_pb2_grpc.ControlStub(channel)
        for _ in range(3):  # refused each time, logged once
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Register(register, timeout=10)
            assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
            assert "relay-b" in (refused.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Heartbeat(control_pb2.HeartbeatRequest(relay_id="relay-a"), timeout=10)
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    # A workload's wildcard certificate (as the operator issues for a relay Deployment) speaks for its
    # pods' ids, and for no other relay.
    async with plane.security("relay/pool-*").channel(plane.control, "control") as channel:
        stub = control_pb2_grpc.ControlStub(channel)
        pod = control_pb2.RegisterRequest(
            relay_id="pool-7f9c", grpc_address="127.0.0.9:7100", media_address="127.0.0.9"
        )
        await stub.Register(pod, timeout=10)
        assert (await stub.Heartbeat(control_pb2.HeartbeatRequest(relay_id="pool-7f9c"), timeout=10)).known
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Register(register, timeout=10)
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    # relay-a's registration stands: PickRelay still hands out the real relay's address.
    assert plane.relay is not None
    async with plane.security("edge/edge-1").channel(plane.control, "control") as channel:
        picked = await control_pb2_grpc.ControlStub(channel).PickRelay(
            control_pb2.PickRelayRequest(), timeout=10
        )
    assert (picked.relay_id, picked.grpc_address) == ("relay-a", plane.relay.target)
    # Refused five times (here and by the test of every RPC), with the same reason: logged once.
    reason = "'relay-b' may not speak for relay 'relay-a'"
    lines = [line for line in plane.control_log().splitlines() if reason in line]
    assert len(lines) == 1, lines


def test_an_edge_with_a_relay_certificate_gets_no_configuration(tmp_path: Path, plane: Plane) -> None:
    """A real edge process: with its own certificate it takes the configuration (Secrets included);
    with a relay's, control refuses the watch and the edge never applies one."""
    good = Up(tmp_path / "edge", manifests(free_port(), free_port()),
              ["--control", plane.control, *plane.flags["edge/edge-1"]], command="edge").start()  # fmt: skip
    try:
        wait_for(lambda: "configuration applied" in good.output(), "the edge's configuration from control")
    finally:
        good.stop()
    relay_flags = plane.flags["relay/relay-a"]
    wrong = Up(tmp_path / "wrong", manifests(free_port(), free_port()),
               ["--control", plane.control, *relay_flags], command="edge").start(ready=False)  # fmt: skip
    try:
        wait_for(lambda: "PERMISSION_DENIED" in wrong.output(), "control refusing the edge's watch")
        assert "configuration applied" not in wrong.output()
        assert not http_ready(f"http://127.0.0.1:{wrong.http_port}/readyz")  # its Service sends it nothing
    finally:
        wrong.stop()


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=60)


def test_components_refuse_plaintext_beyond_loopback_and_need_certificates(
    tmp_path: Path, plane: Plane
) -> None:
    files = tmp_path / "m.yaml"
    files.write_text(manifests(free_port(), free_port()))
    cases = {
        "control": ["control", "-f", str(files), "--listen", "0.0.0.0:0", "--insecure-grpc"],
        "media": ["media", "--listen", "0.0.0.0:0", "--insecure-grpc", "--workers", "1"],
        "media to control": ["media", "--listen", "127.0.0.1:0", "--control", "192.0.2.1:7000",
                             "--insecure-grpc"],
        "edge": ["edge", "-f", str(files), "--control", "192.0.2.1:7000", "--insecure-grpc",
                 "--sip-listen", f"127.0.0.1:{free_port()}", "--http-listen", f"127.0.0.1:{free_port()}"],
    }  # fmt: skip
    for name, args in cases.items():
        result = run(*args)
        assert result.returncode == 1, (name, result.stdout, result.stderr)
        assert "--insecure-grpc is accepted only" in result.stdout + result.stderr, (name, result)
    for name, args in {
        "control": ["control", "-f", str(files), "--listen", "127.0.0.1:0"],
        "media": ["media", "--listen", "127.0.0.1:0", "--workers", "1"],
        "edge": [
            "edge",
            "-f",
            str(files),
            "--control",
            plane.control,
            "--sip-listen",
            f"127.0.0.1:{free_port()}",
        ],
    }.items():
        result = run(*args)
        assert result.returncode == 1, (name, result.stdout, result.stderr)
        assert "needs --grpc-ca, --grpc-cert and --grpc-key" in result.stdout + result.stderr, (name, result)


async def test_a_rotated_certificate_is_used_from_the_next_connection(tmp_path: Path) -> None:
    """The server re-reads its files when they change (as a Secret volume updates them) and a picker
    reopens its channel: after a rotation to a new CA only the new certificates get in."""
    live, before, after = tmp_path / "live", tmp_path / "before", tmp_path / "after"
    flags = write_plane_certs(live, "control/control-1", "edge/edge-1")
    shutil.copytree(live, before)  # what a component that missed the rotation still holds
    write_plane_certs(after, "control/control-1", "edge/edge-1")  # another CA

    def security(directory: Path, identity: str) -> GrpcSecurity:
        return GrpcSecurity(*[directory / Path(p).name for p in flags[identity][1::2]])

    server = ControlServer("127.0.0.1:0", security=security(live, "control/control-1"))
    await server.start()
    target = f"127.0.0.1:{server.port}"
    picker = RelayPicker(target, timeout=10, security=security(live, "edge/edge-1"))
    try:
        assert await picker.pick() is None  # in (NOT_FOUND: no relay registered)
        first_channel = picker._channel
        for path in after.iterdir():
            (live / path.name).write_bytes(path.read_bytes())
        assert await picker.pick() is None  # both ends on the new files
        assert picker._channel is not first_channel  # a new connection, not the old one kept
        async with security(before, "edge/edge-1").channel(target, "control") as channel:
            code = await code_of(channel, "PickRelay", control_pb2.PickRelayRequest())
        assert code is grpc.StatusCode.UNAVAILABLE  # the old CA's certificate no longer gets in
    finally:
        await picker.close()
        await server.stop(0)
