"""The NAT source a binding keeps (where a REGISTER came from) has one formatter and one parser beside
it: IPv4 and IPv6 round-trip, anything else is refused; the edge sends inbound calls there."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import edge_harness as world
from trunkline.core.state import Binding, aor_of
from trunkline.edge.registrar import NatSource


@pytest.mark.parametrize(
    ("source", "text"),
    [
        (NatSource("udp", "192.0.2.1", 5060), "udp:192.0.2.1:5060"),
        (NatSource("tcp", "2001:db8::1", 5060), "tcp:[2001:db8::1]:5060"),
        (NatSource("tls", "::1", 5061), "tls:[::1]:5061"),
    ],
)
def test_nat_sources_format_and_parse_back(source: NatSource, text: str) -> None:
    assert str(source) == text
    assert NatSource.parse(text) == source


@pytest.mark.parametrize(
    "text", ["", "udp", "udp:192.0.2.1", "udp:2001:db8::1:5060", "udp:[2001:db8::1:5060", "udp:[]:5060",
             "udp:host:port", "udp:host:70000", ":host:5060"],
)  # fmt: skip
def test_what_is_no_nat_source_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a NAT source"):
        NatSource.parse(text)


async def test_an_inbound_call_goes_to_the_ipv6_source_of_a_registration_behind_nat(tmp_path: Path) -> None:
    h = world.build(tmp_path, registration={"enabled": True})
    binding = Binding("sip:acme@10.0.0.5:5060", h.stack.clock() + 3600, source="udp:[::1]:5062")
    await h.store.put_binding(aor_of("acme"), binding)
    await h.stack.deliver(world.invite(to="+14155550100", caller="+442071234567", source=world.CARRIER),
                          world.CARRIER)  # fmt: skip
    first = h.stack.requests("INVITE")[0]
    assert first.addr == ("::1", 5062) and first.transport == "udp"
    assert first.request.uri.host == "[::1]"  # type: ignore[union-attr]


async def test_a_binding_with_an_unusable_source_is_skipped(tmp_path: Path) -> None:
    h = world.build(tmp_path, registration={"enabled": True})
    binding = Binding("sip:acme@10.0.0.5:5060", h.stack.clock() + 3600, source="udp:2001:db8::1:5060")
    await h.store.put_binding(aor_of("acme"), binding)
    await h.stack.deliver(world.invite(to="+14155550100", caller="+442071234567", source=world.CARRIER),
                          world.CARRIER)  # fmt: skip
    assert [tx.addr for tx in h.stack.requests("INVITE")] == [world.ORIGINATION]
