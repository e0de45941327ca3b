"""A call through a carrier gateway given by host name (served by a real DNS server on loopback) that
demands digest authentication, carried on by another `trunkline edge` after its edge is SIGKILLed:
the carrier challenges the adopting edge's BYE (401), and the BYE is sent again with the Carrier's
credentials, because the leg's address is what the gateway's name resolves to."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import sipp
from tests.support.challenging_gateway import ChallengingGateway
from tests.support.dns_server import DnsServer
from tests.support.ports import free_port
from tests.support.redis_server import RedisProcess
from tests.support.trunkline_up import Up, manifests
from tests.support.wait import wait_for

USER, PASSWORD = "trunk-acme", "carrier-pw"
GATEWAY_IP = "127.0.0.5"  # only the name says so


@pytest.fixture
def dns(tmp_path: Path) -> Iterator[DnsServer]:
    with DnsServer(tmp_path / "dns", [f"host-record=gw.test,{GATEWAY_IP}"]) as server:
        yield server


def host_name_carrier_with_credentials(port: int) -> str:
    """The standard manifests, the carrier's gateway named `gw.test`, with the Carrier's credentials."""
    text = manifests(port, free_port()).replace(f"sip:127.0.0.1:{port}", f"sip:gw.test:{port}")
    docs = [json.loads(d) for d in text.split("\n---\n")]
    for doc in docs:
        if doc["kind"] == "Carrier":
            doc["spec"]["auth"] = {"credentialsSecret": "pstn-creds", "realm": "carrier.example"}
    docs.append({"apiVersion": "v1", "kind": "Secret",
                 "metadata": {"name": "pstn-creds", "labels": {"trunkline.io/credentials": ""}},
                 "stringData": {"username": USER, "password": PASSWORD}})  # fmt: skip
    return "\n---\n".join(json.dumps(d) for d in docs)


def test_the_adopting_edge_answers_the_carriers_challenge_to_its_bye(
    dns: DnsServer, redis: RedisProcess, tmp_path: Path
) -> None:
    port = free_port(host=GATEWAY_IP)
    service = f"127.0.0.10:{free_port()}"  # both edges' address, as a Kubernetes Service gives pods
    secret = tmp_path / "nonce-secret"
    secret.write_text("the same for every edge")
    host, dns_port = dns.address
    flags = ["--redis", redis.url, "--nonce-secret-file", str(secret), "--service-listen", service,
             "--dns", f"{host}:{dns_port}"]  # fmt: skip
    text = host_name_carrier_with_credentials(port)
    a = Up(tmp_path / "a", text, [*flags, "--edge-id", "edge-a"], command="edge").start()
    b: Up | None = None
    try:
        with ChallengingGateway(port, USER, PASSWORD, host=GATEWAY_IP) as gateway:
            # Held long enough for the second edge to start and the first to die.
            pbx = sipp.Background(lambda: sipp.uac(tmp_path / "pbx", service, "127.0.0.2", "+442071234567",
                                                   hold_ms=40000, timeout=120))  # fmt: skip
            a.wait_busy(1, timeout=30)
            b = Up(tmp_path / "b", text, [*flags, "--edge-id", "edge-b"], command="edge").start()
            assert a.proc is not None
            a.proc.kill()
            a.proc.wait()
            result = pbx.result(timeout=150)  # the PBX's BYE, through the second edge
            cdrs = b.wait_cdrs(1, timeout=30)
            wait_for(lambda: len(gateway.of("BYE")) >= 2, "the BYE sent again with credentials", timeout=10)
    finally:
        for edge in (a, b):
            if edge is not None:
                edge.stop()
    assert b is not None
    assert result.ok, result.output + b.output()
    assert "call adopted" in b.output(), b.output()
    flow = [(s.method, s.answered, s.good) for s in gateway.seen if s.method != "ACK"]
    assert flow == [("INVITE", 407, False), ("INVITE", 200, True), ("BYE", 401, False), ("BYE", 200, True)], (
        flow
    )
    [cdr] = cdrs
    assert cdr["hung_up"] == "caller" and cdr["status"] == 200, cdr
