"""Parse + serialize round trips per second of a typical ~800-byte INVITE with SDP, on one core.

Run: .venv/bin/python -m bench.sip_parse [seconds]
The reference run in the same process splits the same message into lines and header name/value
pairs with plain bytes operations and joins them back (a floor no real parser can beat).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from trunkline.sip import parse_message

SDP = (
    b"v=0\r\no=- 3724394400 3724394400 IN IP4 203.0.113.10\r\ns=-\r\nc=IN IP4 203.0.113.10\r\n"
    b"t=0 0\r\nm=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
)
INVITE = (
    b"INVITE sip:+14155550100@edge.example.com;transport=udp SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 203.0.113.10:5060;branch=z9hG4bK-524287-1---a3f1c9e2d0b4;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"Contact: <sip:alice@203.0.113.10:5060;transport=udp>\r\n"
    b"To: <sip:+14155550100@edge.example.com>\r\n"
    b'From: "Alice" <sip:alice@pbx.example.com>;tag=9fxced76sl\r\n'
    b"Call-ID: 3848276298220188511@pbx.example.com\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO, SUBSCRIBE, UPDATE\r\n"
    b"Supported: replaces, timer, 100rel\r\n"
    b"Session-Expires: 1800;refresher=uac\r\n"
    b"User-Agent: ExamplePBX/1.2.3\r\n"
    b"P-Asserted-Identity: <sip:+14155550123@pbx.example.com>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n\r\n" + SDP
)


def roundtrip() -> bytes:
    return parse_message(INVITE).to_bytes()


def roundtrip_validated() -> bytes:
    msg = parse_message(INVITE)
    msg.validate()
    return msg.to_bytes()


def reference() -> bytes:
    end = INVITE.index(b"\r\n\r\n")
    lines = INVITE[:end].split(b"\r\n")
    pairs = [line.split(b":", 1) for line in lines[1:]]
    head = b"\r\n".join([lines[0], *(n + b": " + v.strip() for n, v in pairs)])
    return head + b"\r\n\r\n" + INVITE[end + 4 :]


def rate(fn: Callable[[], bytes], seconds: float) -> float:
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(1000):
            fn()
        n += 1000
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    assert parse_message(roundtrip()).to_bytes() == roundtrip()
    ours = rate(roundtrip, seconds)
    validated = rate(roundtrip_validated, seconds)
    ref = rate(reference, seconds)
    print(f"message size                      : {len(INVITE)} bytes")
    print(f"parse + serialize                 : {ours:10,.0f} round trips/s")
    print(f"parse + validate() + serialize    : {validated:10,.0f} round trips/s")
    print(f"reference (bytes.split + join)    : {ref:10,.0f} round trips/s")
    print(f"ratio ours / reference            : {ours / ref:10.2f}")
    print(f"target 40,000/s                   : {'met' if ours >= 40_000 else 'NOT met'}")


if __name__ == "__main__":
    main()
