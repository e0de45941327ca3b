"""Media through a relay: every SDP that crosses the edge is rewritten to point at relay ports.

One relay session per call, under the call's key; relay leg "a" faces the caller, leg "b" the callee.
Before the relay is asked, each SDP meets the trunk's rules (`sdp_rules`): connection addresses the
media address policy accepts (else 488, and no session), the trunk's codecs in its order (none in
common: 488). A re-offer with `c=0.0.0.0` (RFC 2543 hold) keeps the party's previous address at the
relay and goes on as sendonly/inactive. Each leg tells the relay its party's signalling source IP
(`LegSpec.signalling_address`: the caller's INVITE source, the callee's address we send to), which
the relay's strict source trusts.
The sessions' commands (create, update, delete) go to a relay on one Sessions stream
(`relay_stream`). Calls that end within a few ms of each other have their sessions deleted in one
DeleteSessions command (DELETE_WINDOW); each call's release waits for it.
An SDP from one leg tells the relay where that party listens (UpdateSession), and goes on to the other
leg naming the relay's ports that face it. Codecs are limited to the trunk's list (telephone-event
always kept).

Which relay: a fixed one (`trunkline edge --media-relay`, the relay inside `trunkline up`), or per call
the one the control service picks (PickRelay: healthy, least loaded); a relay that refuses a new
session (dead, draining, full) is left out of the next pick. The edge keeps one gRPC channel per relay
it uses and watches that relay's events: a session the relay ended for inactivity ends its call
(`on_inactive`: BYE both ways). The relay's address is in the call's snapshot, so an edge that adopts
the call goes on with the same relay.

SRTP (RFC 4568 SDES) is spoken only on the trunk's side, per `spec.media.srtp`; the carrier side is
plain RTP. SRTP the PBX offers (outbound calls) is bridged; on inbound calls the relay keys the PBX's
leg before the PBX answers (LegSpec.want_srtp): with `required` the offer to the PBX is RTP/SAVP with
a=crypto and a plain answer is refused (488, the call does not connect); with `optional` it is
RTP/AVP with a=crypto (best-effort SRTP, as common SBCs do): a PBX that answers with a key gets SRTP,
one that ignores it plain RTP. Towards a PBX that offered RTP/SAVP itself the answer is RTP/SAVP.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from trunkline.control.client import Backoff, RelayPicker
from trunkline.core.addresses import MediaAddressPolicy
from trunkline.core.grpc_tls import GrpcSecurity
from trunkline.core.logs import event
from trunkline.core.models import SrtpMode
from trunkline.core.net import ConfigError
from trunkline.edge.call import Call, MediaError
from trunkline.edge.cdr import Direction
from trunkline.edge.relay_stream import RelayCalls, RelayError
from trunkline.edge.sdp_rules import (
    SRTP_SUITE,
    apply_codecs,
    check_addresses,
    hold_direction,
    is_hold,
    parse_audio_offer,
)
from trunkline.media.v1 import media_pb2, media_pb2_grpc
from trunkline.sip.sdp import SdpMedia, SessionDescription

log = logging.getLogger("trunkline.edge.media")

PICK_ATTEMPTS = 3  # relays tried for one new call
IDLE_CLOSE = 60.0  # seconds a relay with no session of ours keeps its channel (relay pods come and go)
# A relay that answers this to CreateSession may be dead, draining or full: another may take the call.
TRY_ANOTHER = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}
INACTIVE = "media inactive"
RELAY_LOST = "media relay lost"
GUARD_INTERVAL = 5.0  # seconds between health checks of a relay we have sessions on
# Sessions of calls that end within this window go to their relay in one DeleteSessions call: one
# RPC per call end cost each side about as much as the rest of the call's media work.
DELETE_WINDOW = 0.01
DELETE_BATCH = 256  # sessions in one DeleteSessions: a relay refuses more than MAX_DELETE_IDS


@dataclass
class _Session:
    relay: str  # gRPC address of the relay that holds it
    allocations: dict[str, media_pb2.LegAllocation] = field(default_factory=dict)
    crypto_tags: dict[str, str] = field(default_factory=dict)  # per leg: the tag its party's SDES used
    protos: dict[str, str] = field(default_factory=dict)  # per leg: the profile its party's SDP used
    gone: bool = False  # the relay ended it (inactivity): nothing left to update or delete


@dataclass
class _Ending:
    """Sessions to delete on one relay in the next DeleteSessions call, and when it is done."""

    done: asyncio.Future[None]
    timer: asyncio.TimerHandle | None = None
    session_ids: list[str] = field(default_factory=list)


class _Relay:
    """A relay this edge uses: one channel, one watch of its events, our sessions on it."""

    def __init__(self, address: str, security: GrpcSecurity) -> None:
        self.address = address
        self.channel = security.channel(address, "relay")
        self.stub = media_pb2_grpc.MediaRelayStub(self.channel)  # type: ignore[no-untyped-call]
        self.calls = RelayCalls(self.channel)  # the calls' sessions, on one stream
        self.sessions: set[str] = set()
        self.watch: asyncio.Task[None] | None = None
        self.guard: asyncio.Task[None] | None = None
        self.idle: asyncio.TimerHandle | None = None
        self.ending: _Ending | None = None


def _offered_key(media: SdpMedia) -> tuple[str, media_pb2.Crypto] | None:
    """The tag and key of the first SDES line with the suite the relay speaks:
    `TAG AES_CM_128_HMAC_SHA1_80 inline:KEY|...`."""
    for line in media.crypto:
        parts = line.split()
        if len(parts) >= 3 and parts[1] == SRTP_SUITE and parts[2].startswith("inline:"):
            return parts[0], media_pb2.Crypto(suite=SRTP_SUITE, key=parts[2][len("inline:") :].split("|")[0])
    return None


def trunk_leg(call: Call) -> str:
    """The leg that faces the trunk's PBX: the caller on outbound calls, the callee on inbound."""
    return "a" if call.record.direction is Direction.OUTBOUND else "b"


