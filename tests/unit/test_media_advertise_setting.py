"""The relay's advertised (SDP) address setting: its grammar, how a Node resolves it, what the operator
builds and refuses for it, and the relay's command line."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from trunkline.core.media_advertise import AdvertiseMode, AdvertiseSpec, UnusableAddress, parse, resolve
from trunkline.media.server import advertise_of, build_parser
from trunkline.operator.builders import build_media_workload
from trunkline.operator.platform import Platform


def node(addresses: list[Any] | None = None, annotations: Any = None, name: str = "n1") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "annotations": annotations or {}},
        "status": {"addresses": addresses or []},
    }


INTERNAL = {"type": "InternalIP", "address": "10.0.0.7"}
EXTERNAL = {"type": "ExternalIP", "address": "203.0.113.7"}
KEY = "trunkline.io/media-address"


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("podIP", AdvertiseSpec(AdvertiseMode.POD_IP)),
        ("nodeInternalIP", AdvertiseSpec(AdvertiseMode.NODE_INTERNAL_IP)),
        ("nodeExternalIP", AdvertiseSpec(AdvertiseMode.NODE_EXTERNAL_IP)),
        (f"nodeAnnotation:{KEY}", AdvertiseSpec(AdvertiseMode.NODE_ANNOTATION, KEY)),
        ("nodeAnnotation:public-ip", AdvertiseSpec(AdvertiseMode.NODE_ANNOTATION, "public-ip")),
        ("198.51.100.4", AdvertiseSpec(AdvertiseMode.ADDRESS, "198.51.100.4")),
        ("2001:DB8::1", AdvertiseSpec(AdvertiseMode.ADDRESS, "2001:db8::1")),  # normalised
    ],
)
def test_settings_parse(text: str, spec: AdvertiseSpec) -> None:
    assert parse(text) == spec
    assert parse(str(spec)) == spec  # what the operator writes, the relay reads back


@pytest.mark.parametrize(
    "text",
    [
        "", "podip", "nodeExternalIp", "sip.example.net", "0.0.0.0", "::", "224.0.0.1", "255.255.255.255",
        "nodeAnnotation:", "nodeAnnotation:a/b/c", "nodeAnnotation:-x", "nodeAnnotation:x y",
        "nodeAnnotation:" + "a" * 64, "nodeAnnotation:UPPER.example/x", "1.2.3.4:5", "1" * 100,
    ],
)  # fmt: skip
def test_bad_settings_are_refused_with_the_choices(text: str) -> None:
    with pytest.raises(ValueError, match=r"not|annotation key"):
        parse(text)


def test_node_addresses_resolve_by_type_and_family() -> None:
    n = node([INTERNAL, EXTERNAL, {"type": "ExternalIP", "address": "2001:db8::7"}])
    assert resolve(parse("nodeExternalIP"), n, None, 4) == "203.0.113.7"
    assert resolve(parse("nodeExternalIP"), n, None, 6) == "2001:db8::7"
    assert resolve(parse("nodeInternalIP"), n, None, 4) == "10.0.0.7"
    assert resolve(parse("nodeExternalIP"), n, None, None) == "203.0.113.7"  # the first one


def test_a_node_without_the_address_says_so() -> None:
    with pytest.raises(UnusableAddress, match=r"node n1 has no usable ExternalIP$"):
        resolve(parse("nodeExternalIP"), node([INTERNAL]), None, 4)
    # Junk entries are skipped, and named.
    junk = node([{"type": "ExternalIP", "address": "lb.example"}, {"type": "ExternalIP"}, "x", 7])
    with pytest.raises(UnusableAddress, match=r"'lb\.example' is not an IP address"):
        resolve(parse("nodeExternalIP"), junk, None, 4)
    with pytest.raises(UnusableAddress, match="2001:db8::7 is not IPv4"):
        resolve(parse("nodeExternalIP"), node([{"type": "ExternalIP", "address": "2001:db8::7"}]), None, 4)


def test_annotation_values_must_be_ip_addresses() -> None:
    spec = parse(f"nodeAnnotation:{KEY}")
    assert resolve(spec, node(annotations={KEY: " 198.51.100.9\n"}), None, 4) == "198.51.100.9"
    for value, why in [
        ("nat.example.net", "is not an IP address"),
        ("198.51.100.9, 198.51.100.10", "is not an IP address"),
        ("0.0.0.0", "cannot receive media"),
        ("x" * 100_000, r"is not an IP address \(100000 characters\)"),  # not parsed, not echoed
        ("", "has no annotation"),
        ("2001:db8::9", "not an IPv4 address"),
    ]:
        with pytest.raises(UnusableAddress, match=why):
            resolve(spec, node(annotations={KEY: value}), None, 4)
    with pytest.raises(UnusableAddress, match=f"node n1 has no annotation {KEY}"):
        resolve(spec, node(annotations={"other": "198.51.100.9"}), None, 4)


@pytest.mark.parametrize(
    "hostile", [{}, {"metadata": None, "status": None}, {"metadata": {"annotations": ["x"]}},
                {"status": {"addresses": "x"}}, {"metadata": {"name": 7}}],
)  # fmt: skip
def test_hostile_node_objects_are_unusable_not_crashes(hostile: dict[str, Any]) -> None:
    for setting in ("nodeExternalIP", "nodeInternalIP", f"nodeAnnotation:{KEY}"):
        with pytest.raises(UnusableAddress):
            resolve(parse(setting), hostile, None, 4)


def test_pod_ip_and_literal() -> None:
    assert resolve(parse("podIP"), None, "10.1.2.3", 4) == "10.1.2.3"
    with pytest.raises(UnusableAddress, match="POD_IP is not set"):
        resolve(parse("podIP"), None, None, 4)
    assert resolve(parse("127.0.0.5"), None, None, 4) == "127.0.0.5"  # a relay on loopback: tests


# ------------------------------------------------------------------------------ the operator


def media_pod(media: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = build_media_workload(Platform.model_validate({"media": media}), "voice")["spec"]
    return spec["template"]["spec"]  # type: ignore[no-any-return]


def test_pod_ip_is_the_default_and_carries_no_token() -> None:
    pod = media_pod({})
    args = pod["containers"][0]["args"]
    assert args[args.index("--advertise") + 1] == "$(POD_IP)"
    assert pod["automountServiceAccountToken"] is False and "serviceAccountName" not in pod


def test_node_modes_get_the_node_name_and_the_service_account() -> None:
    pod = media_pod(
        {"kind": "DaemonSet", "advertise": f"nodeAnnotation:{KEY}", "serviceAccountName": "relays"}
    )
    container = pod["containers"][0]
    assert container["args"][container["args"].index("--advertise") + 1] == f"nodeAnnotation:{KEY}"
    assert {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}} in container[
        "env"
    ]
    assert pod["serviceAccountName"] == "relays" and pod["automountServiceAccountToken"] is True
    literal = media_pod({"advertise": "198.51.100.4", "replicas": 1})
    args = literal["containers"][0]["args"]
    assert args[args.index("--advertise") + 1] == "198.51.100.4"
    assert literal["automountServiceAccountToken"] is False


@pytest.mark.parametrize(
    ("media", "why"),
    [
        ({"advertise": "nodeExternalIP", "serviceAccountName": "r"}, "needs kind DaemonSet"),
        ({"kind": "DaemonSet", "advertise": "nodeExternalIP"}, "needs media.serviceAccountName"),
        ({"advertise": "198.51.100.4"}, "one address for several relays"),
        ({"advertise": "relay.example.net"}, "not an IP address"),
        (
            {"kind": "DaemonSet", "advertise": "nodeAnnotation:a b", "serviceAccountName": "r"},
            "annotation key",
        ),
    ],
)
def test_the_platform_refuses_settings_that_cannot_work(media: dict[str, Any], why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        Platform.model_validate({"media": media})


# ------------------------------------------------------------------------------ the relay's flags


def test_the_command_line_takes_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = build_parser()
    assert advertise_of(parser.parse_args([])) == (None, None)
    assert advertise_of(parser.parse_args(["--advertise", "127.0.0.9"])) == ("127.0.0.9", None)
    monkeypatch.setenv("POD_NAMESPACE", "voice")
    monkeypatch.setenv("POD_NAME", "relay-0")
    monkeypatch.setenv("NODE_NAME", "worker-1")
    _, resolver = advertise_of(build_parser().parse_args(["--advertise", "nodeExternalIP"]))
    assert resolver is not None and resolver.node_name == "worker-1" and resolver.pod == ("voice", "relay-0")
    assert resolver.version == 4
    _, resolver = advertise_of(parser.parse_args(["--advertise", "podIP", "--media-listen", "::"]))
    assert resolver is not None and resolver.version == 6
    for bad in (["--advertise", "relay.example"], ["--advertise", "nodeInternalIP", "--node-name", "../x"]):
        with pytest.raises(ValueError, match="not"):
            advertise_of(parser.parse_args(bad))
