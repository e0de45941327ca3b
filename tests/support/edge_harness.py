"""An Edge over the in-memory `FakeStack`, a MemoryStore and a Directory from manifests, with
builders for the requests tests deliver to it.

The world: carrier `pstn` (calls from 127.0.0.1, gateways 127.0.0.1:5071 then :5072), trunk `acme`
(IP ACL 127.0.0.2, digest acme/s3cret-acme, origination 127.0.0.4:5080) with DID +14155550100.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.fake_stack import FakeStack
from trunkline.core.manifests import load
from trunkline.core.state import MemoryStore
from trunkline.edge.b2bua import Edge
from trunkline.edge.cdr import CallRecord, CdrSink
from trunkline.edge.context import EdgeOptions
from trunkline.edge.digest import DigestAuthenticator
from trunkline.edge.directory import Directory
from trunkline.edge.legs import Local

PBX = ("127.0.0.2", 5060)  # in the trunk's IP ACL
CARRIER = ("127.0.0.1", 5070)  # in the carrier's inbound CIDRs
GATEWAYS = [("127.0.0.1", 5071), ("127.0.0.1", 5072)]
ORIGINATION = ("127.0.0.4", 5080)
STRANGER = ("127.0.0.9", 5060)  # neither: must authenticate


def manifest_docs(carrier: dict[str, Any] | None = None, **trunk_spec: Any) -> list[dict[str, Any]]:
    """The world's manifests; `carrier`: more fields of the carrier's spec (e.g. health)."""
    spec: dict[str, Any] = {
        "auth": {"digest": {"credentialsSecret": "acme-creds"}, "ipAcl": ["127.0.0.2/32"]},
        "origination": [{"uri": "sip:127.0.0.4:5080"}],
        "outbound": {"allowedPrefixes": ["+1", "+44"]},
    }
    spec.update(trunk_spec)
    gateways = [{"uri": f"sip:{h}:{p}", "priority": 10 * (i + 1)} for i, (h, p) in enumerate(GATEWAYS)]
    return [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "acme-creds"},
         "stringData": {"username": "acme", "password": "s3cret-acme"}},
        {"apiVersion": "trunkline.io/v1alpha1", "kind": "Carrier", "metadata": {"name": "pstn"},
         "spec": {"gateways": gateways, "inboundCidrs": ["127.0.0.1/32"], **(carrier or {})}},
        {"apiVersion": "trunkline.io/v1alpha1", "kind": "Trunk", "metadata": {"name": "acme"}, "spec": spec},
        {"apiVersion": "trunkline.io/v1alpha1", "kind": "DID", "metadata": {"name": "main"},
         "spec": {"number": "+14155550100", "trunkRef": "acme"}},
    ]  # fmt: skip


class RecordingCdr(CdrSink):
    def __init__(self) -> None:
        super().__init__(None)
        self.records: list[CallRecord] = []

    def write(self, record: CallRecord) -> None:
        super().write(record)
        self.records.append(record)


@dataclass
class Harness:
    edge: Edge
    stack: FakeStack
    store: MemoryStore
    cdr: RecordingCdr
    owner: str = "edge-1"
    calls: list[str] = field(default_factory=list)


def build(
    tmp_path: Path,
    options: EdgeOptions | None = None,
    store: MemoryStore | None = None,
    owner: str = "edge-1",
    carrier: dict[str, Any] | None = None,
    **trunk_spec: Any,
) -> Harness:
    path = tmp_path / f"manifests-{owner}.yaml"
    path.write_text("\n---\n".join(json.dumps(d) for d in manifest_docs(carrier, **trunk_spec)))
    config, problems = load([path])
    assert problems == []
    stack = FakeStack()
    store = store or MemoryStore(clock=stack.clock)
    cdr = RecordingCdr()
    options = options or EdgeOptions()
    edge = Edge(
        Directory(config), store, Local("127.0.0.1", 5060, "127.0.0.1", 5060), cdr, options=options,
        authenticator=DigestAuthenticator(b"k" * 32, nonce_ttl=options.nonce_ttl, clock=stack.clock),
        clock=stack.clock, owner=owner, stack=stack,
    )  # fmt: skip
    return Harness(edge, stack, store, cdr, owner)


def invite(
    to: str = "+442071234567",
    caller: str = "+14155550100",
    call_id: str | None = None,
    branch: str | None = None,
    source: tuple[str, int] = PBX,
    headers: tuple[str, ...] = (),
    body: str = "",
) -> str:
    call_id = call_id or secrets.token_hex(6)
    branch = branch or "z9hG4bK" + secrets.token_hex(6)
    extra = "".join(h + "\n" for h in headers)
    return (
        f"INVITE sip:{to}@127.0.0.1:5060 SIP/2.0\n"
        f"Via: SIP/2.0/UDP {source[0]}:{source[1]};branch={branch}\n"
        f"From: <sip:{caller}@{source[0]}>;tag=caller\n"
        f"To: <sip:{to}@127.0.0.1>\n"
        f"Call-ID: {call_id}\n"
        "CSeq: 1 INVITE\n"
        f"Contact: <sip:{caller}@{source[0]}:{source[1]}>\n"
        "Max-Forwards: 70\n"
        f"{extra}"
        f"Content-Length: {len(body.encode())}\n\n"
    ).replace("\n", "\r\n") + body


def in_dialog(
    method: str,
    call_id: str,
    to_tag: str,
    cseq: int,
    source: tuple[str, int] = PBX,
    from_tag: str = "caller",
    headers: tuple[str, ...] = (),
    body: str = "",
    branch: str | None = None,
) -> str:
    """A request from the caller (or, with source/from_tag of the callee, from the callee) in a dialog."""
    branch = branch or "z9hG4bK" + secrets.token_hex(6)
    extra = "".join(h + "\n" for h in headers)
    return (
        f"{method} sip:trunkline@127.0.0.1:5060 SIP/2.0\n"
        f"Via: SIP/2.0/UDP {source[0]}:{source[1]};branch={branch}\n"
        f"From: <sip:caller@{source[0]}>;tag={from_tag}\n"
        f"To: <sip:trunkline@127.0.0.1>;tag={to_tag}\n"
        f"Call-ID: {call_id}\n"
        f"CSeq: {cseq} {method}\n"
        f"Contact: <sip:caller@{source[0]}:{source[1]}>\n"
        "Max-Forwards: 70\n"
        f"{extra}"
        f"Content-Length: {len(body.encode())}\n\n"
    ).replace("\n", "\r\n") + body


SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"


@dataclass
class Answered:
    call_id: str
    a_tag: str  # the edge's tag towards the caller
    b: Any  # the ClientTx of the callee's INVITE
    b_ok: Any  # the callee's 200


async def answered_call(h: Harness, *ok_headers: str, **invite_args: Any) -> Answered:
    """An outbound call from the PBX answered by the first gateway (the caller's ACK not yet sent)."""
    call_id = invite_args.pop("call_id", None) or secrets.token_hex(6)
    await h.stack.deliver(invite(call_id=call_id, **invite_args), PBX)
    b = h.stack.requests("INVITE")[-1]
    host, port = b.addr
    ok = await h.stack.reply(b, 200, f"Contact: <sip:gw@{host}:{port}>", *ok_headers)
    answer = h.stack.responses[-1]
    assert answer.status == 200, h.stack.statuses()
    assert answer.to.tag
    return Answered(call_id, answer.to.tag, b, ok)
