"""trunkline.sip - the SIP protocol core of the edge (sans-I/O, RFC 3261/3581/6026/4475/5626/8866).

Messages (`trunkline.sip.message`)::

    msg = parse_message(datagram)          # Request | Response; raises SipParseError(status, reason)
    msg.validate()                         # core headers parse, CSeq/method match, URI scheme (416)...
    msg.method, msg.uri / msg.status, msg.reason
    msg.get("i"), msg.get_all("Via")       # raw strings, any case, compact or long names
    msg.via, msg.top_via, msg.from_, msg.to, msg.call_id, msg.cseq, msg.max_forwards,
    msg.contact, msg.route, msg.record_route, msg.content_type   # parsed lazily, cached; mutate in place
    msg.add(name, value, first=False), msg.set(name, *values), msg.remove(name), msg.body = b"..."
    msg.to_bytes()                         # Content-Length follows the body
    req.create_response(200, to_tag="x")   # RFC 3261 8.2.6
    StreamFramer(max_size).feed(data) -> [Request | Response | KeepAlive]   # TCP/TLS framing

Values: `SipUri`/`TelUri`/`Uri` (`parse_uri`), `NameAddr`, `Via`, `CSeq`, `ContentType`.
SDP (`trunkline.sip.sdp`): `parse_sdp(body) -> SessionDescription` with `.media[i]` (`SdpMedia`: port,
codecs, keep_codecs, crypto, direction, rtcp_port, rtcp_mux), `set_connection`, `to_bytes()`.

Errors: `SipParseError` (the peer's fault, carries `.status`/`.reason` to answer with; drop bad
responses) and `LocalProtocolError` (our misuse of the API).

Transactions (`trunkline.sip.transaction`): `TransactionLayer(timers).receive(msg, addr, now)`,
`.send_request(req, addr, now)`, `.send_response(resp, now)`, `.handle_timer(now)`, each returning
a list of actions (`Send`, `Deliver`, `Timeout`, `TransportError`); `.next_deadline()`.
Dialogs (`trunkline.sip.dialog`): `Dialog.from_uac/from_uas`, `create_request`, `receive_request`.
Transports (`trunkline.sip.transport`): asyncio `SipTransport` adapter (UDP/TCP/TLS).
UA (`trunkline.sip.ua`): a small UAS/UAC on top, used by the SIPp interop tests.
"""

from trunkline.sip.errors import LocalProtocolError, SipError, SipParseError
from trunkline.sip.headers import MAGIC_COOKIE, ContentType, CSeq, NameAddr, Via, parse_name_addr, parse_via
from trunkline.sip.message import (
    KEEPALIVE,
    MAX_MESSAGE_SIZE,
    KeepAlive,
    Message,
    Request,
    Response,
    StreamFramer,
    parse_message,
)
from trunkline.sip.uri import SipUri, TelUri, Uri, parse_uri

__all__ = [
    "KEEPALIVE",
    "MAGIC_COOKIE",
    "MAX_MESSAGE_SIZE",
    "CSeq",
    "ContentType",
    "KeepAlive",
    "LocalProtocolError",
    "Message",
    "NameAddr",
    "Request",
    "Response",
    "SipError",
    "SipParseError",
    "SipUri",
    "StreamFramer",
    "TelUri",
    "Uri",
    "Via",
    "parse_message",
    "parse_name_addr",
    "parse_uri",
    "parse_via",
]
