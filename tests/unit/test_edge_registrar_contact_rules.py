"""Registrar hardening: contacts may not point anywhere; at most maxContacts per address of record."""

from __future__ import annotations

import ipaddress

import pytest

from trunkline.core.models import Trunk
from trunkline.core.state import MemoryStore
from trunkline.edge.registrar import NatSource, contact_refusal, register
from trunkline.sip.message import Request, parse_message

TRUNK = Trunk.model_validate(
    {"metadata": {"name": "acme"}, "spec": {"registration": {"enabled": True, "maxContacts": 3}}}
)
PUBLIC = NatSource("udp", "198.51.100.7", 5060)
DENY = (ipaddress.ip_network("10.96.0.0/12"), ipaddress.ip_network("fd00::/8"))


def req(*contacts: str, cseq: int = 1, host: str = "198.51.100.7") -> Request:
    lines = [
        "REGISTER sip:edge.example SIP/2.0",
        f"Via: SIP/2.0/UDP {host}:5060;branch=z9hG4bK{cseq}x",
        "From: <sip:acme@edge.example>;tag=f1",
        "To: <sip:acme@edge.example>",
        "Call-ID: reg-rules@x",
        f"CSeq: {cseq} REGISTER",
        *[f"Contact: {c}" for c in contacts],
        "Content-Length: 0",
    ]
    message = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


@pytest.mark.parametrize(
    ("host", "source", "rule"),
    [
        ("198.51.100.7", "198.51.100.7", None),
        ("[2001:db8::5]", "2001:db8::5", None),
        ("127.0.0.1", "198.51.100.7", "loopback"),
        ("[::1]", "198.51.100.7", "loopback"),
        ("[::ffff:127.0.0.1]", "198.51.100.7", "loopback"),
        ("127.0.0.2", "127.0.0.1", None),  # the edge itself runs on loopback (tests, trunkline up)
        ("169.254.169.254", "198.51.100.7", "link-local"),  # the cloud metadata service
        ("[fe80::1]", "198.51.100.7", "link-local"),
        ("224.0.0.1", "198.51.100.7", "multicast"),
        ("0.0.0.0", "198.51.100.7", "unspecified"),
        ("255.255.255.255", "198.51.100.7", "reserved"),
        ("kubernetes.default.svc", "198.51.100.7", "name"),
        ("10.100.0.1", "198.51.100.7", "denied network (10.96.0.0/12)"),
        ("[fd00::1]", "198.51.100.7", "denied network"),
    ],
)
def test_contact_rules(host: str, source: str, rule: str | None) -> None:
    why = contact_refusal(host, source, DENY)
    assert why is None if rule is None else (why is not None and rule in why)


async def test_a_bad_contact_is_a_403_naming_the_rule_and_changes_nothing() -> None:
    store = MemoryStore()
    response = await register(
        req("<sip:acme@198.51.100.7>", "<sip:acme@169.254.169.254>"), "acme", TRUNK, store, PUBLIC, "t"
    )
    assert response.status == 403 and "link-local" in response.reason
    assert await store.bindings("sip:acme") == []
    response = await register(req("<sip:acme@10.96.0.10>"), "acme", TRUNK, store, PUBLIC, "t", deny=DENY)
    assert response.status == 403 and "10.96.0.0/12" in response.reason


async def test_at_most_max_contacts_per_aor() -> None:
    store = MemoryStore()
    many = [f"<sip:acme@198.51.100.7:{5060 + i}>" for i in range(50)]
    response = await register(req(*many), "acme", TRUNK, store, PUBLIC, "t")
    assert response.status == 403 and "more than 3 contacts" in response.reason
    assert (await register(req(*many[:3]), "acme", TRUNK, store, PUBLIC, "t")).status == 200
    # A fourth in a later REGISTER is refused; replacing one (remove + add) is fine.
    response = await register(req(many[3], cseq=2), "acme", TRUNK, store, PUBLIC, "t")
    assert response.status == 403
    response = await register(req(f"{many[0]};expires=0", many[3], cseq=3), "acme", TRUNK, store, PUBLIC, "t")
    assert response.status == 200 and len(await store.bindings("sip:acme")) == 3


async def test_removing_a_contact_needs_no_address_check() -> None:
    store = MemoryStore()
    response = await register(
        req("<sip:acme@kubernetes.default>;expires=0"), "acme", TRUNK, store, PUBLIC, "t"
    )
    assert response.status == 200
