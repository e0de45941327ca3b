"""A trunk's rules through `trunkline up`, driven by SIPp: failover, geo and caller-ID policy, unknown
DIDs, channel caps, hop limits, health pings. Each case checks the SIP status the caller gets and
what reached (or did not reach) the far end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import sipp
from tests.support.ports import free_port
from tests.support.trunkline_up import Up, manifests


def start_up(tmp_path: Path, carrier: int | list[int], **trunk_spec: object) -> Up:
    return Up(tmp_path / "up", manifests(carrier, free_port(), **trunk_spec)).start()


@pytest.fixture
def ports() -> list[int]:
    return [free_port(), free_port()]


@pytest.fixture
def up(tmp_path: Path, ports: list[int]) -> Iterator[Up]:
    running = start_up(tmp_path, ports)
    yield running
    running.stop()


def test_503_fails_over_to_the_next_gateway(up: Up, tmp_path: Path, ports: list[int]) -> None:
    broken = sipp.uas_status(tmp_path / "gw1", "127.0.0.1", ports[0], 503, "Service Unavailable")
    healthy = sipp.uas(tmp_path / "gw2", "127.0.0.1", ports[1])
    try:
        result = sipp.uac(tmp_path / "pbx", up.sip, "127.0.0.2", "+442071234567")
    finally:
        sipp.stop(broken), sipp.stop(healthy)
    assert result.ok, result.output + up.output()
    [cdr] = up.wait_cdrs(1)
    assert [a["status"] for a in cdr["attempts"]] == [503, 200]  # type: ignore[index, union-attr]


def test_486_goes_straight_back_without_trying_the_next(up: Up, tmp_path: Path, ports: list[int]) -> None:
    busy = sipp.uas_status(tmp_path / "gw1", "127.0.0.1", ports[0], 486, "Busy Here")
    second = sipp.uas(tmp_path / "gw2", "127.0.0.1", ports[1])
    try:
        result = sipp.uac_expect(tmp_path / "pbx", up.sip, "127.0.0.2", "+442071234567", 486)
    finally:
        sipp.stop(busy)
        second_out = sipp.stop(second)
    assert result.ok, result.output + up.output()
    [cdr] = up.wait_cdrs(1)
    assert [a["status"] for a in cdr["attempts"]] == [486]  # type: ignore[index, union-attr]
    assert sipp.received(second_out, "INVITE") == 0  # the second gateway was never asked


def test_a_silent_gateway_fails_over_within_seconds(up: Up, tmp_path: Path, ports: list[int]) -> None:
    healthy = sipp.uas(tmp_path / "gw2", "127.0.0.1", ports[1])  # nothing listens on the first one
    try:
        result = sipp.uac(tmp_path / "pbx", up.sip, "127.0.0.2", "+442071234567", timeout=20)
    finally:
        sipp.stop(healthy)
    assert result.ok, result.output + up.output()
    [cdr] = up.wait_cdrs(1)
    assert [a["status"] for a in cdr["attempts"]] == [None, 200]  # type: ignore[index, union-attr]


@pytest.mark.parametrize(
    ("ip", "callee", "caller", "status", "rule"),
    [
        ("127.0.0.2", "+881612345678", "+14155550100", 403, "allowedPrefixes"),  # not in +1/+44
        ("127.0.0.2", "+442071234567", "+19995550000", 403, "callerId"),  # not one of the trunk's DIDs
        ("127.0.0.2", "not-a-number", "+14155550100", 484, "number"),
        ("127.0.0.1", "+14155550199", "+442071234567", 404, "unknown DID"),  # from the carrier
    ],
)
def test_policy_answers(
    up: Up, tmp_path: Path, ip: str, callee: str, caller: str, status: int, rule: str
) -> None:
    result = sipp.uac_expect(tmp_path / "caller", up.sip, ip, callee, status, caller=caller)
    assert result.ok, result.output + up.output()
    assert f"rule={rule}" in up.output() or f'rule="{rule}"' in up.output()  # logfmt quotes spaces


def test_unknown_source_without_credentials_is_challenged_and_reaches_nobody(
    up: Up, tmp_path: Path, ports: list[int]
) -> None:
    gateway = sipp.uas(tmp_path / "gw", "127.0.0.1", ports[0])
    try:
        result = sipp.uac_expect(tmp_path / "stranger", up.sip, "127.0.0.9", "+442071234567", 407)
    finally:
        out = sipp.stop(gateway)
    assert result.ok, result.output + up.output()
    assert up.wait_cdrs(0) == []
    assert sipp.received(out, "INVITE") == 0


def test_max_forwards_zero_is_483(up: Up, tmp_path: Path) -> None:
    result = sipp.uac_expect(tmp_path / "pbx", up.sip, "127.0.0.2", "+442071234567", 483, max_forwards=0)
    assert result.ok, result.output + up.output()


def test_channel_cap_answers_503_and_frees_channels(tmp_path: Path, ports: list[int]) -> None:
    up = start_up(tmp_path, ports[0], channels=2)
    gateway = sipp.uas(tmp_path / "gw", "127.0.0.1", ports[0])
    try:
        # Two calls hold their channels for 3 s while a third arrives.
        held = sipp.Background(lambda: sipp.uac(
            tmp_path / "hold", up.sip, "127.0.0.2", "+442071234567", "-l", "2", "-r", "10",
            calls=2, hold_ms=3000))  # fmt: skip
        up.wait_busy(2)
        refused = sipp.uac_expect(tmp_path / "third", up.sip, "127.0.0.2", "+442071234567", 503)
        holders = held.result(timeout=30)
        after = sipp.uac(tmp_path / "after", up.sip, "127.0.0.2", "+442071234567")
    finally:
        sipp.stop(gateway)
        up.stop()
    assert refused.ok, refused.output + up.output()
    assert holders.ok, holders.output
    assert after.ok, after.output  # the channels were free again once the calls ended
    assert "rule=channels" in up.output()


def test_options_ping_is_answered_200(up: Up, tmp_path: Path) -> None:
    scenario = sipp.write_scenario(tmp_path / "ping", "options.xml", OPTIONS)
    result = sipp.uac(tmp_path / "ping", up.sip, "127.0.0.9", "edge", scenario=str(scenario))
    assert result.ok, result.output + up.output()


OPTIONS = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="options">
  <send retrans="500"><![CDATA[
      OPTIONS sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:monitor@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 OPTIONS
      Max-Forwards: 70
      Content-Length: 0
  ]]></send>
  <recv response="200"/>
</scenario>
"""


