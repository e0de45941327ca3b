"""REGISTER semantics (RFC 3261 10.3): expiry bounds, several contacts, refresh, removal, NAT pinning."""

from __future__ import annotations

from trunkline.core.models import Trunk
from trunkline.core.state import MemoryStore
from trunkline.edge.registrar import NatSource, register
from trunkline.sip.message import Request, parse_message

TRUNK = Trunk.model_validate(
    {"metadata": {"name": "acme"}, "spec": {"registration": {"enabled": True, "maxExpires": 600}}}
)
PBX = NatSource("udp", "127.0.0.2", 5060)


def req(
    *contacts: str, expires: int | None = None, cseq: int = 1, user: str = "acme", via_port: int = 5060
) -> Request:
    lines = [
        "REGISTER sip:edge.example SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.2:{via_port};branch=z9hG4bK{cseq}x",
        "Max-Forwards: 70",
        f"From: <sip:{user}@edge.example>;tag=f1",
        f"To: <sip:{user}@edge.example>",
        "Call-ID: reg-1@127.0.0.2",
        f"CSeq: {cseq} REGISTER",
        *[f"Contact: {c}" for c in contacts],
        *([f"Expires: {expires}"] if expires is not None else []),
        "Content-Length: 0",
    ]
    message = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


async def test_bindings_with_bounded_expiry_listed_in_200() -> None:
    store = MemoryStore()
    response = await register(req("<sip:acme@127.0.0.2:5060>", "<sip:acme@127.0.0.2:5062>;expires=120",
                                  expires=7200), "acme", TRUNK, store, PBX, "t1")  # fmt: skip
    assert response.status == 200
    contacts = sorted(response.get_all("Contact"))
    assert contacts == ["<sip:acme@127.0.0.2:5060>;expires=600", "<sip:acme@127.0.0.2:5062>;expires=120"]
    bindings = await store.bindings("sip:acme")
    assert {b.contact for b in bindings} == {"sip:acme@127.0.0.2:5060", "sip:acme@127.0.0.2:5062"}
    assert all(b.source == "" for b in bindings)  # Via matched the source: no NAT pinning


async def test_refresh_unregister_and_wildcard() -> None:
    store = MemoryStore()
    await register(
        req("<sip:acme@127.0.0.2:5060>", "<sip:acme@127.0.0.2:5062>"), "acme", TRUNK, store, PBX, "t"
    )
    response = await register(
        req("<sip:acme@127.0.0.2:5062>", expires=0, cseq=2), "acme", TRUNK, store, PBX, "t"
    )
    assert response.get_all("Contact") == ["<sip:acme@127.0.0.2:5060>;expires=600"]
    stale = await register(
        req("<sip:acme@127.0.0.2:5060>", expires=0, cseq=1), "acme", TRUNK, store, PBX, "t"
    )
    assert stale.get_all("Contact") == ["<sip:acme@127.0.0.2:5060>;expires=600"]  # reordered: ignored
    bad = await register(req("*", expires=3600, cseq=3), "acme", TRUNK, store, PBX, "t")
    assert bad.status == 400
    gone = await register(req("*", expires=0, cseq=4), "acme", TRUNK, store, PBX, "t")
    assert gone.status == 200 and await store.bindings("sip:acme") == []


async def test_too_brief_wrong_user_and_disabled() -> None:
    store = MemoryStore()
    brief = await register(req("<sip:acme@127.0.0.2>", expires=10), "acme", TRUNK, store, PBX, "t")
    assert brief.status == 423 and brief.get("Min-Expires") == "60"
    other = await register(req("<sip:bob@127.0.0.2>", user="bob"), "acme", TRUNK, store, PBX, "t")
    assert other.status == 403
    off = Trunk.model_validate({"metadata": {"name": "acme"}, "spec": {}})
    disabled = await register(req("<sip:acme@127.0.0.2>"), "acme", off, store, PBX, "t")
    assert disabled.status == 403 and "not enabled" in (disabled.reason or "")


async def test_nat_pins_the_binding_to_the_observed_source() -> None:
    store = MemoryStore()
    natted = NatSource("udp", "127.0.0.2", 40123)  # the Via says 5060, the packet came from 40123
    await register(req("<sip:acme@192.168.1.20:5060>"), "acme", TRUNK, store, natted, "t")
    [binding] = await store.bindings("sip:acme")
    assert binding.contact == "sip:acme@192.168.1.20:5060" and binding.source == "udp:127.0.0.2:40123"
