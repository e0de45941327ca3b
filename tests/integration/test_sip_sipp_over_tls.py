"""SIPp against trunkline.sip.ua over TLS, both ways, with stunnel (OpenSSL) as the TLS end SIPp lacks.

Debian's SIPp is built without OpenSSL, so it speaks TCP to a local stunnel that speaks real TLS to our
UA; the certificate is checked on the client side of each TLS hop (stunnel's verifyChain + checkIP,
Python's create_default_context). SIPp's Via and Contact say TCP while its messages reach us over TLS:
responses must go back on the TLS connection the request came in on, not to the Via's sent-by.

    SIPp uac --TCP--> stunnel client --TLS--> our UAS
    our UAC  --TLS--> stunnel server --TCP--> SIPp uas
"""

from __future__ import annotations

import asyncio
import pathlib
import re

import pytest

from tests.support import sipp
from tests.support.certs import tls_contexts
from tests.support.ports import free_port
from tests.support.stunnel import stunnel
from trunkline.sip.message import Response
from trunkline.sip.transaction import Addr, Timers
from trunkline.sip.ua import UserAgent

pytestmark = pytest.mark.integration

CALLS = 10


async def run_sipp(cwd: pathlib.Path, *args: str, timeout: float = 60) -> tuple[int, str]:
    """SIPp to its end; its exit code and its last statistics screen."""
    proc = await asyncio.create_subprocess_exec(
        "sipp", *args, "-t", "t1", "-i", "127.0.0.1", "-nostdin", "-timeout", str(int(timeout) - 10),
        "-timeout_error", "-trace_err", "-trace_screen", cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    logs = "".join(p.read_text(errors="replace") for p in sorted(cwd.glob("*_errors.log")))
    screens = "".join(p.read_text(errors="replace") for p in cwd.glob("*_screen.log"))
    return proc.returncode or 0, out.decode(errors="replace") + logs + screens


def successful_calls(screen: str) -> int:
    """The cumulative "Successful call" count on SIPp's last statistics screen."""
    counts = re.findall(r"Successful call\s*\|\s*\d+\s*\|\s*(\d+)", screen)
    assert counts, "not a SIPp statistics screen:\n" + screen[-2000:]
    return int(counts[-1])


async def test_sipp_uac_calls_our_uas_over_tls(tmp_path: pathlib.Path) -> None:
    server_ctx, _, cert, _ = tls_contexts(tmp_path)
    ua = UserAgent(timers=Timers(t1=0.5, t2=4.0))
    await ua.start(0, server_ctx)
    tls_port = ua.transport.local["tls"][1]
    relay = free_port()
    sent: list[tuple[str, Addr, bytes]] = []  # what our UA wrote, and where (the real send still runs)
    send = ua.transport.send

    def record(data: bytes, addr: Addr, transport: str) -> None:
        sent.append((transport, addr, data.split(b" ", 2)[1]))
        send(data, addr, transport)

    ua.transport.send = record  # type: ignore[method-assign]
    client = {
        "client": "yes", "accept": f"127.0.0.1:{relay}", "connect": f"127.0.0.1:{tls_port}",
        "CAfile": str(cert), "verifyChain": "yes", "checkIP": "127.0.0.1", "sslVersionMin": "TLSv1.2",
    }  # fmt: skip
    try:
        with stunnel(tmp_path, {"sipp-to-ua": client}) as log:
            code, screen = await run_sipp(
                tmp_path, "-sn", "uac", f"127.0.0.1:{relay}", "-p", "0", "-m", str(CALLS),
                "-r", "10", "-d", "100", "-recv_timeout", "20000",
            )  # fmt: skip
            stunnel_log = log.read_text()
    finally:
        await ua.close()
    assert code == 0, screen[-3000:]
    assert successful_calls(screen) == CALLS
    # Every request SIPp sent reached our UA over TLS: the handshake happened at our end too.
    methods = [s.what for s in ua.seen]
    assert sorted(set(methods)) == ["ACK", "BYE", "INVITE"]
    assert methods.count("INVITE") == methods.count("ACK") == methods.count("BYE") == CALLS
    assert ua.byes == CALLS and ua.calls_answered == CALLS
    assert len({(s.transport, s.tls) for s in ua.seen}) == 1
    assert ua.seen[0].transport == "tls" and ua.seen[0].tls in ("TLSv1.2", "TLSv1.3")
    # SIPp's Via named TCP and SIPp's own port, yet every response (180, 200, 200 to BYE) went back on
    # the one TLS connection from the relay.
    invite = ua.last_invite
    assert invite is not None and invite.top_via.transport == "TCP" and invite.top_via.port
    assert len({(transport, addr) for transport, addr, _ in sent}) == 1
    transport, addr, _ = sent[0]
    assert transport == "tls" and addr[1] != invite.top_via.port
    assert [status for _, _, status in sent].count(b"200") == 2 * CALLS
    assert "Certificate accepted at depth=0" in stunnel_log, stunnel_log[-2000:]
    assert "TLS connected" in stunnel_log


async def test_our_uac_calls_sipp_uas_over_tls(tmp_path: pathlib.Path) -> None:
    _, client_ctx, cert, key = tls_contexts(tmp_path)
    ua = UserAgent()
    await ua.start()
    ua.transport.tls_client = client_ctx  # trusts only our cert and checks it names 127.0.0.1
    sipp_port, relay = free_port(), free_port()
    server = {"accept": f"127.0.0.1:{relay}", "connect": f"127.0.0.1:{sipp_port}", "cert": str(cert),
              "key": str(key), "sslVersionMin": "TLSv1.2"}  # fmt: skip
    sessions: list[tuple[int, str | None, str, str]] = []

    async def note_session(answer: Response) -> None:
        session = ua.transport.tls_session(("127.0.0.1", relay))
        assert session is not None, "no TLS connection to the relay while the call is up"
        cipher, peer = session.cipher(), session.getpeercert()
        subject = dict(item for rdn in peer["subject"] for item in rdn) if peer else {}
        sessions.append(
            (id(session), session.version(), cipher[0] if cipher else "", str(subject.get("commonName")))
        )
        await asyncio.sleep(0.1)

    with stunnel(tmp_path, {"ua-to-sipp": server}):
        uas = asyncio.ensure_future(run_sipp(tmp_path, "-sn", "uas", "-p", str(sipp_port), "-m", str(CALLS)))
        try:
            await asyncio.sleep(0.5)  # let SIPp bind
            target = f"sip:service@127.0.0.1:{sipp_port};transport=tcp"
            results = [
                await ua.call(target, ("127.0.0.1", relay), "tls", during=note_session) for _ in range(CALLS)
            ]
            code, screen = await asyncio.wait_for(uas, 30)
        finally:
            uas.cancel()
            await ua.close()
    assert results == [200] * CALLS
    assert code == 0, screen[-3000:]
    assert sipp.received(screen, "INVITE") == CALLS and sipp.received(screen, "BYE") == CALLS
    assert re.findall(r"-+> ACK\s+E-RTD1\s+(\d+)", screen)[-1] == str(CALLS)  # "----> ACK  E-RTD1  10"
    assert successful_calls(screen) == CALLS
    # The relay's cert, verified by our client, on one TLS connection reused by every call.
    assert len(sessions) == CALLS and len(set(sessions)) == 1
    _, version, cipher, common_name = sessions[0]
    assert version in ("TLSv1.2", "TLSv1.3") and cipher and common_name == "trunkline-test"
    assert [s.what for s in ua.seen] == ["200 INVITE", "200 BYE"] * CALLS
    assert {(s.transport, s.tls) for s in ua.seen} == {("tls", version)}
