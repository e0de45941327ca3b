"""`trunkline control`, two `trunkline media` relays registered with it and a `trunkline edge` with
--control (no --media-relay), as real processes: the edge asks control for a relay per call (the less
loaded one), goes around a relay killed with SIGKILL (and control stops offering it once its heartbeats
stop), ends a call whose relay session went inactive with BYE both ways and a CDR saying why, and
answers 503 when there is no relay at all."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from tests.support.ports import free_port
from tests.support.trunkline_up import BIN, Up, manifests
from trunkline.control.v1 import control_pb2, control_pb2_grpc
from trunkline.media.testing import Party, pcmu_stream
from trunkline.media.v1 import media_pb2, media_pb2_grpc
from trunkline.sip.message import Response
from trunkline.sip.sdp import parse_sdp
from trunkline.sip.ua import UserAgent

HEARTBEAT_TIMEOUT = 3.0  # control's; relays heartbeat every 2 s
PORTS_PER_RELAY = 100


def sdp_for(port: int) -> bytes:
    return (
        b"v=0\r\no=peer 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        + f"m=audio {port} RTP/AVP 0\r\n".encode()
        + b"a=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    )


def media_port(sdp: bytes) -> int:
    return parse_sdp(sdp).media[0].port


@dataclass
class Relay:
    relay_id: str
    grpc_port: int
    ports: range
    proc: subprocess.Popen[str]

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


@dataclass
class Plane:
    """control + relays + edge, and a PBX and a carrier (in this process) to call through them."""

    workdir: Path
    carrier_port: int
    control: str = ""
    relays: dict[str, Relay] = field(default_factory=dict)
    procs: list[subprocess.Popen[str]] = field(default_factory=list)
    edge: Up | None = None

    def spawn(self, name: str, *args: str) -> subprocess.Popen[str]:
        log = (self.workdir / f"{name}.log").open("w")
        proc = subprocess.Popen([BIN, *args], stdout=log, stderr=subprocess.STDOUT, text=True)
        self.procs.append(proc)
        return proc

    def logs(self) -> str:
        return "".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}\n"
            for p in sorted(self.workdir.glob("*.log"))
        ) + (self.edge.output() if self.edge else "")

    def start(self, relays: list[str], inactivity_timeout: float = 60.0, *edge_flags: str) -> Plane:
        self.workdir.mkdir(parents=True, exist_ok=True)
        files = self.workdir / "manifests.yaml"
        files.write_text(manifests(self.carrier_port, free_port()))
        self.control = f"127.0.0.1:{free_port()}"
        self.spawn("control", "control", "-f", str(files), "--listen", self.control, "--insecure-grpc",
                   "--heartbeat-timeout", str(HEARTBEAT_TIMEOUT))  # fmt: skip
        low = 42000 + (os.getpid() % 40) * 500  # the relays' port slices, apart from parallel runs
        for i, relay_id in enumerate(relays):
            ports = range(low + i * PORTS_PER_RELAY, low + (i + 1) * PORTS_PER_RELAY)
            port = free_port()
            # No timeout floor: `load` gives relays sessions that never time out.
            proc = self.spawn(relay_id, "media", "--listen", f"127.0.0.1:{port}", "--workers", "1",
                              "--media-listen", "127.0.0.1", "--media-ports", f"{ports[0]}-{ports[-1]}",
                              "--control", self.control, "--relay-id", relay_id, "--insecure-grpc",
                              "--inactivity-timeout", str(inactivity_timeout),
                              "--min-inactivity-timeout", "0")  # fmt: skip
            self.relays[relay_id] = Relay(relay_id, port, ports, proc)
        self.edge = Up(self.workdir / "edge", manifests(self.carrier_port, free_port()),
                       ["--control", self.control, "--insecure-grpc", *edge_flags],
                       command="edge").start()  # fmt: skip
        return self

    def stop(self) -> None:
        if self.edge is not None:
            self.edge.stop()
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def relay_of(self, port: int) -> str:
        """The relay whose media ports `port` is one of."""
        return next(r.relay_id for r in self.relays.values() if port in r.ports)

    async def pick(self, exclude: list[str] | None = None) -> control_pb2.PickRelayResponse | None:
        """What control answers PickRelay now (None: no relay)."""
        async with grpc.aio.insecure_channel(self.control) as channel:
            stub = control_pb2_grpc.ControlStub(channel)
            try:
                return await stub.PickRelay(
                    control_pb2.PickRelayRequest(exclude_relay_ids=exclude or []), timeout=2
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE):
                    return None
                raise

    async def until(self, check: Callable[[], Awaitable[object]], what: str, timeout: float = 15.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not await check():
            assert loop.time() < deadline, f"timed out waiting for {what}\n{self.logs()}"
            await asyncio.sleep(0.1)

    async def registered(self) -> None:
        """Every relay has registered (control picks each when the others are left out)."""

        async def all_known() -> bool:
            for relay_id in self.relays:
                others = [r for r in self.relays if r != relay_id]
                picked = await self.pick(others)
                if picked is None or picked.relay_id != relay_id:
                    return False
            return True

        await self.until(all_known, "the relays to register")

    async def load(self, relay_id: str, sessions: int) -> None:
        """Give a relay `sessions` sessions of its own (not calls), and wait until control sees them."""
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.relays[relay_id].grpc_port}") as channel:
            stub = media_pb2_grpc.MediaRelayStub(channel)
            for i in range(sessions):
                request = media_pb2.CreateSessionRequest(session_id=f"load-{relay_id}-{i}")
                request.inactivity_timeout.FromSeconds(0)  # never times out
                await stub.CreateSession(request, timeout=2)
        others = [r for r in self.relays if r != relay_id]

        async def seen() -> bool:
            picked = await self.pick(others)
            return picked is not None and picked.load.active_sessions == sessions

        await self.until(seen, f"control to see {sessions} sessions on {relay_id}")


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[Plane]:
    running = Plane(tmp_path, free_port())
    yield running
    running.stop()


@dataclass
class Parties:
    """A PBX calling out through the edge and the carrier answering it, each with an RTP socket."""

    carrier_port: int
    pbx_rtp: Party = field(default_factory=Party)
    carrier_rtp: Party = field(default_factory=Party)
    pbx: UserAgent = field(init=False)
    carrier: UserAgent = field(init=False)

    def __post_init__(self) -> None:
        self.pbx = UserAgent(host="127.0.0.2", sdp=sdp_for(self.pbx_rtp.port))  # the trunk's IP ACL
        self.carrier = UserAgent(host="127.0.0.1", sdp=sdp_for(self.carrier_rtp.port))

    async def __aenter__(self) -> Parties:
        await self.carrier.start(self.carrier_port)
        await self.pbx.start(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.pbx.close()
        await self.carrier.close()
        self.pbx_rtp.close()
        self.carrier_rtp.close()
        await asyncio.sleep(0.05)  # the UAs' sockets close on the next loop turns: the port is free after

    async def call(self, edge: Up, during: Callable[[Response], Awaitable[None]]) -> int:
        target = f"sip:+442071234567@{edge.sip}"
        return await self.pbx.call(
            target, ("127.0.0.1", edge.sip_port), from_user="+14155550100", during=during
        )

    async def talk(self, answer: Response, packets: int = 5) -> tuple[int, int]:
        """RTP both ways through the relay; returns the relay ports (PBX side, carrier side)."""
        assert self.carrier.last_invite is not None
        ports = media_port(answer.body), media_port(self.carrier.last_invite.body)
        out_pbx, out_carrier = pcmu_stream(packets, 0x5151, seed=5), pcmu_stream(packets, 0x6161, seed=6)
        for a, b in zip(out_pbx, out_carrier, strict=True):
            self.pbx_rtp.send(a, ports[0])
            self.carrier_rtp.send(b, ports[1])
        assert await self.carrier_rtp.recv_all(packets) == out_pbx
        assert await self.pbx_rtp.recv_all(packets) == out_carrier
        return ports


async def call_via(plane: Plane, parties: Parties | None = None) -> str:
    """Place one call with audio both ways (from `parties`, or new ones); the relay it went through
    (both relay ports are on it)."""
    assert plane.edge is not None
    if parties is None:
        async with Parties(plane.carrier_port) as fresh:
            return await call_via(plane, fresh)
    relays: list[str] = []

    async def during(answer: Response) -> None:
        relays.extend(plane.relay_of(port) for port in await parties.talk(answer))

    status = await parties.call(plane.edge, during)
    assert status == 200, plane.logs()
    assert len(relays) == 2 and relays[0] == relays[1], relays
    return relays[0]


async def test_each_call_goes_to_the_less_loaded_relay(plane: Plane) -> None:
    plane.start(["relay-a", "relay-b"])
    await plane.registered()
    await plane.load("relay-a", 3)
    assert await call_via(plane) == "relay-b"
    await plane.load("relay-b", 6)  # now relay-a carries less
    assert await call_via(plane) == "relay-a"
    assert plane.edge is not None
    [first, second] = plane.edge.wait_cdrs(2)
    assert first["status"] == 200 and second["status"] == 200


async def test_a_relay_killed_mid_call_is_gone_around_and_no_longer_picked(plane: Plane) -> None:
    plane.start(["relay-a", "relay-b"])
    await plane.registered()
    first = await plane.pick()
    assert first is not None
    doomed = plane.relays[first.relay_id]
    survivor = next(r for r in plane.relays.values() if r is not doomed)
    assert plane.edge is not None
    async with Parties(plane.carrier_port) as parties:

        async def during(answer: Response) -> None:
            ports = await parties.talk(answer)
            assert {plane.relay_of(p) for p in ports} == {doomed.relay_id}
            doomed.kill()  # mid-call, while control still counts it healthy
            # A new call at once: the edge tries the dead relay, then takes the call to the other one.
            assert await call_via(plane, parties) == survivor.relay_id

        status = await parties.call(plane.edge, during)  # ends with BYE: no relay to delete from
    assert status == 200, plane.logs()
    cdrs = plane.edge.wait_cdrs(2)
    assert [c["status"] for c in cdrs] == [200, 200], cdrs
    # The second call went to the survivor either way: through a refusal by the dead relay ("media
    # relay refused a session"), or, on a slow machine, because control had already dropped it.

    async def dropped() -> bool:  # the dead relay's heartbeats stopped: control offers only the other
        picked = await plane.pick()
        return (
            picked is not None
            and picked.relay_id == survivor.relay_id
            and not await plane.pick([survivor.relay_id])
        )

    await plane.until(dropped, "control to drop the dead relay", timeout=HEARTBEAT_TIMEOUT + 5)
    for _ in range(2):
        assert await call_via(plane) == survivor.relay_id
    assert plane.edge.proc is not None and plane.edge.proc.poll() is None


async def test_a_session_gone_inactive_ends_the_call_with_bye_both_ways(plane: Plane) -> None:
    plane.start(["relay-a"], inactivity_timeout=1.0)
    await plane.registered()
    assert plane.edge is not None
    async with Parties(plane.carrier_port) as parties:

        async def during(answer: Response) -> None:
            await parties.talk(answer)  # media flows, then both ends fall silent

            async def both_got_bye() -> bool:
                return parties.pbx.byes == 1 and parties.carrier.byes == 1

            await plane.until(both_got_bye, "the edge's BYE to both ends", timeout=10)

        status = await parties.call(plane.edge, during)
    assert status == 200, plane.logs()
    [cdr] = plane.edge.wait_cdrs(1)
    assert cdr["hung_up"] == "edge" and cdr["reason"] == "media inactive", cdr
    assert 0.9 < float(str(cdr["duration"])) < 5, cdr


async def test_no_relay_registered_means_503(plane: Plane) -> None:
    plane.start([])
    assert plane.edge is not None
    async with Parties(plane.carrier_port) as parties:
        status = await parties.call(plane.edge, parties.talk)
        assert parties.carrier.last_invite is None  # refused before any carrier was tried
    assert status == 503, plane.logs()
    [cdr] = plane.edge.wait_cdrs(1)
    assert cdr["status"] == 503, cdr


async def test_a_relay_that_stays_dead_takes_its_calls_with_it(plane: Plane) -> None:
    plane.start(["relay-a"], 60.0, "--relay-lost-after", "2")
    await plane.registered()
    assert plane.edge is not None
    async with Parties(plane.carrier_port) as parties:

        async def during(answer: Response) -> None:
            await parties.talk(answer)
            plane.relays["relay-a"].kill()  # no inactivity event will ever come from it

            async def both_got_bye() -> bool:
                return parties.pbx.byes == 1 and parties.carrier.byes == 1

            await plane.until(both_got_bye, "the edge's BYE to both ends", timeout=15)

        status = await parties.call(plane.edge, during)
    assert status == 200, plane.logs()
    [cdr] = plane.edge.wait_cdrs(1)
    assert cdr["hung_up"] == "edge" and cdr["reason"] == "media relay lost", cdr
    assert 1.9 < float(str(cdr["duration"])) < 10, cdr
