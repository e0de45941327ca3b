"""`trunkline edge` with TLS on both sides: a PBX reaches the edge's TLS listener and the edge reaches a
carrier gateway given with `transport=tls`, verifying its certificate. SIPp speaks TCP; stunnel
(OpenSSL) is its TLS end on each side:

    SIPp PBX --TCP--> stunnel client --TLS--> edge --TLS--> stunnel server --TCP--> SIPp carrier
"""

from __future__ import annotations

from pathlib import Path

from tests.support import sipp
from tests.support.certs import tls_contexts
from tests.support.ports import free_port
from tests.support.stunnel import stunnel
from tests.support.trunkline_up import Up, manifests


def call_over_tls(tmp_path: Path, trust_the_carrier: bool) -> tuple[sipp.SippResult, str, Up, str]:
    _, _, cert, key = tls_contexts(tmp_path)  # for 127.0.0.1: the edge's and the carrier's
    carrier_sipp, carrier_tls, pbx_relay, edge_tls = free_port(), free_port(), free_port(), free_port()
    text = manifests(carrier_tls, free_port()).replace(
        f"sip:127.0.0.1:{carrier_tls}", f"sip:127.0.0.1:{carrier_tls};transport=tls"
    )
    flags = ["--tls-listen", f"127.0.0.1:{edge_tls}", "--tls-cert", str(cert), "--tls-key", str(key)]
    if trust_the_carrier:
        flags += ["--tls-ca", str(cert)]
    edge = Up(tmp_path / "edge", text, flags, command="edge").start()
    services = {
        "pbx-to-edge": {  # verifies the edge's certificate; connects from the trunk's IP ACL address
            "client": "yes", "accept": f"127.0.0.1:{pbx_relay}", "connect": f"127.0.0.1:{edge_tls}",
            "local": "127.0.0.2", "CAfile": str(cert), "verifyChain": "yes", "checkIP": "127.0.0.1",
        },
        "edge-to-carrier": {
            "accept": f"127.0.0.1:{carrier_tls}", "connect": f"127.0.0.1:{carrier_sipp}",
            "cert": str(cert), "key": str(key),
        },
    }  # fmt: skip
    carrier = sipp.uas(tmp_path / "carrier", "127.0.0.1", carrier_sipp, "-t", "t1")
    try:
        with stunnel(tmp_path, services) as log:
            pbx = sipp.uac(tmp_path / "pbx", f"127.0.0.1:{pbx_relay}", "127.0.0.2", "+442071234567",
                           "-t", "t1", timeout=30)  # fmt: skip
            edge.wait_cdrs(1)
            stunnel_log = log.read_text()
    finally:
        carrier_out = sipp.stop(carrier)
        edge.stop()
    return pbx, carrier_out, edge, stunnel_log


def test_a_pbx_over_tls_calls_a_carrier_over_tls(tmp_path: Path) -> None:
    pbx, carrier_out, edge, stunnel_log = call_over_tls(tmp_path, trust_the_carrier=True)
    assert pbx.ok, pbx.output + carrier_out + edge.output()
    assert "Certificate accepted" in stunnel_log  # the PBX side checked the edge's certificate
    assert stunnel_log.count("TLS accepted") >= 1  # the edge came to the carrier over TLS
    assert sipp.received(carrier_out, "INVITE") == 1 and sipp.received(carrier_out, "BYE") == 1, carrier_out
    [cdr] = edge.cdrs()
    assert cdr["status"] == 200 and cdr["hung_up"] == "caller", cdr
    assert str(cdr["attempts"][0]["target"]).endswith(";transport=tls"), cdr  # type: ignore[index]


def test_a_carrier_whose_certificate_is_not_trusted_is_not_called(tmp_path: Path) -> None:
    pbx, carrier_out, edge, _ = call_over_tls(tmp_path, trust_the_carrier=False)
    assert not pbx.ok  # nothing answers: the edge refused the handshake
    assert sipp.received(carrier_out, "INVITE") == 0, carrier_out
    assert "CERTIFICATE_VERIFY_FAILED" in edge.output(), edge.output()
    [cdr] = edge.cdrs()
    assert cdr["status"] == 408 and cdr["attempts"][0]["status"] is None, cdr  # type: ignore[index]
