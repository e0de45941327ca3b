"""Host names in SIP, resolved by the edge through a real DNS server (dnsmasq on a loopback port): a
carrier gateway given by name, and a callee whose Contact (the dialog's remote target) is a host
name: the PBX's BYE must reach it there (RFC 3263 for in-dialog requests)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import sipp
from tests.support.dns_server import DnsServer
from tests.support.ports import free_port
from tests.support.trunkline_up import Up, manifests

# The carrier answers with a Contact naming a host; its BYE and 200 come from the same SIPp.
GATEWAY = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="gateway with a host name contact">
  <recv request="INVITE"/>
  <send><![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:gw@far-contact.test:[local_port]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=gw 1 1 IN IP4 [local_ip]
      s=-
      c=IN IP4 [local_ip]
      t=0 0
      m=audio [auto_media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
  ]]></send>
  <recv request="ACK"/>
  <recv request="BYE"/>
  <send><![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
  ]]></send>
  <pause milliseconds="200"/>
</scenario>
"""


@pytest.fixture
def dns(tmp_path: Path) -> Iterator[DnsServer]:
    # The gateway lives on 127.0.0.5; the names are the only way the edge can learn that.
    records = ["host-record=gw.test,127.0.0.5", "host-record=far-contact.test,127.0.0.5"]
    with DnsServer(tmp_path / "dns", records) as server:
        yield server


def test_a_gateway_and_its_contact_given_by_host_name(dns: DnsServer, tmp_path: Path) -> None:
    port = free_port(host="127.0.0.5")
    text = manifests(port, free_port()).replace(f"sip:127.0.0.1:{port}", f"sip:gw.test:{port}")
    host, dns_port = dns.address
    edge = Up(tmp_path / "edge", text, ["--dns", f"{host}:{dns_port}"], command="edge").start()
    scenario = sipp.write_scenario(tmp_path / "gw", "gateway.xml", GATEWAY)
    gateway = sipp.uas(tmp_path / "gw", "127.0.0.5", port, "-m", "1", scenario=str(scenario))
    try:
        pbx = sipp.uac(tmp_path / "pbx", edge.sip, "127.0.0.2", "+442071234567")
        cdrs = edge.wait_cdrs(1)
    finally:
        gateway_out = sipp.stop(gateway, finish_within=10)
        edge.stop()
    assert pbx.ok, pbx.output + gateway_out + edge.output()
    assert sipp.received(gateway_out, "BYE") == 1, gateway_out
    [cdr] = cdrs
    assert cdr["hung_up"] == "caller" and cdr["attempts"] == [
        {"target": f"sip:gw.test:{port}", "status": 200, "gateway": f"127.0.0.5:{port}"}  # resolved
    ]
