"""Edge metrics: each counter moves with what should move it; labels stay in closed sets."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from trunkline.edge.metrics import EdgeMetrics, outcome_of, status_class


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_calls_requests_rejections_and_histograms_move() -> None:
    registry = CollectorRegistry()
    metrics = EdgeMetrics(registry)
    metrics.call_started("acme")
    metrics.call_started("acme")
    metrics.call_ended("acme", "inbound", 200, answered_for=42.0)
    metrics.request("INVITE", "received")
    metrics.request("FOO", "received")  # not a method we name: `other`
    metrics.response("INVITE", 183, "sent")
    metrics.rejected("cps")
    metrics.rejected("made-up")
    metrics.post_dial_delay("acme", 1.5)
    metrics.attempt("telco", "gw1", "answered")
    metrics.store("admit", 0.002)
    metrics.store("admit", 0.5, ok=False)
    metrics.set_registrations({"acme": 3, "beta": 1})
    metrics.count_flood_drops(lambda: 7)
    s = _samples(registry)
    assert s[("trunkline_active_calls", (("trunk", "acme"),))] == 1
    assert (
        s[("trunkline_calls_total", (("direction", "inbound"), ("outcome", "answered"), ("trunk", "acme")))]
        == 1
    )
    assert s[("trunkline_sip_requests_total", (("direction", "received"), ("method", "INVITE")))] == 1
    assert s[("trunkline_sip_requests_total", (("direction", "received"), ("method", "other")))] == 1
    key = (("direction", "sent"), ("method", "INVITE"), ("status_class", "1xx"))
    assert s[("trunkline_sip_responses_total", key)] == 1
    assert s[("trunkline_rejections_total", (("rule", "cps"),))] == 1
    assert s[("trunkline_rejections_total", (("rule", "other"),))] == 1
    assert s[("trunkline_post_dial_delay_seconds_count", (("trunk", "acme"),))] == 1
    assert s[("trunkline_call_duration_seconds_sum", (("direction", "inbound"), ("trunk", "acme")))] == 42
    key = (("carrier", "telco"), ("gateway", "gw1"), ("outcome", "answered"))
    assert s[("trunkline_carrier_attempts_total", key)] == 1
    assert s[("trunkline_store_operation_seconds_count", (("operation", "admit"),))] == 2
    assert s[("trunkline_store_errors_total", (("operation", "admit"),))] == 1
    assert s[("trunkline_rejections_total", (("rule", "flood"),))] == 7  # read from the flood guard
    assert s[("trunkline_rejections_total", (("rule", "acl"),))] == 0  # every rule served from the start
    assert s[("trunkline_registrations", (("trunk", "acme"),))] == 3
    metrics.set_registrations({"acme": 2})  # beta left the registering trunks: its series goes
    s = _samples(registry)
    assert s[("trunkline_registrations", (("trunk", "acme"),))] == 2
    assert ("trunkline_registrations", (("trunk", "beta"),)) not in s
    metrics.set_registered("beta", 4)
    assert _samples(registry)[("trunkline_registrations", (("trunk", "beta"),))] == 4
    metrics.forget_trunk("acme")
    assert ("trunkline_registrations", (("trunk", "acme"),)) not in _samples(registry)


def test_status_classes_and_outcomes() -> None:
    assert [status_class(c) for c in (100, 183, 200, 302, 486, 503, 603, 0, 999)] == [
        "1xx", "1xx", "2xx", "3xx", "4xx", "5xx", "6xx", "other", "other",
    ]  # fmt: skip
    assert [outcome_of(c) for c in (200, 486, 480, 487, 403, 503)] == [
        "answered", "busy", "no_answer", "cancelled", "rejected", "failed",
    ]  # fmt: skip
