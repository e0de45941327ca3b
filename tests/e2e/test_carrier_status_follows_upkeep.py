"""A Carrier's status shows its registration and gateway health as the edges keep them in Redis
(issue 18: "failures ... show in the Carrier's status", "a `Degraded` condition when any is down").

A real redis-server holds what the holder edge writes there (through `RedisStore.put_upkeep` under
`upkeep_key`, as edge/upkeep.py does); the chart is installed with `redis.url` pointing at it and the
operator runs with the chart's arguments. Tests run in file order and build on each other.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.redis_server import RedisProcess
from tests.support.wait import wait_for
from trunkline.core.state import upkeep_key
from trunkline.core.state_redis import RedisStore

from .cluster import ControlPlane
from .test_operator_lifecycle import Cluster, assert_clean_log, install, run_operator

INTERVAL = 1  # operator.liveCounts.intervalSeconds: also how often the Carrier's upkeep is read


def report(redis: RedisProcess, kind: str, namespace: str, state: dict[str, Any]) -> None:
    """Write a carrier's upkeep state as its holder edge does."""

    async def run() -> None:
        store = RedisStore.from_url(redis.url)
        try:
            await store.put_upkeep(upkeep_key(kind, namespace, "pstn"), state, ttl=600)
        finally:
            await store.close()

    asyncio.run(run())


@pytest.fixture(scope="module")
def operator_log(
    control_plane: ControlPlane, redis: RedisProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Cluster, Path]]:
    cluster = install(
        control_plane, "operator.scope=namespace", f"operator.liveCounts.intervalSeconds={INTERVAL}",
        f"redis.url={redis.url}",
    )  # fmt: skip
    with run_operator(cluster, tmp_path_factory.mktemp("operator")) as log:
        yield cluster, log


@pytest.fixture(scope="module")
def k(operator_log: tuple[Cluster, Path]) -> Cluster:
    return operator_log[0]


CARRIER = {
    "apiVersion": "trunkline.io/v1alpha1", "kind": "Carrier", "metadata": {"name": "pstn"},
    "spec": {"gateways": [{"uri": "sip:127.0.0.1:5999"}, {"uri": "sip:127.0.0.1:5998"}], "prefixes": ["+1"],
             "auth": {"credentialsSecret": "pstn-creds"}, "registration": {"enabled": True},
             "health": {"interval": 5}},
}  # fmt: skip
SECRET = {
    "apiVersion": "v1", "kind": "Secret",
    "metadata": {"name": "pstn-creds", "labels": {"trunkline.io/credentials": ""}},
    "stringData": {"username": "trunk-7", "password": "pw"},
}  # fmt: skip


def events(k: Cluster) -> list[tuple[str, str]]:
    """(type, reason) of the Events about Carrier pstn, oldest first."""
    found = k.cp.kubectl("get", "events", "-n", k.ns, "--field-selector", "involvedObject.kind=Carrier",
                         "-o", "json").stdout  # fmt: skip
    items = sorted(json.loads(found)["items"], key=lambda e: e.get("firstTimestamp") or "")
    return [(e["type"], e["reason"]) for e in items if e["involvedObject"]["name"] == "pstn"]


def message(k: Cluster, type_: str) -> str:
    for c in ((k.get("carrier", "pstn") or {}).get("status") or {}).get("conditions", []):
        if c["type"] == type_:
            return str(c.get("message", ""))
    return ""


def test_registered_follows_what_the_holder_edge_reports(k: Cluster, redis: RedisProcess) -> None:
    k.apply(json.dumps(SECRET))
    k.apply(json.dumps(CARRIER))
    k.wait_condition("carrier", "pstn", ("Unknown", "NotReported"), "Registered")
    k.wait_condition("carrier", "pstn", ("True", "Reconciled"))
    registered = {"registered_until": time.time() + 600, "status": 200, "registrar_uri": "sip:127.0.0.1:5999",
                  "call_id": "c", "cseq": 2, "failures": 0, "holder": "edge-a"}  # fmt: skip
    report(redis, "registration", k.ns, registered)
    k.wait_condition("carrier", "pstn", ("True", "Registered"), "Registered")
    failing = {**registered, "registered_until": 0.0, "status": 403, "reason": "Forbidden", "failures": 4}
    report(redis, "registration", k.ns, failing)
    k.wait_condition("carrier", "pstn", ("False", "RegistrationFailed"), "Registered")
    k.wait_condition("carrier", "pstn", ("True", "RegistrationFailed"), "Degraded")
    assert "403 Forbidden (4 failure(s) in a row" in message(k, "Registered")
    assert k.condition("carrier", "pstn") == ("True", "Reconciled")  # degraded, still ready
    report(redis, "registration", k.ns, registered)
    k.wait_condition("carrier", "pstn", ("True", "Registered"), "Registered")
    k.wait_condition("carrier", "pstn", ("False", "Reconciled"), "Degraded")
    wait_for(lambda: ("Normal", "Registered") in events(k)[1:], "an Event for the registration regained")
    assert ("Warning", "RegistrationFailed") in events(k)


def test_a_gateway_down_degrades_the_carrier_until_it_is_back(k: Cluster, redis: RedisProcess) -> None:
    down = {
        "gateways": {"sip:127.0.0.1:5999": {"up": False, "status": 408}, "sip:127.0.0.1:5998": {"up": True}}
    }
    report(redis, "health", k.ns, down)
    k.wait_condition("carrier", "pstn", ("True", "GatewaysDown"), "Degraded")
    assert "gateways down: sip:127.0.0.1:5999" in message(k, "Degraded")
    shown = (k.get("carrier", "pstn") or {})["status"]["gateways"]
    assert shown == [
        {"uri": "sip:127.0.0.1:5999", "state": "Down", "lastStatus": 408},
        {"uri": "sip:127.0.0.1:5998", "state": "Up"},
    ]
    header, row = k.cp.kubectl("get", "carrier", "pstn", "-n", k.ns).stdout.splitlines()
    columns = dict(zip(header.split(), row.split(), strict=True))
    assert (columns["READY"], columns["REGISTERED"], columns["DEGRADED"]) == ("True", "True", "True")
    report(redis, "health", k.ns, {"gateways": {"sip:127.0.0.1:5999": {"up": True}}})
    k.wait_condition("carrier", "pstn", ("False", "Reconciled"), "Degraded")
    wait_for(lambda: ("Normal", "GatewayUp") in events(k), "an Event for the gateway back up")
    assert ("Warning", "GatewayDown") in events(k)


def test_operator_never_crashed(operator_log: tuple[Cluster, Path]) -> None:
    assert_clean_log(operator_log[1])
