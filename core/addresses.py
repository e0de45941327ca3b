"""Which remote media addresses (an SDP's connection address) a call may send audio to.

A `c=` line is written by whoever sends the offer or answer: 169.254.169.254 (a cloud's metadata
service), 0.0.0.0, a multicast group, the pod network or the relay itself would turn the relay into a
way to reach things the caller cannot. Pure logic: the relay's API checks every leg with it
(INVALID_ARGUMENT) and the edge can answer 488 with the same words.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))
BROADCAST = ipaddress.ip_address("255.255.255.255")


@dataclass(frozen=True)
class MediaAddressPolicy:
    """Refuses unspecified, loopback (unless `allow_loopback`), link-local, multicast and broadcast
    addresses, any address in `deny`, and host names (only IP literals are media addresses here)."""

    allow_loopback: bool = False
    deny: tuple[IPNetwork, ...] = ()

    @classmethod
    def build(cls, allow_loopback: bool = False, deny_cidrs: Iterable[str] = ()) -> MediaAddressPolicy:
        """ValueError naming the entry when a deny CIDR is not a network (host bits set included)."""
        deny = []
        for cidr in deny_cidrs:
            try:
                deny.append(ipaddress.ip_network(cidr.strip(), strict=True))
            except ValueError as exc:
                raise ValueError(f"media deny CIDR {cidr!r}: {exc}") from None
        return cls(allow_loopback, tuple(deny))

    def refusal(self, address: str) -> str | None:
        """Why media must not go to `address`, or None when it may."""
        try:
            ip: IPAddress = ipaddress.ip_address(address)
        except ValueError:
            return f"{address[:64]!r} is not an IP address (host names are not accepted)"
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:169.254.169.254 is 169.254.169.254
        if ip.is_unspecified:
            return f"{address} is the unspecified address"
        if ip.is_loopback and not self.allow_loopback:
            return f"{address} is a loopback address"
        if any(ip.version == net.version and ip in net for net in LINK_LOCAL):
            return f"{address} is a link-local address"
        if ip.is_multicast:
            return f"{address} is a multicast address"
        if ip == BROADCAST:
            return f"{address} is the broadcast address"
        for net in self.deny:
            if ip.version == net.version and ip in net:
                return f"{address} is in the denied network {net}"
        return None

    def allows(self, address: str) -> bool:
        return self.refusal(address) is None


def is_loopback(host: str) -> bool:
    """Whether `host` (an IP literal) is a loopback address; host names are not."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
