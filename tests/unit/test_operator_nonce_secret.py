"""The operator's nonce Secret: created when missing, rotated with the previous key kept, mounted in
every edge pod and passed to `trunkline edge --nonce-secret-file`."""

from __future__ import annotations

from typing import Any

from trunkline.operator.builders import NONCE_FILE, NONCE_MOUNT, build_data_plane, build_edge_deployment
from trunkline.operator.nonce import ROTATED_AT, current_keys, nonce_secret_update
from trunkline.operator.platform import Platform

HOUR = 3600.0


def platform(hours: int = 24) -> Platform:
    return Platform.model_validate({"edge": {"nonceKeyRotationHours": hours}})


def test_a_missing_secret_is_created_with_one_random_key() -> None:
    first = nonce_secret_update(platform(), "voice", None, now=1000.0)
    again = nonce_secret_update(platform(), "voice", None, now=1000.0)
    assert first is not None and again is not None
    assert first["metadata"]["name"] == "trunkline-nonce" and first["metadata"]["namespace"] == "voice"
    assert first["metadata"]["annotations"] == {ROTATED_AT: "1000"}
    [key] = current_keys(first)
    assert len(key) >= 40 and current_keys(again) != [key]  # random, 256 bits


def test_rotation_puts_the_new_key_first_and_keeps_the_previous_one() -> None:
    first = nonce_secret_update(platform(), "voice", None, now=0.0, key="k1")
    assert nonce_secret_update(platform(), "voice", first, now=23 * HOUR) is None  # not due yet
    second = nonce_secret_update(platform(), "voice", first, now=24 * HOUR, key="k2")
    assert second is not None and current_keys(second) == ["k2", "k1"]
    third = nonce_secret_update(platform(), "voice", second, now=48 * HOUR, key="k3")
    assert third is not None and current_keys(third) == ["k3", "k2"]  # at most two keys
    assert third["metadata"]["annotations"][ROTATED_AT] == str(int(48 * HOUR))


def test_zero_hours_never_rotates_but_still_creates() -> None:
    first = nonce_secret_update(platform(0), "voice", None, now=0.0, key="k1")
    assert first is not None
    assert nonce_secret_update(platform(0), "voice", first, now=10_000 * HOUR) is None


def test_a_damaged_secret_is_rewritten() -> None:
    for damaged in (
        {"metadata": {"annotations": {ROTATED_AT: "0"}}, "data": {NONCE_FILE: "not base64!"}},
        {"metadata": {}, "data": {NONCE_FILE: "azE="}},  # a key, but no rotation time
        {"metadata": {"annotations": {ROTATED_AT: "soon"}}, "data": {}},
    ):
        update = nonce_secret_update(platform(), "voice", damaged, now=HOUR, key="fresh")
        assert update is not None and current_keys(update)[0] == "fresh"


def container(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]["containers"][0]
    return spec


def test_every_edge_pod_reads_the_shared_secret_and_nothing_else_does() -> None:
    edge = build_edge_deployment(platform(), "voice")
    pod = edge["spec"]["template"]["spec"]
    assert {"name": "nonce", "secret": {"secretName": "trunkline-nonce"}} in pod["volumes"]
    assert {"name": "nonce", "mountPath": NONCE_MOUNT, "readOnly": True} in container(edge)["volumeMounts"]
    args = container(edge)["args"]
    assert args[args.index("--nonce-secret-file") + 1] == f"{NONCE_MOUNT}/{NONCE_FILE}"
    for obj in build_data_plane(platform(), "voice"):
        if obj["kind"] in ("Deployment", "DaemonSet") and obj["metadata"]["name"] != "trunkline-edge":
            assert "--nonce-secret-file" not in container(obj).get("args", [])
