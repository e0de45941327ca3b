"""The edge component puts the signalling defences on its stack before it listens: the flood guard
built from the trunks' ACLs and carriers' CIDRs (rebuilt, counters kept, when they change), the stream
limits, the contact deny list for the registrar, the defence counters on /metrics; and a nonce secret
file it cannot use is one line and exit 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from tests.support.edge_harness import manifest_docs
from trunkline.core.manifests import ConfigSet, load
from trunkline.core.net import HostPort
from trunkline.edge import server
from trunkline.edge.defences import SignallingLimits
from trunkline.edge.server import EdgeComponent, open_sip_sockets
from trunkline.sip.flood import Budget
from trunkline.sip.transport import StreamLimits


def config(tmp_path: Path, acl: str) -> ConfigSet:
    docs = manifest_docs(auth={"digest": {"credentialsSecret": "acme-creds"}, "ipAcl": [acl]})
    path = tmp_path / f"m-{acl.replace('/', '_')}.yaml"
    path.write_text("\n---\n".join(json.dumps(d) for d in docs))
    loaded, problems = load([path])
    assert problems == []
    return loaded


def test_the_guard_follows_the_configuration_and_keeps_its_counters(tmp_path: Path) -> None:
    limits = SignallingLimits.build(flood=Budget(7, 7000, 9), max_connections_per_source=2, header_deadline=3,
                                    idle_timeout=30, contact_deny=["10.96.0.0/12"])  # fmt: skip
    sockets = open_sip_sockets(HostPort("127.0.0.1", 0))
    try:
        component = EdgeComponent(config(tmp_path, "127.0.0.2/32"), sockets, limits=limits)
        transport = component.stack.transport
        assert transport.limits == StreamLimits(2, 3, 30)
        guard = component.stack.flood_guard
        assert guard is not None
        assert guard.budget_of("127.0.0.2").exempt and guard.budget_of("127.0.0.1").exempt  # trunk, carrier
        assert guard.budget_of("127.0.0.7") == Budget(7, 7000, 9)
        assert guard.admit("127.0.0.7", 100, 0.0)
        assert component.edge.ctx.options.contact_deny == limits.contact_deny
        component.reconfigure(config(tmp_path, "127.0.0.7/32"))
        rebuilt = component.stack.flood_guard
        assert rebuilt is not None and rebuilt is not guard
        assert rebuilt.budget_of("127.0.0.7").exempt and not rebuilt.budget_of("127.0.0.2").exempt
        assert rebuilt.counters.admitted == 1
        registry = CollectorRegistry()
        component.register_metrics(registry)
        assert registry.get_sample_value("trunkline_sip_flood_messages_total", {"verdict": "admitted"}) == 1
        assert (
            registry.get_sample_value("trunkline_sip_connections_refused_total", {"limit": "per_source"}) == 0
        )
        component.stack.core_failures, transport.core_failures = 3, 1
        failures = "trunkline_sip_core_failures_total"
        assert registry.get_sample_value(failures, {"where": "message"}) == 3
        assert registry.get_sample_value(failures, {"where": "stream"}) == 1
    finally:
        sockets.close()


@pytest.mark.parametrize("content", [None, b"# only a comment\n\n"])
def test_an_unusable_nonce_secret_file_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None
) -> None:
    secret = tmp_path / "nonce"
    if content is not None:
        secret.write_bytes(content)
    manifests = tmp_path / "m.yaml"
    manifests.write_text("\n---\n".join(json.dumps(d) for d in manifest_docs()))
    code = server.main(["-f", str(manifests), "--sip-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
                        "--nonce-secret-file", str(secret)])  # fmt: skip
    out = capsys.readouterr().out.strip()
    assert code == 1 and "--nonce-secret-file" in out and "\n" not in out and "Traceback" not in out
