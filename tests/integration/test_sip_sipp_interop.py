"""SIPp (sip-tester) against trunkline.sip.ua over UDP and TCP, including loss on UDP, and our UAs to
each other over TLS. SIPp over TLS (through stunnel) is in test_sip_sipp_over_tls.py."""

from __future__ import annotations

import asyncio
import pathlib

import pytest

from tests.support.certs import tls_contexts
from tests.support.ports import free_port
from trunkline.sip.transaction import Timers
from trunkline.sip.ua import UserAgent

pytestmark = pytest.mark.integration


async def sipp(cwd: pathlib.Path, *args: str, timeout: float = 60) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "sipp", *args, "-nostdin", "-trace_stat", "-trace_err", "-trace_screen",
        cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    screens = "".join(p.read_text(errors="replace") for p in cwd.glob("*_screen.log"))
    return proc.returncode or 0, out.decode(errors="replace") + screens


@pytest.mark.parametrize(
    ("transport", "extra", "calls"),
    # Debian's SIPp is built without OpenSSL: TLS goes through stunnel in test_sip_sipp_over_tls.py.
    [("udp", [], 20), ("udp", ["-lost", "10"], 10), ("tcp", ["-t", "t1"], 20)],
    ids=["udp", "udp-lost10", "tcp"],
)
async def test_sipp_uac_calls_our_uas(
    tmp_path: pathlib.Path, transport: str, extra: list[str], calls: int
) -> None:
    ua = UserAgent(timers=Timers(t1=0.5, t2=4.0))
    addr = await ua.start(0)
    port = ua.transport.local[transport][1]
    try:
        code, screen = await sipp(
            tmp_path, "-sn", "uac", f"127.0.0.1:{port}", "-i", "127.0.0.1", "-p", "0", "-m", str(calls),
            "-r", "10", "-d", "100", "-timeout", "50", "-timeout_error", "-recv_timeout", "20000", *extra,
        )  # fmt: skip
    finally:
        await ua.close()
    assert code == 0, screen[-3000:]
    assert ua.calls_answered >= calls and addr[1] > 0


# Loss is tested the other way round (SIPp UAC with -lost against our UAS): SIPp 3.6's built-in UAS
# never resends a 200 its -lost dropped and calls our retransmitted INVITE "unexpected".
@pytest.mark.parametrize(("transport", "extra"), [("udp", []), ("tcp", ["-t", "t1"])], ids=["udp", "tcp"])
async def test_our_uac_calls_sipp_uas(tmp_path: pathlib.Path, transport: str, extra: list[str]) -> None:
    ua = UserAgent()
    await ua.start()
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        "sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", str(port), "-m", "5", "-timeout", "60",
        "-timeout_error", "-nostdin", "-trace_stat", *extra, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        await asyncio.sleep(0.5)  # let SIPp bind
        target = f"sip:service@127.0.0.1:{port};transport={transport}"
        results = [await ua.call(target, ("127.0.0.1", port), transport) for _ in range(5)]
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
        await ua.close()
    assert results == [200] * 5
    assert proc.returncode == 0, out.decode(errors="replace")[-2000:]


async def test_tls_calls_between_our_uas(tmp_path: pathlib.Path) -> None:
    server_ctx, client_ctx, _, _ = tls_contexts(tmp_path)
    uas, uac = UserAgent(), UserAgent()
    await uas.start(0, server_ctx)
    await uac.start()
    uac.transport.tls_client = client_ctx
    port = uas.transport.local["tls"][1]
    try:
        results = [await uac.call(f"sips:x@127.0.0.1:{port}", ("127.0.0.1", port), "tls") for _ in range(3)]
        await asyncio.sleep(0.2)
    finally:
        await uac.close()
        await uas.close()
    assert results == [200, 200, 200] and uas.byes == 3
    assert len(uac.transport.connections) <= 1  # one reused connection
