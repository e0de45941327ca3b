"""The operator's pod specs against the components' own command lines: every container's args and
environment (its env and the runtime ConfigMap) parse, and give each component what its probes and
peers expect: the HTTP port the probes hit, the control service, the shared store, TLS files."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import pytest

from trunkline.cdr.server import build_parser as cdr_parser
from trunkline.control.server import build_parser as control_parser
from trunkline.core.cdr import CdrSettings
from trunkline.core.state_redis import url_from_env
from trunkline.edge.server import build_parser as edge_parser
from trunkline.media.server import build_parser as media_parser
from trunkline.operator.builders import build_data_plane
from trunkline.operator.platform import Platform

PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "control": control_parser, "edge": edge_parser, "media": media_parser, "cdr": cdr_parser,
}  # fmt: skip
PLATFORMS = {
    "defaults": {},
    "tls, sentinel, password, daemonset": {
        "edge": {"tls": {"secretName": "edge-tls"}, "advertise": "sip.example.net:5060"},
        "redis": {"sentinel": {"addresses": ["s1:26379", "s2:26379"], "masterName": "main"},
                  "passwordSecret": {"name": "redis", "key": "password"}},
        "media": {"kind": "DaemonSet"},
        "httpPort": 9090,
        "name": "sbc",
    },
}  # fmt: skip


def containers(platform: Platform) -> dict[str, tuple[list[str], dict[str, str]]]:
    """Component -> (args after the component word, the environment the pod would see)."""
    objects = build_data_plane(platform, "voice")
    [configmap] = [o for o in objects if o["kind"] == "ConfigMap"]
    found = {}
    for obj in objects:
        if obj["kind"] not in ("Deployment", "DaemonSet"):
            continue
        for container in obj["spec"]["template"]["spec"]["containers"]:
            env = dict(configmap["data"])
            for var in container["env"]:  # valueFrom: what the kubelet would fill in
                env[var["name"]] = var.get("value", f"<{var['name']}>")
            component, *args = container["args"]
            found[component] = (args, env)
    return found


def parse(component: str, args: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    for name in [n for n in __import__("os").environ if n.startswith("TRUNKLINE_") or n == "POD_NAME"]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return PARSERS[component]().parse_args(args)


@pytest.mark.parametrize("name", PLATFORMS)
def test_every_container_parses_and_serves_its_probes(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    platform = Platform.model_validate(PLATFORMS[name])
    pods = containers(platform)
    assert set(pods) == set(PARSERS)
    for component, (args, env) in pods.items():
        with monkeypatch.context() as patch:
            parsed = parse(component, args, env, patch)
            assert parsed.http_listen and parsed.http_listen.endswith(f":{platform.httpPort}"), component
            if component == "edge":  # Contact names what every edge answers at, not this pod
                assert parsed.advertise == platform.edge.advertise or (
                    parsed.advertise == f"{platform.name}-edge-udp.voice.svc:{platform.edge.udpService.port}"
                )
            if component in ("edge", "media"):
                assert parsed.control, f"{component} must find the control service"
            if component in ("edge", "media", "cdr"):
                assert parsed.redis == url_from_env(env) and parsed.redis, f"{component} must share the store"


def test_the_edge_gets_its_tls_listener_and_files(monkeypatch: pytest.MonkeyPatch) -> None:
    platform = Platform.model_validate(PLATFORMS["tls, sentinel, password, daemonset"])
    args, env = containers(platform)["edge"]
    parsed = parse("edge", args, env, monkeypatch)
    assert parsed.tls_listen == "0.0.0.0:5061"
    assert (parsed.tls_cert, parsed.tls_key) == ("/etc/trunkline/tls/tls.crt", "/etc/trunkline/tls/tls.key")
    assert parsed.redis == "sentinel://:%3CTRUNKLINE_REDIS_PASSWORD%3E@s1:26379,s2:26379/main"


def test_the_edges_write_cdrs_into_the_stream_the_exporter_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    platform = Platform.model_validate({"name": "sbc", "cdr": {"stream": "billing:cdr", "batch": 100}})
    pods = containers(platform)
    _, edge_env = pods["edge"]
    assert CdrSettings.from_env(edge_env) == CdrSettings("sbc", "voice", "billing:cdr")
    cdr_args, cdr_env = pods["cdr"]
    parsed = parse("cdr", cdr_args, cdr_env, monkeypatch)
    assert (parsed.stream, parsed.batch, parsed.jsonl, parsed.consumer) == (
        "billing:cdr",
        100,
        "-",
        "<POD_NAME>",
    )
    off = Platform.model_validate({"cdr": {"enabled": False}})
    assert "cdr" not in containers(off)
    assert CdrSettings.from_env(containers(off)["edge"][1]).stream is None  # then the edges keep JSON lines


def test_the_exporter_takes_its_sinks_secrets_from_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    from trunkline.cdr.server import build_sinks

    platform = Platform.model_validate({"cdr": {
        "jsonl": False, "postgresDsnSecret": {"name": "billing-db", "key": "dsn"},
        "webhook": {"url": "https://billing.example.net/cdr", "secretRef": {"name": "hook", "key": "key"}},
    }})  # fmt: skip
    objects = build_data_plane(platform, "voice")
    [deployment] = [o for o in objects if o["metadata"]["name"] == "trunkline-cdr"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in container["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert refs["TRUNKLINE_CDR_POSTGRES_DSN"] == {"name": "billing-db", "key": "dsn"}
    assert refs["TRUNKLINE_CDR_WEBHOOK_SECRET"] == {"name": "hook", "key": "key"}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    args, env = containers(platform)["cdr"]
    env = {
        **env,
        "TRUNKLINE_CDR_POSTGRES_DSN": "postgresql://u:p@db:5432/cdr",
        "TRUNKLINE_CDR_WEBHOOK_SECRET": "k",
    }
    parsed = parse("cdr", args, env, monkeypatch)
    assert [sink.name for sink in build_sinks(parsed, env)] == ["postgres", "webhook"]
    with pytest.raises(ValueError, match="at least one sink"):
        Platform.model_validate({"cdr": {"jsonl": False}})


@pytest.mark.parametrize(
    ("media", "advertised"),
    [
        ({}, "10.1.2.3"),  # $(POD_IP), as the kubelet expands it: a literal
        ({"kind": "DaemonSet", "advertise": "nodeAnnotation:trunkline.io/media-address",
          "serviceAccountName": "relays"}, "nodeAnnotation:trunkline.io/media-address"),
    ],
)  # fmt: skip
def test_the_relay_resolves_the_advertise_setting_it_is_given(
    media: dict[str, Any], advertised: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trunkline.media.server import advertise_of

    args, env = containers(Platform.model_validate({"media": media}))["media"]
    args = [arg.replace("$(POD_IP)", "10.1.2.3") for arg in args]
    env |= {"NODE_NAME": "worker-1", "POD_NAME": "tl-media-x1", "POD_NAMESPACE": "voice"}
    literal, resolver = advertise_of(parse("media", args, env, monkeypatch))
    if resolver is None:
        assert literal == advertised
    else:
        assert str(resolver.spec) == advertised and resolver.node_name == "worker-1"
        assert resolver.pod == ("voice", "tl-media-x1")
