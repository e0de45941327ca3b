"""A trunk's rules for a call, as pure functions: who may send, whom they may call, as whom.

Each rule that says no returns a `Rejection` with the SIP status to answer and a reason for the log
line (which trunk, which rule), so an operator can tell at once why a call did not go through.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from trunkline.core.models import CallerIdAction, CallerIdPolicy, Trunk
from trunkline.core.trunk_defaults import EVERY_NUMBER, TrunkDefaults
from trunkline.edge.numbers import matches_prefix

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Rejection:
    status: int
    reason: str  # SIP reason phrase
    rule: str  # what the log line names: "allowedPrefixes", "callerId", "channels", ...
    detail: str = ""
    retry_after: int | None = None


@lru_cache(maxsize=4096)
def _networks(cidrs: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def source_in(address: str, cidrs: Sequence[str]) -> bool:
    """Is `address` (v4 or v6, v4-mapped v6 folded to v4) inside one of `cidrs`?"""
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return any(ip in net for net in _networks(tuple(cidrs)) if net.version == ip.version)


def check_destination(trunk: Trunk, number: str, defaults: TrunkDefaults | None = None) -> Rejection | None:
    """Geo-permissions: the trunk's list, else the platform's default list; "+" allows every number,
    an empty list none."""
    allowed = (defaults or TrunkDefaults()).allowed_prefixes_of(trunk.spec)
    if EVERY_NUMBER in allowed or matches_prefix(number, allowed):
        return None
    if not allowed:
        detail = f"{number}: the trunk may call no number (no outbound.allowedPrefixes, no platform default)"
    else:
        detail = f"{number} is outside {','.join(allowed)}"
    return Rejection(403, "Forbidden", "allowedPrefixes", detail)


def check_caller_id(
    trunk: Trunk, caller: str | None, dids: Iterable[str]
) -> tuple[str | None, Rejection | None]:
    """The caller ID to present, or a rejection. `dids` are the trunk's numbers in definition order."""
    outbound = trunk.spec.outbound
    if outbound.callerId is CallerIdPolicy.ANY:
        return caller, None
    numbers = list(dids)
    if caller is not None and caller in numbers:
        return caller, None
    if outbound.callerIdAction is CallerIdAction.REPLACE and numbers:
        return numbers[0], None
    shown = caller or "(not a number)"
    return None, Rejection(403, "Forbidden", "callerId", f"{shown} is not one of the trunk's DIDs")
