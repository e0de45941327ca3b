"""W3C trace context in SIP with peers that ask for it (`spec.tracing.traceparentHeader`), through a real
edge process, SIPp and Jaeger: a PBX's `traceparent` parents the call's trace and the carrier's INVITE
names the attempt span (and the other way for a carrier's call to a DID); from a trunk without the
option it is ignored, and to a carrier without it nothing is sent; a malformed one starts a trace of
the edge's own."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from tests.support import sipp
from tests.support.jaeger import Jaeger, parent_id
from tests.support.ports import free_port
from tests.support.trunkline_up import Up, manifests

pytestmark = pytest.mark.integration

FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "200", "OTEL_EXPORTER_OTLP_TIMEOUT": "3"}


def _manifests(traced_port: int, quiet_port: int, pbx_port: int) -> str:
    """Trunk acme (ACL 127.0.0.2) and carrier pstn (default route) take part in trace context; trunk
    beta (ACL 127.0.0.3) and carrier quiet (+33) do not."""
    docs = [json.loads(d) for d in manifests(traced_port, pbx_port).split("\n---\n")]
    tracing = {"traceparentHeader": True}
    for doc in docs:
        if doc["kind"] in ("Trunk", "Carrier"):
            doc["spec"]["tracing"] = tracing
        if doc["kind"] == "Trunk":
            doc["spec"]["outbound"] = {"allowedPrefixes": ["+44", "+33"]}
    beta = {"auth": {"ipAcl": ["127.0.0.3/32"]},
            "outbound": {"allowedPrefixes": ["+33"], "callerId": "any"}}  # fmt: skip
    quiet = {"gateways": [{"uri": f"sip:127.0.0.1:{quiet_port}"}], "prefixes": ["+33"]}
    api = "trunkline.io/v1alpha1"
    docs += [
        {"apiVersion": api, "kind": "Trunk", "metadata": {"name": "beta"}, "spec": beta},
        {"apiVersion": api, "kind": "Carrier", "metadata": {"name": "quiet"}, "spec": quiet},
    ]
    return "\n---\n".join(json.dumps(d) for d in docs)


def _pbx_scenario(workdir: Path) -> Path:
    """pbx_call.xml whose INVITEs carry `traceparent: [traceparent]` (-key traceparent ...)."""
    text = (sipp.SCENARIOS / "pbx_call.xml").read_text()
    marker = "      Max-Forwards: 70\n      Content-Type: application/sdp"
    assert text.count(marker) == 2
    text = text.replace(marker, "      traceparent: [traceparent]\n" + marker)
    return sipp.write_scenario(workdir, "pbx_call_traced.xml", text)


def _received_traceparents(workdir: Path) -> list[str]:
    """The `traceparent` values of the INVITEs a SIPp UAS run with -trace_msg received."""
    text = "".join(p.read_text(errors="replace") for p in workdir.glob("*_messages.log"))
    invites = [m for m in re.split(r"-{10,}", text) if re.search(r"^\s*INVITE ", m, re.M)]
    assert invites, text[-2000:]
    return [v for m in invites for v in re.findall(r"^traceparent:\s*(\S+)", m, re.M | re.I)]


def _parts(traceparent: str) -> tuple[str, str, bool]:
    """Trace id, parent span id and the sampled flag (the SDK may set other flags: W3C level 2's
    random trace id)."""
    version, trace_id, span_id, flags = traceparent.split("-")
    assert version == "00", traceparent
    return trace_id, span_id, bool(int(flags, 16) & 1)


def _call(
    edge: Up, workdir: Path, source: str, callee: str, traceparent: str, caller: str = "+14155550100"
) -> dict[str, Any]:
    before = len(edge.cdrs())
    result = sipp.uac(workdir, edge.sip, source, callee, "-key", "traceparent", traceparent,
                      scenario=str(_pbx_scenario(workdir)), caller=caller)  # fmt: skip
    assert result.ok, result.output + edge.output()
    cdrs = edge.wait_cdrs(before + 1, timeout=20)
    assert len(cdrs) == before + 1, edge.output()
    return cdrs[-1]


def _root(jaeger: Jaeger, trace_id: str) -> dict[str, Any]:
    def complete(trace: dict[str, Any]) -> bool:
        return {"call", "attempt"} <= {s["operationName"] for s in trace["spans"]}

    trace = jaeger.wait_for_trace(trace_id, complete)
    [root] = [s for s in trace["spans"] if s["operationName"] == "call"]
    return {"root": root, "attempt": next(s for s in trace["spans"] if s["operationName"] == "attempt")}


def test_trace_context_goes_to_and_comes_from_only_the_peers_that_ask(
    jaeger: Jaeger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in FAST_EXPORT.items():
        monkeypatch.setenv(key, value)
    traced_port, quiet_port, pbx_port = free_port(), free_port(), free_port()
    edge = Up(tmp_path / "edge", _manifests(traced_port, quiet_port, pbx_port),
              ["--otlp-endpoint", jaeger.otlp_grpc], command="edge").start()  # fmt: skip
    pstn = sipp.uas(tmp_path / "pstn", "127.0.0.1", traced_port, "-trace_msg", "-m", "2")
    quiet = sipp.uas(tmp_path / "quiet", "127.0.0.1", quiet_port, "-trace_msg", "-m", "1")
    pbx = sipp.uas(tmp_path / "pbx", "127.0.0.4", pbx_port, "-trace_msg", "-m", "1")
    pbx_trace, pbx_span = os.urandom(16).hex(), os.urandom(8).hex()
    sent = f"00-{pbx_trace}-{pbx_span}-01"
    try:
        trusted = _call(edge, tmp_path / "acme", "127.0.0.2", "+442071234567", sent)
        untrusted = _call(edge, tmp_path / "beta", "127.0.0.3", "+33123456789", sent)
        malformed = _call(edge, tmp_path / "junk", "127.0.0.2", "+442071234568", f"00-{pbx_trace}-zz-01")
        # Inbound: pstn calls acme's DID; both ask, so the carrier's span parents the call and the
        # PBX's INVITE names the attempt.
        carrier_trace, carrier_span = os.urandom(16).hex(), os.urandom(8).hex()
        inbound = _call(edge, tmp_path / "carrier", "127.0.0.1", "+14155550100",
                        f"00-{carrier_trace}-{carrier_span}-01", caller="+442071234567")  # fmt: skip
    finally:
        pstn_out = sipp.stop(pstn, finish_within=20)
        quiet_out = sipp.stop(quiet, finish_within=20)
        pbx_out = sipp.stop(pbx, finish_within=20)
        edge.stop()

    # acme asks: the call continues the PBX's trace, under the PBX's span.
    assert trusted["trace_id"] == pbx_trace, trusted
    spans = _root(jaeger, pbx_trace)
    assert parent_id(spans["root"]) == pbx_span
    # pstn asks: its INVITEs name the attempt span of their call (the trusted call's, then the third).
    to_pstn = _received_traceparents(tmp_path / "pstn")
    assert len(to_pstn) == 2, pstn_out
    assert _parts(to_pstn[0]) == (pbx_trace, spans["attempt"]["spanID"], True)

    # beta does not ask: its traceparent is ignored (a trace of the edge's own, no parent) ...
    assert untrusted["trace_id"] != pbx_trace and len(str(untrusted["trace_id"])) == 32
    assert parent_id(_root(jaeger, str(untrusted["trace_id"]))["root"]) is None
    # ... and quiet does not ask: nothing of the trace reaches it.
    assert _received_traceparents(tmp_path / "quiet") == [], quiet_out

    # A malformed traceparent from acme is ignored: the call's own trace, still sent on to pstn.
    junk_trace = str(malformed["trace_id"])
    assert junk_trace != pbx_trace and len(junk_trace) == 32
    junk = _root(jaeger, junk_trace)
    assert parent_id(junk["root"]) is None
    assert _parts(to_pstn[1]) == (junk_trace, junk["attempt"]["spanID"], True)

    assert inbound["trace_id"] == carrier_trace and inbound["direction"] == "inbound", inbound
    spans = _root(jaeger, carrier_trace)
    assert parent_id(spans["root"]) == carrier_span
    [to_pbx] = _received_traceparents(tmp_path / "pbx")
    assert _parts(to_pbx) == (carrier_trace, spans["attempt"]["spanID"], True), pbx_out
