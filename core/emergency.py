"""Emergency numbers: the installation's table per country or region, and the check of a dialled number.

An emergency call is recognised by the Request-URI's user part AS DIALLED, before any E.164
normalisation: a PBX dialling 911 must reach the emergency carrier as 911, never as +911...
(docs/emergency.md). The installation picks its countries (platform `edge.emergency.countries`, the
edge's `--emergency-countries`), may add numbers of its own (`edge.emergency.numbers`), and each
Trunk may add more (`spec.emergency.numbers`).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Collection, Iterable
from typing import Literal

from trunkline.core.net import ConfigError

# Short codes only: 2 to 8 digits (the longest national emergency or test codes are 5 digits).
EMERGENCY_NUMBER_PATTERN = r"^[0-9]{2,8}$"
MAX_EMERGENCY_NUMBERS = 32  # per list (a Trunk's additions, the installation's additions)

# Sources, per regulator: NANP 911 (47 CFR 9) and 933 (the 911 test call US carriers answer with the
# caller's registered address); EU 112 (Directive (EU) 2018/1972 art. 109); UK 999 and 112 (Ofcom
# General Conditions, C4); AU 000, 112 and 106 (TTY) (ACMA Emergency Call Service Requirements);
# NZ 111; IN 112 (the single number of the ERSS); JP 110 police, 118 coast guard, 119 fire/ambulance.
Country = Literal["NANP", "EU", "UK", "AU", "NZ", "IN", "JP"]  # the table's keys, for the schemas
EMERGENCY_NUMBERS: dict[Country, tuple[str, ...]] = {
    "NANP": ("911", "933"),
    "EU": ("112",),
    "UK": ("999", "112"),
    "AU": ("000", "112", "106"),
    "NZ": ("111",),
    "IN": ("112",),
    "JP": ("110", "118", "119"),
}
DEFAULT_COUNTRIES: tuple[Country, ...] = ("NANP", "EU")

_NUMBER = re.compile(EMERGENCY_NUMBER_PATTERN)


def installation_numbers(countries: Iterable[str], extra: Iterable[str] = ()) -> frozenset[str]:
    """The installation's emergency numbers: its countries' from the table, plus `extra`.
    Raises ValueError naming an unknown country or a number that is not 2-8 digits."""
    numbers: set[str] = set()
    for country in countries:
        found = EMERGENCY_NUMBERS.get(country.strip().upper())  # type: ignore[call-overload]
        if found is None:
            known = ", ".join(EMERGENCY_NUMBERS)
            raise ValueError(f"unknown emergency country {country!r} (known: {known})")
        numbers.update(found)
    extra = list(extra)
    if len(extra) > MAX_EMERGENCY_NUMBERS:
        raise ValueError(f"at most {MAX_EMERGENCY_NUMBERS} extra emergency numbers")
    for number in extra:
        if not _NUMBER.match(number):
            raise ValueError(f"emergency number {number!r} is not 2 to 8 digits")
        numbers.add(number)
    return frozenset(numbers)


def dialled(user: str) -> str:
    """A Request-URI user part (or tel: number) as dialled: without its ;parameters."""
    return user.split(";", 1)[0]


def emergency_number(user: str | None, *numbers: Collection[str]) -> str | None:
    """The dialled number when it is one of `numbers` (exact match, as dialled), else None."""
    if not user:
        return None
    number = dialled(user)
    if len(number) > 8:  # cheaper than any set lookup for the usual 10+ digit number
        return None
    return number if any(number in group for group in numbers) else None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The installation's emergency numbers on a command line (`trunkline edge`, `trunkline up`)."""
    parser.add_argument(
        "--emergency-countries", default=",".join(DEFAULT_COUNTRIES), metavar="LIST",
        help=f"comma-separated countries whose emergency numbers the edge knows, of "
        f"{', '.join(EMERGENCY_NUMBERS)} ('' for none; default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--emergency-number", action="append", default=[], metavar="DIGITS",
        help="one more emergency number, 2-8 digits as dialled (repeatable)",
    )  # fmt: skip


def from_arguments(args: argparse.Namespace) -> frozenset[str]:
    """The numbers `add_arguments` asked for; a bad one is a ConfigError naming the flag."""
    countries = [c for c in args.emergency_countries.split(",") if c.strip()]
    try:
        return installation_numbers(countries, args.emergency_number)
    except ValueError as exc:
        raise ConfigError(f"--emergency-countries/--emergency-number: {exc}") from None
