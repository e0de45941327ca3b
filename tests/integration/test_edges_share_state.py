"""Two `trunkline edge` processes behind one address share Redis: a digest nonce one edge issued is
good at the other, and a trunk's channel cap counts the calls of both."""

from __future__ import annotations

import base64
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import sipp
from tests.support.ports import free_port
from tests.support.redis_server import RedisProcess
from tests.support.trunkline_up import Up, manifests
from trunkline.edge.digest import digest_response
from trunkline.operator.builders import NONCE_FILE
from trunkline.operator.nonce import current_keys, nonce_secret_update
from trunkline.operator.platform import Platform


def operator_nonce_keys() -> str:
    """The file the operator's nonce Secret puts in every edge pod, once rotated: two keys."""
    platform = Platform()
    first = nonce_secret_update(platform, "voice", None, now=0.0)
    rotated = nonce_secret_update(platform, "voice", first, now=25 * 3600.0)
    assert rotated is not None and len(current_keys(rotated)) == 2
    return base64.b64decode(rotated["data"][NONCE_FILE]).decode()


@pytest.fixture
def edges(
    request: pytest.FixtureRequest, tmp_path: Path, redis: RedisProcess, carrier_port: int
) -> Iterator[tuple[Up, Up]]:
    """Two edges on one Redis; each reads its nonce keys from a file (in Kubernetes: the mounted
    Secret). With "different secrets" each edge has its own, as operator-built pods had before."""
    kind = getattr(request, "param", "hand-written")
    texts = {"hand-written": "the same for every edge", "operator Secret": operator_nonce_keys()}
    text = manifests(carrier_port, free_port(), channels=1)
    started = []
    for name in ("a", "b"):
        secret = tmp_path / f"nonce-{name}"
        secret.write_text(texts.get(kind, f"edge {name}'s own"))
        args = ["--redis", redis.url, "--nonce-secret-file", str(secret)]
        started.append(Up(tmp_path / name, text, args, command="edge").start())
    yield started[0], started[1]
    for edge in started:
        edge.stop()


def invite(edge: Up, branch: str, cseq: int, auth: str = "") -> bytes:
    lines = [
        f"INVITE sip:+442071234567@{edge.sip} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.3:{PBX_PORT};branch=z9hG4bK{branch};rport",
        "From: <sip:+14155550100@127.0.0.3>;tag=pbx1",
        f"To: <sip:+442071234567@{edge.sip}>",
        "Call-ID: shared-nonce-1",
        f"CSeq: {cseq} INVITE",
        f"Contact: <sip:pbx@127.0.0.3:{PBX_PORT}>",
        "Max-Forwards: 70",
        *([auth] if auth else []),
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


PBX_PORT = free_port()


def final_response(sock: socket.socket, branch: str) -> str:
    """The final response to the INVITE with `branch` (the unacknowledged 407 to an earlier one may be
    retransmitted meanwhile)."""
    while True:
        text = sock.recv(65536).decode()
        if not text.startswith("SIP/2.0 1") and f"branch=z9hG4bK{branch};" in text:
            return text


@pytest.mark.parametrize("edges", ["hand-written", "operator Secret", "different secrets"], indirect=True)
def test_a_nonce_from_one_edge_is_good_at_the_other(
    edges: tuple[Up, Up], tmp_path: Path, carrier_port: int, request: pytest.FixtureRequest
) -> None:
    a, b = edges
    gateway = sipp.uas(tmp_path / "gw", "127.0.0.1", carrier_port)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as pbx:
            pbx.bind(("127.0.0.3", PBX_PORT))
            pbx.settimeout(5)
            pbx.sendto(invite(a, "one", 1), ("127.0.0.1", a.sip_port))
            challenge = final_response(pbx, "one")
            assert challenge.startswith("SIP/2.0 407 ")
            nonce = re.search(r'nonce="([^"]+)"', challenge)
            assert nonce is not None
            uri = f"sip:+442071234567@{b.sip}"
            response = digest_response("MD5", "acme", "acme", "s3cret-acme", "INVITE", uri, nonce.group(1),
                                       "auth", "00000001", "abc")  # fmt: skip
            auth = (
                f'Proxy-Authorization: Digest username="acme", realm="acme", nonce="{nonce.group(1)}", '
                f'uri="{uri}", response="{response}", algorithm=MD5, qop=auth, nc=00000001, cnonce="abc"'
            )
            pbx.sendto(invite(b, "two", 2, auth), ("127.0.0.1", b.sip_port))
            answer = final_response(pbx, "two")
    finally:
        sipp.stop(gateway)
    if request.node.callspec.params["edges"] == "different secrets":
        # Each pod its own key (operator-built pods before the shared Secret): the answer is refused.
        assert answer.split()[1] in ("401", "403", "407"), answer
    else:
        assert answer.startswith("SIP/2.0 200 "), answer + b.output()


def test_the_channel_cap_counts_calls_on_every_edge(
    edges: tuple[Up, Up], tmp_path: Path, carrier_port: int
) -> None:
    a, b = edges
    gateway = sipp.uas(tmp_path / "gw", "127.0.0.1", carrier_port)
    try:
        held = sipp.Background(
            lambda: sipp.uac(tmp_path / "hold", a.sip, "127.0.0.2", "+442071234567", hold_ms=3000)
        )
        a.wait_busy(1)
        refused = sipp.uac_expect(tmp_path / "other", b.sip, "127.0.0.2", "+442071234567", 503)
        holder = held.result(timeout=30)
        after = sipp.uac(tmp_path / "after", b.sip, "127.0.0.2", "+442071234567")
    finally:
        sipp.stop(gateway)
    assert refused.ok, refused.output + b.output()
    assert holder.ok, holder.output
    assert after.ok, after.output + b.output()  # released within a second of the call's end


@pytest.mark.parametrize(
    "source", ["127.0.0.2", "127.0.0.3"]
)  # IP ACL, and digest (the store is asked first)
def test_without_redis_new_calls_get_503_at_once(tmp_path: Path, carrier_port: int, source: str) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    edge = Up(
        tmp_path / "edge", manifests(carrier_port, free_port()), ["--redis", dead], command="edge"
    ).start()
    try:
        result = sipp.uac_expect(
            tmp_path / "pbx", edge.sip, source, "+442071234567", 503, "-recv_timeout", "3000"
        )
    finally:
        edge.stop()
    assert result.ok, result.output + edge.output()
    assert "Traceback" not in edge.output()
