"""A Trunk's live counts (active calls, registered contacts): where the operator reads them in the edges'
shared store, the status patch it writes, and the chart's wiring of `--redis`."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.test_chart_render import one, render
from trunkline.core.models import Trunk
from trunkline.core.state import Binding, MemoryStore
from trunkline.core.state_redis import url_from_env, with_password
from trunkline.operator.handlers import State
from trunkline.operator.main import parse_args
from trunkline.operator.status import CallCounts, counts_patch, registration_aor


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def trunk(registration: bool = True, digest: bool = True) -> Trunk:
    auth: dict[str, Any] = {"ipAcl": ["10.0.0.0/8"]}
    if digest:
        auth = {"digest": {"credentialsSecret": "acme-creds"}}
    spec = {"auth": auth, "registration": {"enabled": registration}}
    metadata = {"name": "acme", "namespace": "ns"}
    return Trunk.model_validate({"apiVersion": "trunkline.io/v1alpha1", "kind": "Trunk", "metadata": metadata,
                                 "spec": spec})  # fmt: skip


def test_counts_patch_writes_only_what_changed() -> None:
    assert counts_patch(None, CallCounts(2, 1)) == {"activeCalls": 2, "registeredContacts": 1}
    current = {"conditions": [], "activeCalls": 2, "registeredContacts": 1}
    assert counts_patch(current, CallCounts(2, 1)) is None  # nothing to write
    assert counts_patch(current, CallCounts(3, 1)) == {"activeCalls": 3}
    assert counts_patch(current, CallCounts(0, 0)) == {"activeCalls": 0, "registeredContacts": 0}


def test_without_a_store_the_counts_are_removed_not_left_stale() -> None:
    # null in a merge patch deletes the field: `kubectl get trunks` then shows <none>, not a made-up 0.
    assert counts_patch({"activeCalls": 0, "registeredContacts": 4}, None) == {
        "activeCalls": None,
        "registeredContacts": None,
    }
    assert counts_patch({"conditions": []}, None) is None
    assert counts_patch(None, None) is None


def test_registration_aor_is_where_the_registrar_keeps_the_bindings() -> None:
    assert registration_aor(trunk(), "acme") == "sip:acme"
    assert registration_aor(trunk(registration=False), "acme") is None  # REGISTER is refused: no contacts
    assert registration_aor(trunk(digest=False), "acme") is None
    assert registration_aor(trunk(), None) is None  # no usable credentials: the edges cannot register it


async def test_state_reads_channels_by_trunk_name_and_live_bindings_of_its_aor() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    for call in ("c1", "c2"):
        assert await store.acquire_channel("ns/acme", call, None, ttl=60)
    assert await store.acquire_channel("ns/other", "c3", None, ttl=60)
    await store.put_binding("sip:acme", Binding("sip:acme@192.0.2.1:5060", clock.now + 60))
    await store.put_binding("sip:acme", Binding("sip:acme@192.0.2.2:5060", clock.now + 5))
    state = State(platform=None, store=store)
    assert await state.read_counts("ns", "acme", "sip:acme") == CallCounts(2, 2)
    assert await state.read_counts("ns", "acme", None) == CallCounts(2, 0)
    clock.now += 10  # one binding lapsed
    assert await state.read_counts("ns", "acme", "sip:acme") == CallCounts(2, 1)


def test_redis_url_gets_the_password_from_its_secret() -> None:
    assert with_password("redis://redis:6379/0", None) == "redis://redis:6379/0"
    assert with_password("redis://redis:6379/0", "p@ss/w") == "redis://:p%40ss%2Fw@redis:6379/0"
    assert (
        with_password("sentinel://s1:26379,s2:26379/mymaster", "x")
        == "sentinel://:x@s1:26379,s2:26379/mymaster"
    )


def test_every_component_finds_the_store_the_chart_describes() -> None:
    assert url_from_env({}) is None
    assert url_from_env({"TRUNKLINE_REDIS_URL": "redis://r:6379/0", "TRUNKLINE_REDIS_PASSWORD": "pw"}) == (
        "redis://:pw@r:6379/0"
    )
    sentinels = {"TRUNKLINE_REDIS_SENTINELS": "s1:26379,s2:26379", "TRUNKLINE_REDIS_SENTINEL_MASTER": "main"}
    assert url_from_env(sentinels) == "sentinel://s1:26379,s2:26379/main"


def test_counts_interval_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_args(["--redis", "redis://r:6379/0", "--counts-interval", "2.5"]).counts_interval == 2.5
    with pytest.raises(SystemExit):
        parse_args(["--counts-interval", "0"])
    assert "positive number of seconds" in capsys.readouterr().err


def operator_container(*sets: str) -> dict[str, Any]:
    container: dict[str, Any] = one(render(*sets), "Deployment", "tl-trunkline-operator")["spec"]["template"][
        "spec"
    ]["containers"][0]
    return container


def test_chart_gives_the_operator_the_edges_redis() -> None:
    container = operator_container()
    assert "--redis=redis://redis:6379/0" in container["args"]
    assert "--counts-interval=15" in container["args"]
    assert "env" not in container

    sentinel = operator_container(
        "redis.sentinel.addresses={s1:26379,s2:26379}", "redis.passwordSecret.name=redis-auth",
        "operator.liveCounts.intervalSeconds=5",
    )  # fmt: skip
    assert "--redis=sentinel://s1:26379,s2:26379/mymaster" in sentinel["args"]
    assert "--counts-interval=5" in sentinel["args"]
    assert sentinel["env"] == [{
        "name": "TRUNKLINE_REDIS_PASSWORD",
        "valueFrom": {"secretKeyRef": {"name": "redis-auth", "key": "password"}},
    }]  # fmt: skip

    off = operator_container("operator.liveCounts.enabled=false", "redis.passwordSecret.name=redis-auth")
    assert not [a for a in off["args"] if a.startswith(("--redis", "--counts-interval"))]
    assert "env" not in off
