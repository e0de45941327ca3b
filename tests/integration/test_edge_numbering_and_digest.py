"""Numbering plans and digest options on real calls through `trunkline up`: a Carrier's plan turns
its national caller and callee numbers into E.164 (what the PBX sees and the CDR records), a Trunk's
plan does the same for a PBX's outbound call; a Trunk's `digest.realm` and `algorithms` are what the
challenge offers and what a REGISTER must answer with."""

from __future__ import annotations

import hashlib
import json
import re
import socket
from pathlib import Path

from tests.support.ports import free_port
from tests.support.trunkline_up import Up, manifests
from trunkline.sip.message import Response, parse_message
from trunkline.sip.ua import UserAgent


def with_carrier_numbering(text: str, plan: dict[str, str]) -> str:
    docs = [json.loads(doc) for doc in text.split("\n---\n")]
    for doc in docs:
        if doc["kind"] == "Carrier":
            doc["spec"]["numbering"] = plan
    return "\n---\n".join(json.dumps(doc) for doc in docs)


def user_of(header: str) -> str:
    found = re.search(r"sips?:([^@;>]+)@", header)
    assert found, header
    return found.group(1)


async def test_a_carriers_plan_converts_both_numbers_of_an_inbound_call(
    tmp_path: Path, carrier_port: int, pbx_port: int
) -> None:
    text = with_carrier_numbering(manifests(carrier_port, pbx_port), {"countryCode": "44"})
    up = Up(tmp_path / "up", text, ["--no-relay"]).start()
    carrier, pbx = UserAgent(host="127.0.0.1"), UserAgent(host="127.0.0.4")
    try:
        await pbx.start(pbx_port)
        await carrier.start(carrier_port)
        # The DID dialled in international format through the plan (00 1...), the caller national (0...).
        status = await carrier.call(f"sip:0014155550100@{up.sip}", ("127.0.0.1", up.sip_port),
                                    from_user="02071234567")  # fmt: skip
        assert status == 200, up.output()
        assert pbx.last_invite is not None
        assert user_of(pbx.last_invite.get("From") or "") == "+442071234567"
        assert str(pbx.last_invite.uri).startswith("sip:+14155550100@")
        [cdr] = up.wait_cdrs(1, timeout=20)
        assert (cdr["caller"], cdr["callee"]) == ("+442071234567", "+14155550100")
    finally:
        await pbx.close()
        await carrier.close()
        up.stop()


async def test_a_trunks_plan_converts_both_numbers_of_an_outbound_call(
    tmp_path: Path, carrier_port: int, pbx_port: int
) -> None:
    text = manifests(carrier_port, pbx_port, numbering={"countryCode": "1"})
    up = Up(tmp_path / "up", text, ["--no-relay"]).start()
    carrier, pbx = UserAgent(host="127.0.0.1"), UserAgent(host="127.0.0.2")
    try:
        await carrier.start(carrier_port)
        await pbx.start(0)
        # National caller (the trunk's DID 0 415...), international callee (00 44...).
        status = await pbx.call(f"sip:00442071234567@{up.sip}", ("127.0.0.1", up.sip_port),
                                from_user="04155550100")  # fmt: skip
        assert status == 200, up.output()
        invite = carrier.last_invite
        assert invite is not None
        assert user_of(invite.get("From") or "") == "+14155550100"
        assert str(invite.uri).startswith("sip:+442071234567@")
        [cdr] = up.wait_cdrs(1, timeout=20)
        assert (cdr["caller"], cdr["callee"]) == ("+14155550100", "+442071234567")
    finally:
        await pbx.close()
        await carrier.close()
        up.stop()


def register(sock: socket.socket, edge: tuple[str, int], seq: int, authorization: str = "") -> Response:
    here = sock.getsockname()
    lines = [
        f"REGISTER sip:{edge[0]}:{edge[1]} SIP/2.0",
        f"Via: SIP/2.0/UDP {here[0]}:{here[1]};branch=z9hG4bK-reg{seq};rport",
        "Max-Forwards: 70",
        f"From: <sip:acme@{edge[0]}>;tag=reg1",
        f"To: <sip:acme@{edge[0]}>",
        "Call-ID: digest-options@127.0.0.3",
        f"CSeq: {seq} REGISTER",
        f"Contact: <sip:acme@{here[0]}:{here[1]}>",
        "Expires: 60",
    ]
    if authorization:
        lines.append(f"Authorization: {authorization}")
    sock.sendto(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode(), edge)
    while True:
        message = parse_message(sock.recv(65535))
        if isinstance(message, Response) and message.status >= 200:
            return message


def answer(challenge: str, algorithm: str, realm: str, uri: str) -> str:
    nonce = re.search(r'nonce="([^"]+)"', challenge)
    assert nonce, challenge
    h = hashlib.sha256 if algorithm == "SHA-256" else hashlib.md5

    def hexdigest(text: str) -> str:
        return h(text.encode()).hexdigest()

    ha1, ha2 = hexdigest(f"acme:{realm}:s3cret-acme"), hexdigest(f"REGISTER:{uri}")
    response = hexdigest(f"{ha1}:{nonce.group(1)}:00000001:c0ffee:auth:{ha2}")
    return (
        f'Digest username="acme", realm="{realm}", nonce="{nonce.group(1)}", uri="{uri}", '
        f'response="{response}", algorithm={algorithm}, qop=auth, nc=00000001, cnonce="c0ffee"'
    )


def test_a_trunks_realm_and_algorithms_are_what_the_challenge_offers(tmp_path: Path) -> None:
    digest = {"credentialsSecret": "acme-creds", "realm": "voice.example", "algorithms": ["SHA-256"]}
    auth = {"digest": digest, "ipAcl": ["127.0.0.2/32"]}
    up = Up(tmp_path / "up", manifests(free_port(), free_port(), auth=auth), ["--no-relay"]).start()
    edge = ("127.0.0.1", up.sip_port)
    uri = f"sip:{edge[0]}:{edge[1]}"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.3", 0))
            sock.settimeout(20)
            first = register(sock, edge, 1)
            assert first.status == 401, up.output()
            [challenge] = first.get_all("WWW-Authenticate")  # one algorithm: one challenge
            assert 'realm="voice.example"' in challenge and "algorithm=SHA-256" in challenge
            md5 = register(sock, edge, 2, answer(challenge, "MD5", "voice.example", uri))
            assert md5.status in (401, 403), up.output()  # MD5 is not offered on this trunk
            [challenge] = md5.get_all("WWW-Authenticate")
            # The trunk's name is the realm only when none is set: an answer for it is refused.
            default_realm = register(sock, edge, 3, answer(challenge, "SHA-256", "acme", uri))
            assert default_realm.status in (401, 403), up.output()
            again = register(sock, edge, 4)
            [challenge] = again.get_all("WWW-Authenticate")
            ok = register(sock, edge, 5, answer(challenge, "SHA-256", "voice.example", uri))
            assert ok.status == 200, up.output()
            assert 'why="algorithm not offered"' in up.output() and 'why="wrong realm"' in up.output()
    finally:
        up.stop()
