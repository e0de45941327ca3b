"""SIPp (sip-tester) against trunkline.sip.ua over UDP, TCP and TLS, including loss on UDP."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import pathlib
import socket
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from trunkline.sip.transaction import Timers
from trunkline.sip.ua import UserAgent

pytestmark = pytest.mark.integration


def make_cert(directory: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """Self-signed cert as cacert.pem/cakey.pem (the names SIPp looks for in its cwd)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cacert.pem", directory / "cakey.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


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
    # Debian's SIPp is built without OpenSSL, so TLS is covered by test_tls_calls_between_our_uas.
    [("udp", [], 20), ("udp", ["-lost", "10"], 10), ("tcp", ["-t", "t1"], 20)],
    ids=["udp", "udp-lost10", "tcp"],
)
async def test_sipp_uac_calls_our_uas(
    tmp_path: pathlib.Path, transport: str, extra: list[str], calls: int
) -> None:
    ua = UserAgent(timers=Timers(t1=0.5, t2=4.0))
    tls = None
    if transport == "tls":
        cert, key = make_cert(tmp_path)
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(cert, key)
    addr = await ua.start(0, tls)
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


async def test_our_uac_calls_sipp_uas(tmp_path: pathlib.Path) -> None:
    ua = UserAgent()
    await ua.start()
    port = free_udp_port()
    proc = await asyncio.create_subprocess_exec(
        "sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", str(port), "-m", "3", "-timeout", "30",
        "-timeout_error", "-nostdin", "-trace_stat", cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        await asyncio.sleep(0.5)  # let SIPp bind
        results = [await ua.call(f"sip:service@127.0.0.1:{port}", ("127.0.0.1", port)) for _ in range(3)]
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
        await ua.close()
    assert results == [200, 200, 200]
    assert proc.returncode == 0, out.decode(errors="replace")[-2000:]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_tls_calls_between_our_uas(tmp_path: pathlib.Path) -> None:
    cert, key = make_cert(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
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