def test_registered_contact_is_the_first_inbound_target(up: Up, tmp_path: Path) -> None:
    phone_port = free_port()
    phone = sipp.uas(tmp_path / "phone", "127.0.0.5", phone_port)
    try:
        registered = sipp.uac(tmp_path / "register", up.sip, "127.0.0.3", "acme", "-au", "acme", "-ap",
                              "s3cret-acme", "-key", "contact", f"sip:acme@127.0.0.5:{phone_port}",
                              scenario="pbx_register.xml")  # fmt: skip
        assert registered.ok, registered.output + up.output()
        call = sipp.uac(tmp_path / "carrier", up.sip, "127.0.0.1", "+14155550100", caller="+442071234567")
    finally:
        phone_out = sipp.stop(phone)
    assert call.ok, call.output + phone_out + up.output()
    [cdr] = up.wait_cdrs(1)
    assert [a["target"] for a in cdr["attempts"]] == [f"sip:acme@127.0.0.5:{phone_port}"]  # type: ignore[index, union-attr]


def test_wrong_register_password_is_refused(up: Up, tmp_path: Path) -> None:
    contact = ["-key", "contact", "sip:acme@127.0.0.5:5060"]
    result = sipp.uac(tmp_path / "register", up.sip, "127.0.0.3", "acme", "-au", "acme", "-ap", "wrong",
                      *contact, scenario="pbx_register.xml", timeout=5)  # fmt: skip
    assert not result.ok  # a second 401, never a 200
    assert "auth failed" in up.output() and 'why="wrong password"' in up.output()


def test_cancel_while_ringing_cleans_up_both_legs(up: Up, tmp_path: Path, ports: list[int]) -> None:
    gateway = sipp.uas(tmp_path / "gw", "127.0.0.1", ports[0], scenario="gateway_rings.xml")
    try:
        result = sipp.uac(tmp_path / "pbx", up.sip, "127.0.0.2", "+442071234567", scenario="pbx_cancel.xml")
        cdrs = up.wait_cdrs(1)
    finally:
        gateway_out = sipp.stop(gateway)
    assert result.ok, result.output + up.output()
    assert cdrs, gateway_out + up.output()
    [cdr] = cdrs
    assert sipp.received(gateway_out, "CANCEL") == 1 and sipp.received(gateway_out, "ACK") == 1, gateway_out
    assert cdr["status"] == 487 and cdr["hung_up"] == "caller"
    up.wait_busy(0)  # the channel is free again


def test_hold_info_and_hangup_by_the_callee(up: Up, tmp_path: Path, ports: list[int]) -> None:
    gateway = sipp.uas(tmp_path / "gw", "127.0.0.1", ports[0], scenario="gateway_midcall.xml")
    try:
        result = sipp.uac(tmp_path / "pbx", up.sip, "127.0.0.2", "+442071234567", scenario="pbx_midcall.xml")
        cdrs = up.wait_cdrs(1)
    finally:
        gateway_out = sipp.stop(gateway)
    assert result.ok, result.output + gateway_out + up.output()
    assert "Successful call        |" in gateway_out and sipp.received(gateway_out, "INFO") == 1, gateway_out
    [cdr] = cdrs
    assert cdr["hung_up"] == "callee" and cdr["status"] == 200


def test_calls_per_second_over_the_rate_get_503(tmp_path: Path, ports: list[int]) -> None:
    up = start_up(tmp_path, ports[0], callsPerSecond=0.2)  # one call, then none for 5 s
    gateway = sipp.uas(tmp_path / "gw", "127.0.0.1", ports[0])
    try:
        first = sipp.uac(tmp_path / "first", up.sip, "127.0.0.2", "+442071234567")
        second = sipp.uac_expect(tmp_path / "second", up.sip, "127.0.0.2", "+442071234567", 503)
    finally:
        sipp.stop(gateway)
        up.stop()
    assert first.ok, first.output + up.output()
    assert second.ok, second.output + up.output()
    assert "rule=callsPerSecond" in up.output()
