"""A Carrier's `status.gateways[]` shows each gateway's attempts, answer-seizure ratio and post-dial
delay over the last 5 and 60 minutes (issue 18, "Beyond"), after real calls: a `trunkline edge`
process over a real redis-server carries SIPp calls to two SIPp gateways (the first answers 503, the
second rings 0.4 s after the INVITE and answers) and counts each attempt into the store; the
operator, installed by the chart with `redis.url` pointing at the same Redis, reads the figures
into the Carrier's status in the real kube-apiserver."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import sipp
from tests.support.cdr_cluster import Cluster as Edges
from tests.support.ports import free_port
from tests.support.redis_server import RedisProcess
from tests.support.trunkline_up import manifests
from tests.support.wait import wait_for

from .cluster import ControlPlane
from .test_operator_lifecycle import Cluster, assert_clean_log, install, run_operator

CALLS = 3
RING_AFTER = 0.4  # seconds the answering gateway waits before its 180: the post-dial delay shown


def slow_ringing(workdir: Path) -> Path:
    """The carrier UAS (tests/support/scenarios/carrier_uas.xml), ringing RING_AFTER s after the INVITE
    (under the INVITE's first retransmission, 0.5 s)."""
    text = (sipp.SCENARIOS / "carrier_uas.xml").read_text()
    invite = '<recv request="INVITE" crlf="true"/>'
    assert invite in text
    pause = f'{invite}\n  <pause milliseconds="{round(RING_AFTER * 1000)}"/>'
    return sipp.write_scenario(workdir, "slow_ringing.xml", text.replace(invite, pause))


@pytest.fixture(scope="module")
def operator_log(
    control_plane: ControlPlane, redis: RedisProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Cluster, Path]]:
    cluster = install(
        control_plane, "operator.scope=namespace", "operator.liveCounts.intervalSeconds=1",
        "operator.resyncSeconds=5", f"redis.url={redis.url}",
    )  # fmt: skip
    with run_operator(cluster, tmp_path_factory.mktemp("operator")) as log:
        yield cluster, log


def in_namespace(text: str, namespace: str, gateways: list[int]) -> list[dict[str, Any]]:
    """The edge's manifests (tests/support/trunkline_up.py) in the operator's namespace, the Carrier's
    gateways in priority order."""
    docs = [json.loads(doc) for doc in text.split("\n---\n")]
    for doc in docs:
        doc["metadata"]["namespace"] = namespace
        if doc["kind"] == "Carrier":
            doc["spec"]["gateways"] = [
                {"uri": f"sip:127.0.0.1:{port}", "priority": 10 * (i + 1)} for i, port in enumerate(gateways)
            ]
    return docs


def gateways_shown(k: Cluster) -> list[dict[str, Any]]:
    return list(((k.get("carrier", "pstn") or {}).get("status") or {}).get("gateways") or [])


def test_status_shows_the_figures_of_real_calls(
    operator_log: tuple[Cluster, Path], redis: RedisProcess, tmp_path: Path
) -> None:
    k = operator_log[0]
    failing, answering = free_port(), free_port()
    docs = in_namespace(manifests([failing, answering], free_port()), k.ns, [failing, answering])
    for doc in docs:
        k.apply(doc)
    k.wait_condition("carrier", "pstn", ("True", "Reconciled"))
    assert gateways_shown(k) == []  # no probes, no attempts: nothing to show

    edges = Edges(tmp_path / "edges", redis, failing)
    edges.text = "\n---\n".join(json.dumps(d) for d in docs)
    broken = sipp.uas_status(tmp_path / "gw1", "127.0.0.1", failing, 503, "Service Unavailable")
    healthy = sipp.uas(tmp_path / "gw2", "127.0.0.1", answering, scenario=str(slow_ringing(tmp_path / "gw2")))
    try:
        edge = edges.start("a")
        result = sipp.uac(tmp_path / "pbx", edge.sip, "127.0.0.2", "+442071234567", calls=CALLS)
        assert result.ok, result.output + edge.output()
    finally:
        sipp.stop(broken), sipp.stop(healthy)
        edges.stop()

    def shown() -> bool:
        found = {g["uri"]: g for g in gateways_shown(k)}
        return all(found.get(f"sip:127.0.0.1:{port}", {}).get("attempts60m") == CALLS
                   for port in (failing, answering))  # fmt: skip

    wait_for(shown, "the gateways' figures in the Carrier's status", timeout=90)
    first, second = gateways_shown(k)
    assert first == {"uri": f"sip:127.0.0.1:{failing}", "attempts5m": CALLS, "asr5m": 0.0,
                     "attempts60m": CALLS, "asr60m": 0.0}  # fmt: skip  # a 503 rings not: no delay
    assert second["uri"] == f"sip:127.0.0.1:{answering}" and "state" not in second  # no probes
    assert (second["attempts5m"], second["asr5m"], second["asr60m"]) == (CALLS, 1.0, 1.0)
    # INVITE to its 180: at least the gateway's pause (a loaded machine only adds to it).
    assert RING_AFTER <= second["pdd5m"] < 10 and second["pdd60m"] == second["pdd5m"]
    assert RING_AFTER <= second["pdd5mP90"] == second["pdd60mP90"]  # a histogram bucket's bound
    print(f"status.gateways: {json.dumps([first, second])}")


def test_operator_never_crashed(operator_log: tuple[Cluster, Path]) -> None:
    assert_clean_log(operator_log[1])
