"""A small user agent on the core: answers INVITE (180, 200 + SDP), BYE/OPTIONS (200), CANCEL (200 +
487), and places calls as a UAC. Used by the SIPp interop tests; reusable as a test peer.

The 2xx to an INVITE is retransmitted by the UA (the TU, RFC 3261 13.3.1.4 / RFC 6026) from T1 up to
T2 until its ACK arrives or 64*T1 passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from trunkline.core.net import HostPort, bind_udp_and_tcp
from trunkline.sip.dialog import Dialog
from trunkline.sip.headers import NameAddr, Via
from trunkline.sip.ids import new_branch, new_tag
from trunkline.sip.message import Request, Response
from trunkline.sip.stack import Incoming, SipStack
from trunkline.sip.transaction import Addr, Timers
from trunkline.sip.uri import SipUri, parse_uri

ANSWER_SDP = (
    b"v=0\r\no=trunkline 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=sendrecv\r\n"
)


@dataclass(frozen=True)
class Seen:
    """A message the UA got: a method, or "status method" for a response; the TLS version it came over."""

    what: str
    transport: str
    tls: str | None


class UserAgent:
    def __init__(
        self,
        host: str = "127.0.0.1",
        timers: Timers | None = None,
        ring: bool = True,
        sdp: bytes = ANSWER_SDP,
    ) -> None:
        self.host = host
        self.sdp = sdp  # offered and answered; "{ip}" becomes `host`
        self.last_invite: Request | None = None  # the last INVITE received, as it arrived
        self.timers = timers or Timers()
        self.stack = SipStack(
            self._on_request, self._on_stray_response, self.timers
        )  # it retransmits our 2xx
        self.transport = self.stack.transport  # listening and TLS settings: the UA assembles its I/O
        self.ring = ring
        self.dialogs: dict[tuple[str, str, str], Dialog] = {}
        self.calls_answered = 0
        self.byes = 0
        self.seen: list[Seen] = []  # every request received and final response to ours, in order
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, port: int = 0, tls: ssl.SSLContext | None = None) -> Addr:
        """Listen on UDP and TCP at one port (and TLS on another when given a context)."""
        udp, tcp = bind_udp_and_tcp(HostPort(self.host, port), "SIP UA")
        addr = await self.transport.listen_udp(self.host, port, sock=udp)
        await self.transport.listen_stream(self.host, addr[1], sock=tcp)
        if tls is not None:
            await self.transport.listen_stream(self.host, 0, tls)
        return addr

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.stack.close()

    def _respond(self, resp: Response) -> None:
        self.stack.respond(resp)

    def _on_stray_response(self, resp: Response, addr: Addr, transport: str) -> None:
        if 200 <= resp.status < 300 and resp.cseq.method == "INVITE":
            self._ack_2xx(resp, addr, transport)  # a retransmitted 2xx: its ACK was lost, ACK again

    # -- UAS ----------------------------------------------------------------------------------------
    def _on_request(self, inc: Incoming) -> None:
        msg = inc.request
        m = msg.method
        self._saw(m, inc.addr, inc.transport)
        if m == "ACK":
            return  # the stack stopped retransmitting our 2xx
        if m == "INVITE":
            self._answer_invite(msg, inc)
        elif m == "CANCEL":
            # Every INVITE is answered at once, so a CANCEL finds none still pending (481), unless the
            # INVITE is still being answered.
            key = self.stack.invite_for_cancel(msg)
            self._respond(msg.create_response(200 if key else 481))
        elif m == "BYE":
            dialog = self.dialogs.pop((msg.call_id, msg.to.tag or "", msg.from_.tag or ""), None)
            self.byes += dialog is not None
            self._respond(msg.create_response(200 if dialog else 481))
        elif m == "OPTIONS":
            resp = msg.create_response(200)
            resp.add("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS")
            self._respond(resp)
        else:
            resp = msg.create_response(405)
            resp.add("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS")
            self._respond(resp)

    def _local(self, transport: str) -> Addr:
        where = self.stack.local_address(transport) or self.stack.local_address("udp")
        assert where is not None, "the UA is not listening"
        return where

    def _contact(self, transport: str) -> NameAddr:
        host, port = self._local(transport)
        params: dict[str, str | None] = {} if transport == "udp" else {"transport": transport}
        return NameAddr(SipUri("sip", "", "ua", None, host, port, params))

    def _answer_invite(self, invite: Request, inc: Incoming) -> None:
        tag = new_tag()
        if self.ring:
            self._respond(invite.create_response(180, to_tag=tag))
        ok = invite.create_response(200, to_tag=tag)
        ok.add("Contact", str(self._contact(inc.transport)))
        ok.add("Content-Type", "application/sdp")
        ok.body = self.sdp.replace(b"{ip}", self.host.encode())
        self.last_invite = invite
        dialog = Dialog.from_uas(invite, ok)
        self.dialogs[dialog.id] = dialog
        self.calls_answered += 1
        self._respond(ok)  # retransmitted by the stack until the ACK (RFC 3261 13.3.1.4)

    # -- UAC ----------------------------------------------------------------------------------------
    def _via(self, transport: str) -> Via:
        host, port = self._local(transport)
        return Via(transport.upper(), host, port, {"branch": new_branch(), "rport": None})

    async def request(self, req: Request, addr: Addr, transport: str) -> Response:
        """Send a request in a client transaction; its final response, or NoAnswer (a TimeoutError)."""
        resp = await self.stack.request(req, addr, transport)
        self._saw(f"{resp.status} {resp.cseq.method}", addr, transport)
        return resp

    def _saw(self, what: str, addr: Addr, transport: str) -> None:
        session = self.transport.tls_session(addr) if transport == "tls" else None
        self.seen.append(Seen(what, transport, session.version() if session else None))

    async def call(
        self,
        target: str,
        addr: Addr,
        transport: str = "udp",
        hold: float = 0.1,
        from_user: str = "ua",
        during: Callable[[Response], Awaitable[None]] | None = None,
        to: str | None = None,
    ) -> int:
        """INVITE, ACK the 2xx, wait `hold` (or run `during(answer)`), BYE. Returns the final status.
        `to`: the To URI when it is not the target (e.g. a call to a registered Contact)."""
        uri = parse_uri(target)
        invite = Request("INVITE", uri)
        invite.add("Via", self._via(transport))
        invite.add("Max-Forwards", "70")
        invite.add("From", str(NameAddr(parse_uri(f"sip:{from_user}@{self.host}"), None, {"tag": new_tag()})))
        invite.add("To", f"<{to or uri}>")
        invite.add("Call-ID", new_tag() + "@" + self.host)
        invite.add("CSeq", "1 INVITE")
        invite.add("Contact", str(self._contact(transport)))
        invite.add("Content-Type", "application/sdp")
        invite.body = self.sdp.replace(b"{ip}", self.host.encode())
        final = await self.request(invite, addr, transport)
        if final.status >= 300:
            return final.status
        dialog = Dialog.from_uac(invite, final)
        self.dialogs[dialog.id] = dialog
        self._ack_2xx(final, addr, transport)
        await (during(final) if during is not None else asyncio.sleep(hold))
        bye = dialog.create_request("BYE", self._via(transport))
        self.dialogs.pop(dialog.id, None)
        with contextlib.suppress(TimeoutError):
            await self.request(bye, addr, transport)
        return final.status

    def _ack_2xx(self, resp: Response, addr: Addr, transport: str) -> None:
        """ACK for a 2xx is a new request of the dialog with the INVITE's CSeq number (13.2.2.4)."""
        dialog = self.dialogs.get((resp.call_id, resp.from_.tag or "", resp.to.tag or ""))
        if dialog is None:
            return
        ack = dialog.create_request("ACK", self._via(transport), cseq=resp.cseq.seq)
        self.stack.send_ack(ack, addr, transport)