class RelayMedia:
    """The edge's MediaPlane over MediaRelay gRPC services: one fixed relay (`target`, HOST:PORT or a function
    giving it, for a relay whose port is known only once started), or the one `picker` chooses per call.

    `on_inactive(call key, why)` ends a call whose relay session went inactive (Edge.end_call).
    `timeout` bounds each relay call: a relay answers in milliseconds, but one on a busy node can take
    seconds, and refusing the call (503) is worse than a slower set-up; a dead relay is found by the
    health checks, not by this.
    """

    def __init__(
        self,
        target: str | Callable[[], str] | None = None,
        timeout: float = 5.0,
        picker: RelayPicker | None = None,
        on_inactive: Callable[[str, str], bool] | None = None,
        lost_after: float = 20.0,
        policy: MediaAddressPolicy | None = None,
        security: GrpcSecurity | None = None,
    ) -> None:
        if (target is None) == (picker is None):
            raise ValueError("RelayMedia needs a relay target or a picker (one of them)")
        self.target = target
        self.security = security or GrpcSecurity.insecure_loopback()
        self.picker = picker
        self.policy = policy or MediaAddressPolicy()  # remote media addresses calls may name
        self.timeout = timeout
        self.on_inactive = on_inactive
        self.idle_close = IDLE_CLOSE
        self.lost_after = lost_after  # a relay unreachable this long takes its calls with it
        self.guard_interval = min(GUARD_INTERVAL, lost_after / 4)
        self._relays: dict[str, _Relay] = {}  # by gRPC address
        self._sessions: dict[str, _Session] = {}  # by call key
        self._tasks: set[asyncio.Task[None]] = set()

    def relay_of(self, call_key: str) -> str | None:
        """The gRPC address of the relay carrying the call's media, if any."""
        session = self._sessions.get(call_key)
        return session.relay if session else None

    async def close(self) -> None:
        relays, self._relays = list(self._relays.values()), {}
        for relay in relays:
            if relay.idle is not None:
                relay.idle.cancel()
        endings = [(relay, relay.ending) for relay in relays if relay.ending is not None]
        for relay, _ in endings:
            relay.ending = None
        await asyncio.gather(*(self._send_ending(relay, ending) for relay, ending in endings))
        await asyncio.gather(*(self._shut(relay) for relay in relays))
        if self.picker is not None:
            await self.picker.close()

    async def rewrite(self, call: Call, sdp: bytes, from_leg: str) -> bytes:
        sd, audio = parse_audio_offer(sdp)
        to_leg = "b" if from_leg == "a" else "a"
        hold = call.key in self._sessions and is_hold(sd, audio)  # a first offer has no address to keep
        check_addresses(self.policy, sd, hold_ok=hold)
        apply_codecs(audio, [c.value for c in call.trunk.spec.codecs])
        spec, tag = (None, "") if hold else self._leg_spec(call, sd, audio, from_leg)
        if hold:
            hold_direction(audio)
        allocation = await self._update(call, from_leg, spec)
        session = self._sessions.get(call.key)  # gone if the call ended meanwhile
        tags = session.crypto_tags if session is not None else {}
        protos = session.protos if session is not None else {}
        if tag:
            tags[from_leg] = tag
        protos[from_leg] = audio.proto
        # An answer's a=crypto carries the tag of the offer's line it accepts (RFC 4568 5.1.2).
        self._point_at_relay(sd, audio, allocation[to_leg], call, to_leg, tags.get(to_leg, "1"),
                             protos.get(to_leg, ""))  # fmt: skip
        return sd.to_bytes()

    def _leg_spec(
        self, call: Call, sd: SessionDescription, audio: SdpMedia, leg: str
    ) -> tuple[media_pb2.LegSpec, str]:
        """What the relay needs to know of the party, and the tag of its SDES line (or "")."""
        address = audio.connection_address or sd.connection_address
        if not address:
            raise MediaError(488, "Not Acceptable Here (no connection address)")
        offered = None
        srtp = call.trunk.spec.media.srtp
        if leg == trunk_leg(call) and srtp is not SrtpMode.DISABLED:
            offered = _offered_key(audio)
            if offered is None and srtp is SrtpMode.REQUIRED:
                raise MediaError(488, "Not Acceptable Here (SRTP required)")
        tag, crypto = offered or ("", None)
        rate = next((c.rate for c in audio.codecs if c.name.lower() != "telephone-event"), 8000)
        spec = media_pb2.LegSpec(
            remote_address=address, remote_rtp_port=audio.port, remote_rtcp_port=audio.rtcp_port or 0,
            rtcp_mux=audio.rtcp_mux, crypto=crypto, clock_rate=rate,
            signalling_address=signalling_address(call, leg),
        )  # fmt: skip
        return spec, tag

    async def _update(
        self, call: Call, leg: str, spec: media_pb2.LegSpec | None
    ) -> dict[str, media_pb2.LegAllocation]:
        """Tell the relay of the party on `leg` (None: keep what it knows, e.g. on hold)."""
        specs = {leg: spec} if spec is not None else {}
        session = self._sessions.get(call.key)
        if session is None:
            other = "b" if leg == "a" else "a"
            if other == trunk_leg(call) and call.trunk.spec.media.srtp is not SrtpMode.DISABLED:
                specs[other] = media_pb2.LegSpec(want_srtp=True)  # our offer to the PBX carries a key
            session = await self._create(call, specs)
            return session.allocations
        relay = self._relays.get(session.relay)
        if session.gone or relay is None:
            raise MediaError(503, "Service Unavailable (the media relay ended the session)")
        try:
            answer = await relay.calls.update(
                media_pb2.UpdateSessionRequest(
                    session_id=call.key, leg_a=specs.get("a"), leg_b=specs.get("b")
                ),
                self.timeout,
            )
        except RelayError as exc:
            raise _media_error(exc) from None
        session.allocations = {"a": answer.leg_a, "b": answer.leg_b}
        return session.allocations

    async def _create(self, call: Call, specs: dict[str, media_pb2.LegSpec]) -> _Session:
        request = media_pb2.CreateSessionRequest(
            session_id=call.key, leg_a=specs.get("a"), leg_b=specs.get("b")
        )
        refused: list[str] = []
        for _ in range(PICK_ATTEMPTS):
            relay_id, address = await self._pick(refused)
            relay = self._hold(address, call.key)
            try:
                answer = await relay.calls.create(request, self.timeout)
            except RelayError as exc:
                self._unhold(address, call.key)
                if self.picker is None or exc.code not in TRY_ANOTHER:
                    raise _media_error(exc) from None
                event(log, logging.WARNING, "media relay refused a session", call_id=call.key,
                      relay=relay_id, address=address, code=exc.code.name)  # fmt: skip
                refused.append(relay_id)
                continue
            session = _Session(address, {"a": answer.leg_a, "b": answer.leg_b})
            if call.ended:  # ended (CANCEL) while the relay answered: its release found nothing to free
                await self._delete(address, call.key)
            else:
                self._sessions[call.key] = session
            return session
        raise MediaError(503, "Service Unavailable (no media relay took the call)")

    async def _pick(self, refused: list[str]) -> tuple[str, str]:
        """(relay id, gRPC address) of the relay for a new session."""
        if self.picker is None:
            return "", self._fixed()
        try:
            picked = await self.picker.pick(refused)
        except grpc.aio.AioRpcError as exc:
            raise MediaError(503, f"Service Unavailable (control: {exc.code().name})") from None
        if picked is None:
            raise MediaError(503, "Service Unavailable (no media relay available)")
        try:
            self.security.check_target(picked.grpc_address, f"relay {picked.relay_id}")
        except ConfigError as exc:  # plaintext never leaves loopback, whatever control says
            log.error("%s", exc)
            raise MediaError(503, "Service Unavailable (media relay not reachable securely)") from None
        return picked.relay_id, picked.grpc_address

    def _fixed(self) -> str:
        assert self.target is not None
        return self.target if isinstance(self.target, str) else self.target()

    def _point_at_relay(
        self,
        sd: SessionDescription,
        audio: SdpMedia,
        at: media_pb2.LegAllocation,
        call: Call,
        to_leg: str,
        crypto_tag: str = "1",
        party_proto: str = "",
    ) -> None:
        # Every c= names the relay, replaced where it stands (RFC 8866 fixes the order of lines).
        for part in (sd, *sd.media):
            if part.get("c") is not None:
                part.set_connection(at.address)
        sd.set_origin_address(at.address)
        sd.bump_version()
        audio.port = at.rtp_port
        audio.remove_attributes("rtcp")
        if at.rtcp_port and not audio.rtcp_mux:
            audio.add_attribute("rtcp", str(at.rtcp_port))
        srtp = call.trunk.spec.media.srtp
        if to_leg == trunk_leg(call) and srtp is not SrtpMode.DISABLED and at.HasField("crypto"):
            audio.crypto = [f"{crypto_tag} {at.crypto.suite} inline:{at.crypto.key}"]
            # optional: best-effort SRTP on RTP/AVP, unless the PBX spoke RTP/SAVP itself
            savp = srtp is SrtpMode.REQUIRED or party_proto == "RTP/SAVP"
            audio.proto = "RTP/SAVP" if savp else "RTP/AVP"
        else:
            audio.crypto = []
            audio.proto = "RTP/AVP"
        for other in sd.media:
            if other is not audio:
                other.port = 0  # one relayed audio stream; refuse the rest (RFC 3264 6)

    def snapshot(self, call: Call) -> dict[str, Any]:
        # The relay keeps the session under the call's key; another edge needs to know which relay.
        session = self._sessions.get(call.key)
        if session is None or session.gone:
            return {}
        return {"relay_session": call.key, "relay": session.relay}

    def adopt(self, call: Call, snapshot: dict[str, Any]) -> None:
        if snapshot.get("relay_session") != call.key or call.key in self._sessions:
            return
        # Records written before the relay's address was in them: the fixed relay, if there is one.
        address = snapshot.get("relay") or (self._fixed() if self.target is not None else None)
        if isinstance(address, str) and address:
            self._hold(address, call.key)
            self._sessions[call.key] = _Session(address)

    async def release(self, call: Call) -> None:
        session = self._sessions.pop(call.key, None)
        if session is not None:
            await self._delete(session.relay, call.key, session.gone)

    async def _delete(self, address: str, call_key: str, gone: bool = False) -> None:
        relay = self._relays.get(address)
        try:
            if relay is not None and not gone:
                ending = relay.ending
                if ending is None:
                    loop = asyncio.get_running_loop()
                    ending = relay.ending = _Ending(loop.create_future())
                    ending.timer = loop.call_later(DELETE_WINDOW, self._spawn_ending, relay)
                ending.session_ids.append(call_key)
                if len(ending.session_ids) >= DELETE_BATCH:  # e.g. a relay's calls all ending at once
                    self._spawn_ending(relay)
                await asyncio.shield(ending.done)
        finally:
            self._unhold(address, call_key)

    def _spawn_ending(self, relay: _Relay) -> None:
        ending, relay.ending = relay.ending, None  # the next deletion starts another batch
        if ending is not None:
            self._spawn(self._send_ending(relay, ending))

    async def _send_ending(self, relay: _Relay, ending: _Ending) -> None:
        """Delete the sessions gathered in `ending` (see DELETE_WINDOW); their callers wait for it."""
        if ending.timer is not None:
            ending.timer.cancel()
        try:
            await relay.calls.delete(
                media_pb2.DeleteSessionsRequest(session_ids=ending.session_ids), self.timeout
            )
        except RelayError as exc:  # the relay's inactivity timeout frees them anyway
            log.warning("relay %s did not delete sessions %s: %s", relay.address,
                        ", ".join(ending.session_ids), exc.code.name)  # fmt: skip
        finally:
            ending.done.set_result(None)

    # -- the relays in use -------------------------------------------------------------------------
    def _hold(self, address: str, call_key: str) -> _Relay:
        """The relay at `address`, its channel and event watch opened if need be, holding `call_key`."""
        relay = self._relays.get(address)
        if relay is None:
            relay = self._relays[address] = _Relay(address, self.security)
            relay.watch = self._spawn(self._watch(relay))
            relay.guard = self._spawn(self._guard(relay))
        if relay.idle is not None:
            relay.idle.cancel()
            relay.idle = None
        relay.sessions.add(call_key)
        return relay

    def _unhold(self, address: str, call_key: str) -> None:
        relay = self._relays.get(address)
        if relay is None:
            return
        relay.sessions.discard(call_key)
        if not relay.sessions and relay.idle is None:
            relay.idle = asyncio.get_running_loop().call_later(self.idle_close, self._close_idle, relay)

    def _close_idle(self, relay: _Relay) -> None:
        relay.idle = None
        if not relay.sessions and self._relays.get(relay.address) is relay:
            del self._relays[relay.address]
            self._spawn(self._shut(relay))

    @staticmethod
    async def _shut(relay: _Relay) -> None:
        for task in (relay.watch, relay.guard):
            if task is not None:
                task.cancel()
        await relay.calls.close()
        await relay.channel.close()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _watch(self, relay: _Relay) -> None:
        """Follow the relay's events for as long as we use it; reconnect with backoff (it may restart)."""
        backoff = Backoff()
        while True:
            try:
                async for update in relay.stub.WatchEvents(media_pb2.WatchEventsRequest()):
                    backoff.reset()
                    self._on_event(relay, update)
                log.warning("relay %s ended its event stream; watching again", relay.address)
            except grpc.aio.AioRpcError as exc:
                log.warning("relay %s events: %s; watching again", relay.address, exc.code().name)
            except Exception:  # never lose the watch to a bug in handling one event
                log.exception("relay %s events: handling failed; watching again", relay.address)
            await backoff.wait()

    async def _guard(self, relay: _Relay) -> None:
        """A dead relay reports nothing: check its health. One unreachable for `lost_after` seconds
        takes its calls with it (BYE both ways, they have no audio); one that comes back sooner (a
        restart that restored its sessions) must still hold ours, else those calls end."""
        health = health_pb2_grpc.HealthStub(relay.channel)
        loop = asyncio.get_running_loop()
        down_since: float | None = None
        while True:
            await asyncio.sleep(self.guard_interval)
            try:
                await health.Check(health_pb2.HealthCheckRequest(), timeout=self.timeout)
            except grpc.aio.AioRpcError:
                down_since = down_since or loop.time()
                if loop.time() - down_since >= self.lost_after:
                    self._lose(relay, list(relay.sessions))
                continue
            if down_since is not None:
                down_since = None
                await self._still_held(relay)

    async def _still_held(self, relay: _Relay) -> None:
        for key in list(relay.sessions):
            try:
                await relay.stub.GetSessionStats(media_pb2.GetSessionStatsRequest(session_id=key),
                                                 timeout=self.timeout)  # fmt: skip
            except grpc.aio.AioRpcError as exc:
                if exc.code() is grpc.StatusCode.NOT_FOUND:
                    self._lose(relay, [key])

    def _lose(self, relay: _Relay, keys: list[str]) -> None:
        for key in keys:
            session = self._sessions.get(key)
            if session is None or session.relay != relay.address or session.gone:
                continue
            session.gone = True
            ended = self.on_inactive(key, RELAY_LOST) if self.on_inactive is not None else False
            event(log, logging.WARNING, "relay lost", call_id=key, relay=relay.address, ending=ended)

    def _on_event(self, relay: _Relay, update: media_pb2.SessionEvent) -> None:
        if update.kind != media_pb2.SessionEvent.INACTIVITY_TIMEOUT:
            return
        session = self._sessions.get(update.session_id)
        if session is None or session.relay != relay.address or session.gone:
            return  # another edge's call on a shared relay, or one that ended already
        session.gone = True  # the relay freed it: its ports are no longer ours
        ended = self.on_inactive(update.session_id, INACTIVE) if self.on_inactive is not None else False
        event(log, logging.INFO, "relay session inactive", call_id=update.session_id, relay=relay.address,
              ending=ended)  # fmt: skip


def signalling_address(call: Call, leg: str) -> str:
    """The IP the party on `leg` signals from, for the relay's strict source ("" when unknown yet)."""
    party = call.a if leg == "a" else call.b
    if party is None:
        return ""
    try:
        return str(ipaddress.ip_address(party.addr[0].strip("[]")))
    except ValueError:
        return ""


def _media_error(exc: RelayError) -> MediaError:
    if exc.code is grpc.StatusCode.INVALID_ARGUMENT:
        return MediaError(488, f"Not Acceptable Here ({exc.details[:200]})")
    return MediaError(503, f"Service Unavailable (media relay: {exc.code.name})")
