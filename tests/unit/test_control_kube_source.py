"""The Kubernetes source's event -> store mapping, with plain dicts shaped as the API server sends them."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from trunkline.control.kube_source import (
    BY_NAME,
    SECRET,
    Gone,
    Kind,
    KubeConfig,
    KubeSource,
    collection_path,
    normalise,
)
from trunkline.control.store import ALL_KINDS, ConfigStore, Watch
from trunkline.core.models import Secret, Trunk

NS = "tenant-a"


def meta(name: str, ns: str = NS, **extra: Any) -> dict[str, Any]:
    # What the API server adds; none of it is configuration.
    return {"name": name, "namespace": ns, "uid": f"uid-{name}", "resourceVersion": "17",
            "managedFields": [{"manager": "kubectl"}], "creationTimestamp": "2025-01-01T00:00:00Z",
            **extra}  # fmt: skip


def trunk(name: str = "acme", secret: str | None = "acme-creds", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"auth": {"ipAcl": ["127.0.0.2/32"]}, **spec}
    if secret:
        body["auth"]["digest"] = {"credentialsSecret": secret}
    return {"apiVersion": "trunkline.io/v1alpha1", "kind": "Trunk", "metadata": meta(name, generation=1),
            "spec": body, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}  # fmt: skip


def did(name: str, number: str, trunk_ref: str = "acme") -> dict[str, Any]:
    return {"apiVersion": "trunkline.io/v1alpha1", "kind": "DID", "metadata": meta(name, generation=1),
            "spec": {"number": number, "trunkRef": trunk_ref}}  # fmt: skip


def carrier(name: str = "pstn", secret: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"gateways": [{"uri": "sip:127.0.0.1:5090"}]}
    if secret:
        spec["auth"] = {"credentialsSecret": secret}
    return {"apiVersion": "trunkline.io/v1alpha1", "kind": "Carrier", "metadata": meta(name), "spec": spec}


def secret(name: str = "acme-creds", password: str = "s3cret") -> dict[str, Any]:
    # Items of a v1 list carry no apiVersion/kind; data is base64, as the API server returns it.
    data = {"username": "acme", "password": password}
    annotations = {"kubectl.kubernetes.io/last-applied-configuration": f'{{"stringData":{data}}}'}
    return {"metadata": meta(name, annotations=annotations), "type": "Opaque",
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}  # fmt: skip


def synced(config: KubeConfig, **objects: list[dict[str, Any]]) -> KubeConfig:
    for kind in ("Secret", "Carrier", "Trunk", "DID"):
        config.relist(kind, objects.get(kind, []))
    return config


def keys(store: ConfigStore) -> set[tuple[str, str, str]]:
    return {(k, i.metadata.namespace, i.metadata.name) for i in store.items() for k in [_kind(i)]}


def _kind(item: object) -> str:
    return "Secret" if isinstance(item, Secret) else type(item).__name__


def drain(watch: Watch) -> list[tuple[bool, str, str]]:
    changes = []
    while not watch.queue.empty():
        change = watch.queue.get_nowait()
        assert change is not None
        changes.append((change.deleted, change.entry.kind, change.entry.name))
    return changes


def test_normalise_keeps_configuration_only() -> None:
    doc = normalise(SECRET, secret())
    assert doc["apiVersion"] == "v1" and doc["kind"] == "Secret"
    assert set(doc["metadata"]) == {"name", "namespace", "uid", "annotations"}
    assert doc["metadata"]["annotations"] == {}  # kubectl's copy of the secret is gone
    assert "type" not in doc
    assert "status" not in normalise(BY_NAME["Trunk"], trunk())


def test_collection_paths() -> None:
    assert collection_path(SECRET, None) == "/api/v1/secrets"
    assert collection_path(SECRET, "x") == "/api/v1/namespaces/x/secrets"
    assert collection_path(BY_NAME["DID"], None) == "/apis/trunkline.io/v1alpha1/dids"
    assert collection_path(BY_NAME["Trunk"], "x") == "/apis/trunkline.io/v1alpha1/namespaces/x/trunks"


def test_first_list_fills_the_store_with_referenced_secrets_only() -> None:
    store = ConfigStore()
    config = KubeConfig(store)
    config.relist("Secret", [secret(), secret("unrelated-tls")])
    assert not config.synced.is_set()
    synced(config, Secret=[secret(), secret("unrelated-tls")], Carrier=[carrier()], Trunk=[trunk()],
           DID=[did("main", "+14155550100")])  # fmt: skip
    assert config.synced.is_set()
    assert keys(store) == {("Secret", NS, "acme-creds"), ("Carrier", NS, "pstn"), ("Trunk", NS, "acme"),
                           ("DID", NS, "main")}  # fmt: skip
    stored = store.get("Secret", NS, "acme-creds")
    assert isinstance(stored, Secret) and stored.get("password") == "s3cret"
    assert "kubectl.kubernetes.io/last-applied-configuration" not in stored.metadata.annotations
    stored_trunk = store.get("Trunk", NS, "acme")
    assert isinstance(stored_trunk, Trunk) and stored_trunk.status is None


def test_status_only_update_is_no_change() -> None:
    store = ConfigStore()
    config = synced(KubeConfig(store), Trunk=[trunk(secret=None)])
    watch, _, _ = store.watch(ALL_KINDS)
    updated = trunk(secret=None)
    updated["metadata"]["resourceVersion"] = "99"
    updated["status"] = {"conditions": [{"type": "Ready", "status": "False", "reason": "Degraded"}]}
    config.apply("Trunk", "MODIFIED", updated)
    assert drain(watch) == []


def test_modified_trunk_reaches_watchers() -> None:
    store = ConfigStore()
    config = synced(
        KubeConfig(store), Trunk=[trunk(secret=None, outbound={"allowedPrefixes": ["+1", "+44"]})]
    )
    watch, _, _ = store.watch(ALL_KINDS)
    changed = trunk(secret=None, outbound={"allowedPrefixes": ["+1"]})
    changed["metadata"]["generation"] = 2
    config.apply("Trunk", "MODIFIED", changed)
    assert drain(watch) == [(False, "Trunk", "acme")]
    stored = store.get("Trunk", NS, "acme")
    assert isinstance(stored, Trunk) and stored.spec.outbound.allowedPrefixes == ["+1"]


def test_secret_follows_its_references() -> None:
    store = ConfigStore()
    config = synced(KubeConfig(store), Secret=[secret()])
    watch, _, _ = store.watch(ALL_KINDS)
    assert keys(store) == set()  # nothing references it yet

    config.apply("Trunk", "ADDED", trunk())
    # The Secret comes before the Trunk that needs it.
    assert drain(watch) == [(False, "Secret", "acme-creds"), (False, "Trunk", "acme")]

    config.apply("Secret", "MODIFIED", secret(password="rotated"))
    assert drain(watch) == [(False, "Secret", "acme-creds")]
    config.apply("Secret", "MODIFIED", secret("unrelated-tls", password="x"))
    assert drain(watch) == []  # not referenced: never published

    config.apply("Trunk", "MODIFIED", trunk(secret=None))
    # The Trunk stops needing it before the Secret goes.
    assert drain(watch) == [(False, "Trunk", "acme"), (True, "Secret", "acme-creds")]

    config.apply("Carrier", "ADDED", carrier(secret="acme-creds"))
    assert drain(watch) == [(False, "Secret", "acme-creds"), (False, "Carrier", "pstn")]
    config.apply("Secret", "DELETED", secret())
    assert drain(watch) == [(True, "Secret", "acme-creds")]
    config.apply("Secret", "ADDED", secret())
    assert drain(watch) == [(False, "Secret", "acme-creds")]


def test_a_secret_shared_by_two_resources_stays_until_both_let_go() -> None:
    store = ConfigStore()
    config = synced(
        KubeConfig(store), Secret=[secret()], Trunk=[trunk()], Carrier=[carrier(secret="acme-creds")]
    )
    watch, _, _ = store.watch(ALL_KINDS)
    config.apply("Trunk", "DELETED", trunk())
    assert drain(watch) == [(True, "Trunk", "acme")]
    config.apply("Carrier", "DELETED", carrier())
    assert drain(watch) == [(True, "Carrier", "pstn"), (True, "Secret", "acme-creds")]


def test_deleted_resource_leaves_the_store() -> None:
    store = ConfigStore()
    config = synced(KubeConfig(store), Trunk=[trunk(secret=None)], DID=[did("main", "+14155550100")])
    config.apply("DID", "DELETED", did("main", "+14155550100"))
    assert keys(store) == {("Trunk", NS, "acme")}
    config.apply("DID", "DELETED", did("never-seen", "+14155550101"))  # harmless


def test_rejected_object_is_logged_and_skipped_never_raised(caplog: pytest.LogCaptureFixture) -> None:
    store = ConfigStore()
    config = synced(KubeConfig(store), Trunk=[trunk(secret=None)])
    bad_new = did("bad", "not-a-number")
    with caplog.at_level(logging.ERROR):
        config.apply("DID", "ADDED", bad_new)
        # A good object turned bad keeps its last good version (as a refused reload of files does).
        config.apply("Trunk", "MODIFIED", trunk(secret=None, channels=-1))
    assert keys(store) == {("Trunk", NS, "acme")}
    stored = store.get("Trunk", NS, "acme")
    assert isinstance(stored, Trunk) and stored.spec.channels is None
    assert "skipping DID tenant-a/bad" in caplog.text and "spec.number" in caplog.text
    assert "skipping Trunk tenant-a/acme" in caplog.text and "spec.channels" in caplog.text
    # ... also across a fresh list; a rejected object never seen before stays out.
    config.relist("Trunk", [trunk(secret=None, channels=-1)])
    config.relist("DID", [bad_new])
    assert keys(store) == {("Trunk", NS, "acme")}


def test_rejected_secret_is_logged_without_its_value(caplog: pytest.LogCaptureFixture) -> None:
    store = ConfigStore()
    config = synced(KubeConfig(store), Trunk=[trunk()])
    bad = secret()
    bad["data"]["password"] = "hunter2-not-base64!"
    with caplog.at_level(logging.ERROR):
        config.apply("Secret", "ADDED", bad)
    assert "skipping Secret tenant-a/acme-creds" in caplog.text
    assert "hunter2" not in caplog.text
    assert store.get("Secret", NS, "acme-creds") is None


def test_relist_makes_the_store_equal_to_the_api() -> None:
    """After a watch error or 410 Gone: what was deleted meanwhile goes, what was added comes."""
    store = ConfigStore()
    config = synced(KubeConfig(store), Secret=[secret()], Trunk=[trunk()],
                    DID=[did("main", "+14155550100"), did("old", "+14155550101")])  # fmt: skip
    watch, _, _ = store.watch(ALL_KINDS)
    config.relist("DID", [did("main", "+14155550100"), did("new", "+14155550102")])
    assert sorted(drain(watch)) == [(False, "DID", "new"), (True, "DID", "old")]
    config.relist("Trunk", [])
    assert sorted(drain(watch)) == [(True, "Secret", "acme-creds"), (True, "Trunk", "acme")]
    config.relist("Trunk", [trunk()])
    assert drain(watch) == [(False, "Secret", "acme-creds"), (False, "Trunk", "acme")]


def test_namespaces_are_kept_apart() -> None:
    store = ConfigStore()
    other = trunk()
    other["metadata"]["namespace"] = "tenant-b"
    synced(KubeConfig(store), Secret=[secret()], Trunk=[trunk(), other])
    # tenant-b's trunk names a Secret that exists only in tenant-a: it is not published for it.
    assert keys(store) == {("Secret", NS, "acme-creds"), ("Trunk", NS, "acme"), ("Trunk", "tenant-b", "acme")}


async def test_watch_errors_and_410_gone_mean_a_fresh_list(monkeypatch: pytest.MonkeyPatch) -> None:
    """The I/O loop of one kind, with the API calls faked: every failure lists again, and the list's
    content replaces the store's (what changed while nobody watched is not lost)."""
    store = ConfigStore()
    source = KubeSource(store, None, api=None)
    source._loop = asyncio.get_running_loop()
    lists = [
        [trunk(secret=None, outbound={"allowedPrefixes": prefixes})]
        for prefixes in (["+1"], ["+44"], ["+33"])
    ]
    watched: list[str] = []

    def fake_list(kind: Kind, namespace: str | None) -> tuple[list[dict[str, Any]], str]:
        return lists.pop(0), f"v{3 - len(lists)}"

    def fake_watch(kind: Kind, namespace: str | None, version: str) -> Iterator[tuple[str, dict[str, Any]]]:
        watched.append(version)
        if len(watched) == 1:
            raise Gone()
        if len(watched) == 2:
            raise ConnectionResetError("apiserver went away")
        source._stopping.set()
        yield from ()

    monkeypatch.setattr(source, "_list", fake_list)
    monkeypatch.setattr(source, "_watch", fake_watch)
    await asyncio.wait_for(asyncio.to_thread(source._run, BY_NAME["Trunk"], None), 5)
    await asyncio.sleep(0)  # the thread's posted callbacks run on the loop
    assert watched == ["v1", "v2", "v3"]
    stored = store.get("Trunk", NS, "acme")
    assert isinstance(stored, Trunk) and stored.spec.outbound.allowedPrefixes == ["+33"]


def test_several_namespaces_are_listed_apart() -> None:
    """A list of one namespace replaces that namespace's objects only; synced once every kind of
    every namespace was listed."""
    store = ConfigStore()
    config = KubeConfig(store, ["tenant-a", "tenant-b"])
    a, b = trunk(secret=None), trunk(secret=None)
    a["metadata"]["namespace"], b["metadata"]["namespace"] = "tenant-a", "tenant-b"
    for kind in ("Secret", "Carrier", "Trunk", "DID"):
        config.relist(kind, [a] if kind == "Trunk" else [], "tenant-a")
    assert not config.synced.is_set()
    for kind in ("Secret", "Carrier", "Trunk", "DID"):
        config.relist(kind, [b] if kind == "Trunk" else [], "tenant-b")
    assert config.synced.is_set()
    assert keys(store) == {("Trunk", "tenant-a", "acme"), ("Trunk", "tenant-b", "acme")}
    config.relist("Trunk", [], "tenant-b")  # tenant-b's trunk went while nobody watched
    assert keys(store) == {("Trunk", "tenant-a", "acme")}
