"""Signalling-defence settings: edge flags -> SignallingLimits, Trunk/Carrier `flood` -> per-CIDR budgets."""

from __future__ import annotations

import ipaddress

import pytest

from trunkline.core.models import Carrier, Trunk
from trunkline.edge.defences import SignallingLimits, flood_rules
from trunkline.edge.server import build_parser, signalling_limits
from trunkline.sip.flood import BURST_SECONDS, Budget
from trunkline.sip.transport import StreamLimits


def trunk(name: str, acl: list[str], flood: dict[str, object] | None = None) -> Trunk:
    spec: dict[str, object] = {"auth": {"ipAcl": acl}}
    if flood is not None:
        spec["flood"] = flood
    return Trunk.model_validate({"metadata": {"name": name}, "spec": spec})


def carrier(cidrs: list[str], flood: dict[str, object] | None = None) -> Carrier:
    spec: dict[str, object] = {"gateways": [{"uri": "sip:gw.example.net"}], "inboundCidrs": cidrs}
    if flood is not None:
        spec["flood"] = flood
    return Carrier.model_validate({"metadata": {"name": "carrier"}, "spec": spec})


def test_flags_default_and_set() -> None:
    default = signalling_limits(build_parser().parse_args(["-f", "x.yaml"]))
    assert default == SignallingLimits(Budget(), StreamLimits(), ())
    args = build_parser().parse_args(
        ["-f", "x.yaml", "--flood-rate", "7", "--flood-bytes", "9000", "--flood-cooldown", "3",
         "--max-connections-per-source", "4", "--header-deadline", "2.5", "--idle-timeout", "60",
         "--contact-deny", "10.96.0.0/12", "--contact-deny", "fd00::/8"]
    )  # fmt: skip
    limits = signalling_limits(args)
    assert limits.flood == Budget(7, 9000, 3)
    assert limits.stream == StreamLimits(4, 2.5, 60)
    assert limits.contact_deny == (ipaddress.ip_network("10.96.0.0/12"), ipaddress.ip_network("fd00::/8"))


@pytest.mark.parametrize("flag", [["--flood-rate", "0"], ["--header-deadline", "-1"], ["--flood-bytes", "x"]])
def test_bad_flag_values_are_usage_errors(flag: list[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["-f", "x.yaml", *flag])


def test_bad_deny_cidr_and_connection_cap_are_config_errors() -> None:
    from trunkline.core.net import ConfigError

    for extra in (["--contact-deny", "nope"], ["--max-connections-per-source", "0"]):
        with pytest.raises(ConfigError):
            signalling_limits(build_parser().parse_args(["-f", "x.yaml", *extra]))


def test_known_peers_are_exempt_by_default_and_can_get_a_budget() -> None:
    trunks = [trunk("pbx", ["198.51.100.0/24"]), trunk("noisy", ["192.0.2.0/24"], {"exempt": False,
              "messagesPerSecond": 3, "bytesPerSecond": 100000})]  # fmt: skip
    carriers = [carrier(["203.0.113.0/24"])]
    guard = SignallingLimits(Budget(rate=1, bytes_per_second=1e9, cooldown=5)).guard(trunks, carriers)
    assert all(guard.admit("198.51.100.9", 500, 0.0) for _ in range(1000))
    assert all(guard.admit("203.0.113.9", 500, 0.0) for _ in range(1000))
    assert sum(guard.admit("192.0.2.9", 500, 0.0) for _ in range(100)) == int(3 * BURST_SECONDS)
    assert sum(guard.admit("100.64.0.1", 500, 0.0) for _ in range(100)) == int(1 * BURST_SECONDS)
    rules = flood_rules(trunks, carriers, 5)
    assert rules[-1].budget == Budget(3, 100000, 5)  # exempt rules first


def test_new_trunk_fields_have_their_defaults() -> None:
    t = Trunk.model_validate({"metadata": {"name": "t"}, "spec": {}})
    assert t.spec.flood.exempt and t.spec.registration.maxContacts == 5


def test_counters_reach_metrics() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from trunkline.edge.defences import DefenceCollector
    from trunkline.sip.transport import SipTransport

    transport = SipTransport(lambda m, a, t: None, flood=SignallingLimits(Budget(rate=1)).guard())
    registry = CollectorRegistry()
    registry.register(DefenceCollector(lambda: transport, lambda: 0))
    for _ in range(5):
        transport.datagram(b"garbage", ("192.0.2.1", 5060))
    transport.refused_connections = 3
    text = generate_latest(registry).decode()
    assert 'trunkline_sip_flood_messages_total{verdict="admitted"} 2.0' in text
    assert 'trunkline_sip_flood_messages_total{verdict="dropped_rate"} 1.0' in text
    assert 'trunkline_sip_flood_messages_total{verdict="dropped_cooldown"} 2.0' in text
    assert "trunkline_sip_flood_cooldowns_total 1.0" in text
    assert "trunkline_sip_flood_tracked_sources 1.0" in text
    assert 'trunkline_sip_connections_refused_total{limit="per_source"} 3.0' in text
