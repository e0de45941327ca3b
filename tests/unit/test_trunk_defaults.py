"""TrunkDefaults: the documented caps of a trunk that sets none, "unlimited" only when written down,
and the edge's --default-* flags that set them (a bad one is a clear error naming the flag)."""

from __future__ import annotations

import pytest

from trunkline.core.models import TrunkSpec
from trunkline.core.trunk_defaults import TrunkDefaults
from trunkline.edge.server import build_parser, trunk_defaults


def spec(**fields: object) -> TrunkSpec:
    return TrunkSpec.model_validate(fields)


def test_the_documented_defaults() -> None:
    defaults = TrunkDefaults()
    assert (defaults.channels, defaults.callsPerSecond, defaults.allowedPrefixes) == (30, 5.0, [])
    unset = spec()
    assert defaults.channels_of(unset) == 30 and defaults.calls_per_second_of(unset) == 5.0
    assert defaults.allowed_prefixes_of(unset) == []


def test_a_trunks_own_value_wins_and_zero_is_unlimited() -> None:
    defaults = TrunkDefaults(channels=30, callsPerSecond=5, allowedPrefixes=["+1"])
    own = spec(channels=4, callsPerSecond=0.5, outbound={"allowedPrefixes": ["+44"]})
    assert (defaults.channels_of(own), defaults.calls_per_second_of(own)) == (4, 0.5)
    assert defaults.allowed_prefixes_of(own) == ["+44"]
    unlimited = spec(channels=0, callsPerSecond=0, outbound={"allowedPrefixes": ["+"]})
    assert defaults.channels_of(unlimited) is None and defaults.calls_per_second_of(unlimited) is None
    assert defaults.allowed_prefixes_of(unlimited) == ["+"]
    assert defaults.allowed_prefixes_of(spec(outbound={"allowedPrefixes": []})) == []  # none: inbound only
    assert defaults.allowed_prefixes_of(spec()) == ["+1"]
    everything = TrunkDefaults(channels=0, callsPerSecond=0)  # a platform may choose unlimited too
    assert everything.channels_of(spec()) is None and everything.calls_per_second_of(spec()) is None


def test_the_edge_flags_set_them() -> None:
    args = build_parser().parse_args(
        ["-f", "x.yaml", "--default-channels", "0", "--default-calls-per-second", "2.5",
         "--default-allowed-prefix", "+1", "--default-allowed-prefix", "+44"]
    )  # fmt: skip
    assert trunk_defaults.from_arguments(args) == TrunkDefaults(
        channels=0, callsPerSecond=2.5, allowedPrefixes=["+1", "+44"]
    )
    assert trunk_defaults.from_arguments(build_parser().parse_args(["-f", "x.yaml"])) == TrunkDefaults()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--default-channels", "many"], "--default-channels many: "),
        (["--default-channels", "-1"], "--default-channels -1: "),
        (["--default-calls-per-second", "-2"], "--default-calls-per-second -2: "),
        (
            ["--default-allowed-prefix", "+1", "--default-allowed-prefix", "44"],
            "--default-allowed-prefix 44: ",
        ),
    ],
)
def test_a_bad_flag_is_named(flags: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("+", r"\+")):
        trunk_defaults.from_arguments(build_parser().parse_args(["-f", "x.yaml", *flags]))
