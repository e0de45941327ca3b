"""/metrics of a real edge process: `trunkline_registrations{trunk}` follows a SIPp PBX's REGISTER,
and `trunkline_rejections_total` counts a source in no trunk's IP ACL (`acl`) and the messages the
flood guard drops (`flood`)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import sipp
from tests.support.trunkline_up import Up, manifests

pytestmark = pytest.mark.integration


def _value(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


def _wait_for(up: Up, what: str, check: Callable[[str], bool], timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while not check(text := up.metrics()):
        assert time.monotonic() < deadline, f"never {what}:\n{text}\n{up.output()}"
        time.sleep(0.2)
    return text


def test_a_registered_contact_shows_on_its_trunk(tmp_path: Path, carrier_port: int, pbx_port: int) -> None:
    up = Up(tmp_path / "up", manifests(carrier_port, pbx_port)).start()
    try:
        # The edge counts every registering trunk from its start: 0 before any REGISTER.
        _wait_for(up, "acme at 0", lambda t: _value(t, "trunkline_registrations", trunk="acme") == 0)
        registered = sipp.uac(tmp_path / "register", up.sip, "127.0.0.3", "acme", "-au", "acme", "-ap",
                              "s3cret-acme", "-key", "contact", "sip:acme@127.0.0.5:5060",
                              scenario="pbx_register.xml")  # fmt: skip
        assert registered.ok, registered.output + up.output()
        _wait_for(up, "acme at 1", lambda t: _value(t, "trunkline_registrations", trunk="acme") == 1)
    finally:
        up.stop()


def test_refusals_by_acl_and_flood_are_counted(tmp_path: Path, carrier_port: int, pbx_port: int) -> None:
    # No digest trunk: a source outside acme's IP ACL (127.0.0.2) has nothing to authenticate with.
    docs = [json.loads(d) for d in manifests(carrier_port, pbx_port).split("\n---\n")]
    for doc in docs:
        if doc["kind"] == "Trunk":
            doc["spec"]["auth"] = {"ipAcl": ["127.0.0.2/32"]}
            doc["spec"]["registration"] = {"enabled": False}
    text = "\n---\n".join(json.dumps(d) for d in docs)
    flood = ["--flood-rate", "5", "--flood-cooldown", "60"]
    edge = Up(tmp_path / "edge", text, flood, command="edge").start()
    try:
        refused = sipp.uac_expect(tmp_path / "stranger", edge.sip, "127.0.0.3", "+442071234567", 403)
        assert refused.ok, refused.output + edge.output()
        _wait_for(edge, "an acl refusal", lambda t: _value(t, "trunkline_rejections_total", rule="acl") == 1)

        # 40 OPTIONS at once from one source: a budget of 5/s (bursts of 10) drops the rest unread.
        host, port = edge.sip.split(":")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as flooder:
            flooder.bind(("127.0.0.9", 0))
            local = flooder.getsockname()[1]
            for n in range(40):
                flooder.sendto(_options(n, local, host, int(port)), (host, int(port)))

        def flood_counted(t: str) -> bool:
            dropped = sum(_value(t, "trunkline_sip_flood_messages_total", verdict=v) or 0
                          for v in ("dropped_rate", "dropped_cooldown"))  # fmt: skip
            return dropped >= 20 and _value(t, "trunkline_rejections_total", rule="flood") == dropped

        text = _wait_for(edge, "the flood's drops as rejections", flood_counted)
        assert _value(text, "trunkline_rejections_total", rule="acl") == 1  # the flood is not an acl refusal
    finally:
        edge.stop()


def _options(n: int, local_port: int, host: str, port: int) -> bytes:
    return (
        f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.9:{local_port};branch=z9hG4bK-flood-{n};rport\r\n"
        f"From: <sip:flood@127.0.0.9>;tag=f{n}\r\nTo: <sip:{host}>\r\nCall-ID: flood-{n}@127.0.0.9\r\n"
        "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()
