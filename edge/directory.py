"""Lookups the edge makes on every request, built once per configuration version.

Who sent this request (a carrier by source CIDR, a trunk by IP ACL or digest username), which trunk a
DID belongs to, what a trunk's numbers are. Rebuilt whenever the configuration changes; never mutated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, cast

from trunkline.core.manifests import ConfigSet
from trunkline.core.models import DID, Carrier, Trunk
from trunkline.edge.policy import source_in


@dataclass(frozen=True)
class Credentials:
    trunk: Trunk
    username: str
    password: str


# Which carrier and which trunk a source address is, asked on every new request (an address parsed and
# tested against every CIDR each time): remembered per directory, for this many addresses at most (a
# flood of spoofed sources empties the memo, it never grows past this).
SOURCE_MEMO = 4096
_UNKNOWN: Final = object()


def _remember(memo: dict[str, object], address: str, found: object) -> None:
    if len(memo) >= SOURCE_MEMO:
        memo.clear()
    memo[address] = found


class Directory:
    def __init__(self, config: ConfigSet):
        self.config = config
        self._carrier_by_source: dict[str, object] = {}
        self._trunk_by_source: dict[str, object] = {}
        # Trunks are namespaced (two namespaces may both have an `acme`); numbers and digest
        # usernames are global, like the phone network and the edge's one realm space.
        self.trunks: dict[tuple[str, str], Trunk] = dict(config.trunks)
        self.carriers: list[Carrier] = list(config.carriers.values())
        self.dids: dict[str, DID] = {d.spec.number: d for d in config.dids.values()}
        self._numbers: dict[tuple[str, str], list[str]] = {}
        for did in config.dids.values():
            self._numbers.setdefault((did.metadata.namespace, did.spec.trunkRef), []).append(did.spec.number)
        self._credentials: dict[str, Credentials] = {}
        # Every trunk's own emergency numbers: what may be an emergency call before we know the trunk.
        self.emergency_numbers = frozenset(
            n for trunk in config.trunks.values() for n in trunk.spec.emergency.numbers
        )
        for trunk in config.trunks.values():
            digest = trunk.spec.auth.digest
            if digest is None:
                continue
            ns = trunk.metadata.namespace
            username = config.secret_value(ns, digest.credentialsSecret, "username")
            password = config.secret_value(ns, digest.credentialsSecret, "password")
            if username and password:
                self._credentials[username] = Credentials(trunk, username, password)
        # What the edge answers a carrier's challenges with: (username, password) per carrier.
        self._carrier_credentials: dict[tuple[str, str], tuple[str, str]] = {}
        for carrier in self.carriers:
            if carrier.spec.auth is None:
                continue
            ns, secret = carrier.metadata.namespace, carrier.spec.auth.credentialsSecret
            username = config.secret_value(ns, secret, "username")
            password = config.secret_value(ns, secret, "password")
            if username and password:
                self._carrier_credentials[carrier.key] = (username, password)

    def carrier_for_source(self, address: str) -> Carrier | None:
        found = self._carrier_by_source.get(address, _UNKNOWN)
        if found is _UNKNOWN:
            found = next((c for c in self.carriers if source_in(address, c.spec.inboundCidrs)), None)
            _remember(self._carrier_by_source, address, found)
        return cast(Carrier | None, found)

    def carrier_credentials(self, carrier: Carrier) -> tuple[str, str] | None:
        """(username, password) from the Carrier's `spec.auth.credentialsSecret`, if it has them."""
        return self._carrier_credentials.get(carrier.key)

    def carrier_of_gateway(self, uri: str) -> Carrier | None:
        """The carrier that lists `uri` as one of its gateways."""
        return next((c for c in self.carriers if any(g.uri == uri for g in c.spec.gateways)), None)

    def trunk_for_source(self, address: str) -> Trunk | None:
        """The trunk whose IP ACL admits `address` without a challenge."""
        found = self._trunk_by_source.get(address, _UNKNOWN)
        if found is _UNKNOWN:
            found = next((t for t in self.trunks.values() if source_in(address, t.spec.auth.ipAcl)), None)
            _remember(self._trunk_by_source, address, found)
        return cast(Trunk | None, found)

    def credentials(self, username: str) -> Credentials | None:
        return self._credentials.get(username)

    def did(self, number: str) -> DID | None:
        return self.dids.get(number)

    def trunk_of(self, did: DID) -> Trunk | None:
        return self.trunks.get((did.metadata.namespace, did.spec.trunkRef))

    def numbers_of(self, trunk: Trunk) -> list[str]:
        """The trunk's DIDs in definition order (the first is the caller ID for `replace`)."""
        return self._numbers.get(trunk.key, [])

    def username_of(self, trunk: Trunk) -> str | None:
        return next((u for u, c in self._credentials.items() if c.trunk.key == trunk.key), None)

    def registering(self) -> list[tuple[Trunk, str]]:
        """(trunk, digest username) of every trunk whose PBXs register."""
        return [(c.trunk, u) for u, c in self._credentials.items() if c.trunk.spec.registration.enabled]

    def digest_trunks(self) -> list[Trunk]:
        return [t for t in self.trunks.values() if t.spec.auth.digest is not None]

    def registration_user(self, carrier: Carrier) -> str | None:
        """The user we register to `carrier` as (the Contact's user), or None when not registering."""
        registration = carrier.spec.registration
        if not registration.enabled:
            return None
        credentials = self.carrier_credentials(carrier)
        return registration.user or (credentials[0] if credentials else None)
