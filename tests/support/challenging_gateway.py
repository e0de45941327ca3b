"""A carrier gateway (UDP UAS on loopback) that demands digest authentication: 407 to an INVITE (initial
or re-INVITE) without good Proxy-Authorization, 401 to another in-dialog request (BYE, INFO, UPDATE)
without good Authorization, 200 once they are good. It can hang up itself after an INFO.

SIPp verifies only MD5 challenges; this one does MD5, SHA-256 and SHA-512-256, with or without qop.
Its digest check is written here from RFC 7616 with hashlib, not taken from the edge's code, so a
test shows the edge's client against an independent implementation. Every request it receives is
kept (`seen`) for the test to look at.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from trunkline.sip.message import Request, parse_message

_HASHES: dict[str, Callable[[bytes], str]] = {
    "MD5": lambda b: hashlib.md5(b).hexdigest(),
    "SHA-256": lambda b: hashlib.sha256(b).hexdigest(),
    "SHA-512-256": lambda b: hashlib.new("sha512_256", b).hexdigest(),
}
_PARAM = re.compile(r'([a-zA-Z-]+)=(?:"([^"]*)"|([^\s,]+))')
SDP = b"v=0\r\no=gw 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n"


@dataclass
class Seen:
    method: str
    call_id: str
    from_tag: str
    cseq: int
    branch: str
    credentials: str | None  # the Authorization / Proxy-Authorization it carried
    good: bool  # the credentials were right for a nonce this gateway issued
    answered: int


@dataclass
class ChallengingGateway:
    port: int
    username: str
    password: str
    realm: str = "carrier.example"
    algorithms: tuple[str, ...] = ("MD5",)  # one challenge header each, in this order
    qop: bool = True
    challenge_in_dialog: bool = True  # BYE, INFO, UPDATE (a re-INVITE is always challenged)
    hang_up_after_info: bool = False  # BYE to the edge once an INFO was answered 200
    stale_once: bool = False  # the first good INVITE is answered 407 stale=true with a new nonce
    host: str = "127.0.0.1"
    seen: list[Seen] = field(default_factory=list)
    _nonces: set[str] = field(default_factory=set)
    _opaque: str = field(default_factory=lambda: secrets.token_hex(8))
    _answers: dict[str, bytes] = field(default_factory=dict)  # branch -> the response (retransmissions)
    _stop: threading.Event = field(default_factory=threading.Event)
    _dialogs: dict[str, Request] = field(default_factory=dict)  # Call-ID -> the INVITE answered 200
    _pending_bye: list[str] = field(default_factory=list)

    def __enter__(self) -> ChallengingGateway:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((self.host, self.port))
        self._sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def of(self, method: str) -> list[Seen]:
        return [s for s in list(self.seen) if s.method == method]

    # -- the UAS --------------------------------------------------------------------------------------
    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self._sock.recvfrom(65535)
            except (TimeoutError, OSError):
                continue
            with contextlib.suppress(Exception):  # a test UAS: anything odd is just not answered
                message = parse_message(data)
                if isinstance(message, Request):
                    reply = self._answer(message)
                    if reply:
                        self._sock.sendto(reply, addr)
                    while self._pending_bye:
                        bye = self._bye(self._pending_bye.pop())
                        if bye:
                            self._sock.sendto(bye, addr)

    def _answer(self, request: Request) -> bytes | None:
        branch = str(request.top_via.params.get("branch"))
        if request.method == "ACK":  # its credentials kept as they came (RFC 3261 13.2.2.4)
            self._record(request, branch, request.get("Proxy-Authorization"), False, 0)
            return None
        if branch in self._answers:  # a retransmission
            return self._answers[branch]
        if request.to.tag is None and request.method != "INVITE":
            return None  # a test gateway: only calls
        header = "Proxy-Authorization" if request.method == "INVITE" else "Authorization"
        credentials = request.get(header)
        good = credentials is not None and self._verify(credentials, request)
        needs_auth = request.method == "INVITE" or self.challenge_in_dialog
        if needs_auth and not good:
            status, extra = (407 if request.method == "INVITE" else 401), self._challenges(request, False)
        elif request.method == "INVITE" and self.stale_once:
            self.stale_once = False
            status, extra = 407, self._challenges(request, True)
        else:
            status, extra = 200, []
        self._record(request, branch, credentials, good, status)
        reply = self._response(request, status, extra)
        self._answers[branch] = reply
        if status == 200 and request.method == "INVITE" and request.to.tag is None:
            self._dialogs[request.call_id] = request
        if status == 200 and request.method == "INFO" and self.hang_up_after_info:
            self._pending_bye.append(request.call_id)
        return reply

    def _bye(self, call_id: str) -> bytes | None:
        """Our BYE in the dialog the INVITE `call_id` set up (its Contact is where it goes)."""
        invite = self._dialogs.get(call_id)
        if invite is None or not invite.contact:
            return None
        lines = [f"BYE {invite.contact[0].uri} SIP/2.0",
                 f"Via: SIP/2.0/UDP {self.host}:{self.port};branch=z9hG4bK{secrets.token_hex(8)}",
                 f"From: {invite.get('To')};tag=gw{call_id[:8]}", f"To: {invite.get('From')}",
                 f"Call-ID: {call_id}", "CSeq: 1 BYE", "Max-Forwards: 70", "Content-Length: 0"]  # fmt: skip
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def _record(
        self, request: Request, branch: str, credentials: str | None, good: bool, status: int
    ) -> None:
        self.seen.append(Seen(request.method, request.call_id, request.from_.tag or "", request.cseq.seq,
                              branch, credentials, good, status))  # fmt: skip

    def _challenges(self, request: Request, stale: bool) -> list[tuple[str, str]]:
        name = "Proxy-Authenticate" if request.method == "INVITE" else "WWW-Authenticate"
        out = []
        for algorithm in self.algorithms:
            nonce = secrets.token_hex(16)
            self._nonces.add(nonce)
            qop = ', qop="auth"' if self.qop else ""
            tail = ", stale=true" if stale else ""
            out.append((name, f'Digest realm="{self.realm}", nonce="{nonce}", opaque="{self._opaque}", '
                              f"algorithm={algorithm}{qop}{tail}"))  # fmt: skip
        return out

    def _verify(self, value: str, request: Request) -> bool:
        scheme, _, rest = value.partition(" ")
        params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
                  for m in _PARAM.finditer(rest)}  # fmt: skip
        algorithm = params.get("algorithm", "MD5")
        if scheme != "Digest" or algorithm not in self.algorithms or params.get("nonce") not in self._nonces:
            return False
        if params.get("realm") != self.realm or params.get("username") != self.username:
            return False
        if params.get("opaque") != self._opaque or params.get("uri") != str(request.uri):
            return False
        h = _HASHES[algorithm]
        ha1 = h(f"{self.username}:{self.realm}:{self.password}".encode())
        ha2 = h(f"{request.method}:{params['uri']}".encode())
        if self.qop:
            if params.get("qop") != "auth" or not params.get("cnonce") or not params.get("nc"):
                return False
            expected = h(f"{ha1}:{params['nonce']}:{params['nc']}:{params['cnonce']}:auth:{ha2}".encode())
        else:
            if "qop" in params or "cnonce" in params:
                return False
            expected = h(f"{ha1}:{params['nonce']}:{ha2}".encode())
        return params.get("response") == expected

    def _response(self, request: Request, status: int, extra: list[tuple[str, str]]) -> bytes:
        reason = {200: "OK", 401: "Unauthorized", 407: "Proxy Authentication Required"}[status]
        to = request.get("To") or ""
        if ";tag=" not in to:
            to += f";tag=gw{request.call_id[:8]}"
        lines = [f"SIP/2.0 {status} {reason}"]
        lines += [f"Via: {v}" for v in request.get_all("Via")]
        lines += [f"From: {request.get('From')}", f"To: {to}", f"Call-ID: {request.call_id}",
                  f"CSeq: {request.cseq.seq} {request.method}"]  # fmt: skip
        lines += [f"{name}: {value}" for name, value in extra]
        body = b""
        if status == 200 and request.method == "INVITE":
            lines += [f"Contact: <sip:gw@{self.host}:{self.port}>", "Content-Type: application/sdp"]
            body = SDP
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body
