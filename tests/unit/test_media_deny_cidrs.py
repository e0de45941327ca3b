"""The media address policy's settings: the chart's `mediaDenyCidrs` reach the edge and the relay
as flags, a bad network is refused by the platform model, and the edge's flags build its policy
(loopback allowed when asked or when SIP listens on loopback)."""

from __future__ import annotations

import pytest
import yaml

from trunkline.core.net import ConfigError
from trunkline.edge.server import build_parser, media_policy_of
from trunkline.operator.builders import build_edge_deployment, build_media_workload
from trunkline.operator.platform import DEFAULT_MEDIA_DENY_CIDRS, parse_platform


def platform_with(**values: object) -> dict[str, str]:
    return {"platform.yaml": yaml.safe_dump(values)}


def args_of(manifest: dict[str, object]) -> list[str]:
    spec = manifest["spec"]
    assert isinstance(spec, dict)
    [container] = spec["template"]["spec"]["containers"]
    return list(container["args"])


def test_the_default_denies_the_usual_pod_and_service_networks_in_edge_and_relay() -> None:
    platform = parse_platform(platform_with())
    assert platform.mediaDenyCidrs == list(DEFAULT_MEDIA_DENY_CIDRS)
    for manifest in (build_edge_deployment(platform, "ns"), build_media_workload(platform, "ns")):
        args = args_of(manifest)
        assert [args[i + 1] for i, a in enumerate(args) if a == "--media-deny-cidr"] == list(
            DEFAULT_MEDIA_DENY_CIDRS
        )


def test_an_empty_list_passes_no_flag_and_a_bad_network_is_refused() -> None:
    platform = parse_platform(platform_with(mediaDenyCidrs=[]))
    assert "--media-deny-cidr" not in args_of(build_edge_deployment(platform, "ns"))
    with pytest.raises(ValueError, match="host bits"):
        parse_platform(platform_with(mediaDenyCidrs=["10.0.0.1/8"]))


def test_the_edge_flags_build_its_policy() -> None:
    parser = build_parser()
    public = media_policy_of(parser.parse_args(["--media-deny-cidr", "192.0.2.0/24"]), "0.0.0.0")
    assert not public.allows("127.0.0.1") and not public.allows("192.0.2.7") and public.allows("198.51.100.1")
    assert media_policy_of(parser.parse_args([]), "127.0.0.1").allows("127.0.0.1")  # implied on loopback
    assert media_policy_of(parser.parse_args(["--allow-loopback-media"]), "0.0.0.0").allows("127.0.0.1")
    with pytest.raises(ConfigError, match="--media-deny-cidr"):
        media_policy_of(parser.parse_args(["--media-deny-cidr", "nope"]), "0.0.0.0")
