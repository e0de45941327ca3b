"""What a Trunk gets for the caps it leaves unset: the platform's secure defaults (docs/security.md).

A trunk without `channels`, `callsPerSecond` or `outbound.allowedPrefixes` is not unlimited: a stolen
credential would call premium-rate numbers anywhere, as fast as it likes. It gets these defaults
instead (chart values `edge.trunkDefaults`, edge flags `--default-channels`, `--default-calls-per-second`,
`--default-allowed-prefix`). Unlimited stays possible, but only when written down: `channels: 0`,
`callsPerSecond: 0`, `allowedPrefixes: ["+"]`.
"""

from __future__ import annotations

import argparse

from pydantic import Field, ValidationError

from trunkline.core.models import AllowedPrefix, Model, TrunkSpec

UNLIMITED = 0  # channels / callsPerSecond
EVERY_NUMBER = "+"  # the allowed prefix of every number


class TrunkDefaults(Model):
    """The caps of a trunk that sets none. The allowed prefixes default to none (outbound calls are
    refused until the trunk, or the platform, names the countries): the home country of an
    installation is not knowable, and "everywhere" is what toll fraud wants."""

    channels: int = Field(
        30, ge=0, le=1_000_000, description="Concurrent calls of a Trunk without `channels` (0: unlimited)."
    )
    callsPerSecond: float = Field(
        5.0, ge=0, le=100_000, description="Call rate of a Trunk without `callsPerSecond` (0: unlimited)."
    )
    allowedPrefixes: list[AllowedPrefix] = Field(
        default_factory=list,
        max_length=1024,
        description='Prefixes a Trunk without `outbound.allowedPrefixes` may call (e.g. ["+1"] for the '
        'home zone; "+": any number); empty: such a trunk places no outbound calls.',
    )

    def channels_of(self, spec: TrunkSpec) -> int | None:
        """The trunk's channel cap; None: unlimited."""
        value = self.channels if spec.channels is None else spec.channels
        return value or None

    def calls_per_second_of(self, spec: TrunkSpec) -> float | None:
        """The trunk's call rate cap; None: unlimited."""
        value = self.callsPerSecond if spec.callsPerSecond is None else spec.callsPerSecond
        return value or None

    def allowed_prefixes_of(self, spec: TrunkSpec) -> list[str]:
        """The prefixes the trunk may call ("+" among them: any number)."""
        given = spec.outbound.allowedPrefixes
        return list(self.allowedPrefixes if given is None else given)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("defaults of trunks that leave a cap unset (docs/security.md)")
    defaults = TrunkDefaults()
    group.add_argument(
        "--default-channels", metavar="N", default=str(defaults.channels),
        help=f"concurrent calls of a trunk without channels (0: unlimited; default {defaults.channels})",
    )  # fmt: skip
    group.add_argument(
        "--default-calls-per-second", metavar="R", default=str(defaults.callsPerSecond),
        help="call rate of a trunk without callsPerSecond "
        f"(0: unlimited; default {defaults.callsPerSecond:g})",
    )  # fmt: skip
    group.add_argument(
        "--default-allowed-prefix", metavar="PREFIX", action="append", default=[],
        help='what a trunk without outbound.allowedPrefixes may call, e.g. +1 (repeatable; "+": any '
        "number; default: nothing, outbound calls refused)",
    )  # fmt: skip


def from_arguments(args: argparse.Namespace) -> TrunkDefaults:
    """The defaults the flags name; ValueError naming the flag when one does not fit."""
    flags = {
        "channels": ("--default-channels", args.default_channels),
        "callsPerSecond": ("--default-calls-per-second", args.default_calls_per_second),
        "allowedPrefixes": ("--default-allowed-prefix", args.default_allowed_prefix),
    }
    try:
        return TrunkDefaults.model_validate({field: value for field, (_, value) in flags.items()})
    except ValidationError as exc:
        error = exc.errors()[0]
        flag, value = flags[str(error["loc"][0])]
        shown = error["input"] if len(error["loc"]) > 1 else value
        raise ValueError(f"{flag} {shown}: {error['msg']}") from None
