"""Which address a relay writes into SDP: its setting, and how a Node object turns it into an address.

One grammar for the chart value `media.advertise`, the platform's `media.advertise` and the relay's
`--advertise`:

- `podIP`: the pod's own address ($POD_IP; the node's, on the host network);
- `nodeInternalIP` / `nodeExternalIP`: that address of the relay's Node (`status.addresses`);
- `nodeAnnotation:<key>`: an IP address the user wrote on the Node (a 1:1 NAT address);
- an IP address literal.

Pure logic: the relay reads the Node (media/node_address.py), the operator validates the setting.
A Node's data is hostile input: only an IP address that can carry media is used, anything else is an
`UnusableAddress` whose message says why.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from trunkline.core.addresses import BROADCAST, IPAddress

POD_IP = "podIP"
NODE_INTERNAL_IP = "nodeInternalIP"
NODE_EXTERNAL_IP = "nodeExternalIP"
NODE_ANNOTATION = "nodeAnnotation:"

# An annotation key: an optional DNS-subdomain prefix and "/", then a name of at most 63 characters.
_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_PREFIX = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
ANNOTATION_KEY = re.compile(rf"^({_PREFIX}/)?{_NAME}$")
MAX_PREFIX = 253
MAX_ADDRESS_TEXT = 64  # longer than any IP literal: not read further (an annotation may be 256 KiB)
MAX_NODE_ADDRESSES = 64  # status.addresses entries looked at

# The schema's view of the grammar (values.schema.json); parse() is the full check.
PATTERN = r"^(podIP|nodeInternalIP|nodeExternalIP|nodeAnnotation:[A-Za-z0-9./_-]{1,317}|[0-9A-Fa-f.:]{2,45})$"


class AdvertiseMode(StrEnum):
    POD_IP = "podIP"
    NODE_INTERNAL_IP = "nodeInternalIP"
    NODE_EXTERNAL_IP = "nodeExternalIP"
    NODE_ANNOTATION = "nodeAnnotation"
    ADDRESS = "address"


NODE_ADDRESS_TYPES = {
    AdvertiseMode.NODE_INTERNAL_IP: "InternalIP",
    AdvertiseMode.NODE_EXTERNAL_IP: "ExternalIP",
}


class UnusableAddress(Exception):
    """The setting does not give an address media can reach the relay at; the message says why."""


@dataclass(frozen=True)
class AdvertiseSpec:
    mode: AdvertiseMode
    value: str = ""  # the annotation key, or the address literal

    @property
    def needs_node(self) -> bool:
        """Read from the relay's Node object (its ServiceAccount must be allowed to get nodes)."""
        return self.mode in (
            AdvertiseMode.NODE_INTERNAL_IP, AdvertiseMode.NODE_EXTERNAL_IP, AdvertiseMode.NODE_ANNOTATION
        )  # fmt: skip

    def __str__(self) -> str:
        if self.mode is AdvertiseMode.NODE_ANNOTATION:
            return f"{NODE_ANNOTATION}{self.value}"
        return self.value if self.mode is AdvertiseMode.ADDRESS else self.mode.value


def media_address(text: str, what: str) -> str:
    """`text` as an IP address that can carry media (loopback included: a relay on loopback serves
    parties on loopback), normalised; UnusableAddress naming `what` otherwise."""
    if len(text) > MAX_ADDRESS_TEXT:
        raise UnusableAddress(f"{what} is not an IP address ({len(text)} characters)")
    try:
        address: IPAddress = ipaddress.ip_address(text.strip())
    except ValueError:
        raise UnusableAddress(f"{what} {text!r} is not an IP address (host names are not used)") from None
    if address.is_unspecified or address.is_multicast or address == BROADCAST:
        raise UnusableAddress(f"{what} {address} cannot receive media (unspecified, multicast or broadcast)")
    return str(address)


def parse(text: str) -> AdvertiseSpec:
    """The setting; ValueError saying what is wrong."""
    if text in (POD_IP, NODE_INTERNAL_IP, NODE_EXTERNAL_IP):
        return AdvertiseSpec(AdvertiseMode(text))
    if text.startswith(NODE_ANNOTATION):
        key = text.removeprefix(NODE_ANNOTATION)
        prefix = key.rpartition("/")[0]
        if not ANNOTATION_KEY.match(key) or len(prefix) > MAX_PREFIX:
            raise ValueError(f"{key!r} is not an annotation key (e.g. trunkline.io/media-address)")
        return AdvertiseSpec(AdvertiseMode.NODE_ANNOTATION, key)
    try:
        return AdvertiseSpec(AdvertiseMode.ADDRESS, media_address(text, "the advertised address"))
    except UnusableAddress as exc:
        raise ValueError(
            f"{exc}; the setting is podIP, nodeInternalIP, nodeExternalIP, nodeAnnotation:<key> "
            "or an IP address"
        ) from None


def validated(text: str) -> str:
    """For pydantic: the setting as written, when parse() takes it."""
    parse(text)
    return text


def _family_matches(address: str, version: int | None) -> bool:
    return version is None or ipaddress.ip_address(address).version == version


def resolve(spec: AdvertiseSpec, node: dict[str, Any] | None, pod_ip: str | None, version: int | None) -> str:
    """The address to advertise. `node`: the relay's Node object as the API returns it (None when
    the mode does not need it); `version`: the IP version media binds (None: either). UnusableAddress
    when the Node (or the pod) gives none."""
    if spec.mode is AdvertiseMode.ADDRESS:
        address = spec.value
    elif spec.mode is AdvertiseMode.POD_IP:
        if not pod_ip:
            raise UnusableAddress("podIP: $POD_IP is not set")
        address = media_address(pod_ip, "the pod IP")
    else:
        if not isinstance(node, dict):
            raise UnusableAddress(f"{spec}: the Node object was not read")
        name = _node_name(node)
        if spec.mode is AdvertiseMode.NODE_ANNOTATION:
            annotations = (node.get("metadata") or {}).get("annotations") or {}
            value = annotations.get(spec.value) if isinstance(annotations, dict) else None
            if not isinstance(value, str) or not value.strip():
                raise UnusableAddress(f"node {name} has no annotation {spec.value}")
            address = media_address(value, f"annotation {spec.value} on node {name}:")
        else:
            address = _node_address(node, NODE_ADDRESS_TYPES[spec.mode], version, name)
    if not _family_matches(address, version):
        raise UnusableAddress(f"{spec} gives {address}, not an IPv{version} address like media's")
    return address


def _node_name(node: dict[str, Any]) -> str:
    name = (node.get("metadata") or {}).get("name")
    return name[:MAX_PREFIX] if isinstance(name, str) else "?"


def _node_address(node: dict[str, Any], kind: str, version: int | None, name: str) -> str:
    """The first usable address of that type (of the wanted IP version) in status.addresses."""
    entries = (node.get("status") or {}).get("addresses") or []
    seen = []
    for entry in entries[:MAX_NODE_ADDRESSES] if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or entry.get("type") != kind:
            continue
        if not isinstance(entry.get("address"), str):
            continue
        try:
            address = media_address(entry["address"], f"{kind} of node {name}")
        except UnusableAddress as exc:
            seen.append(str(exc))
            continue
        if _family_matches(address, version):
            return address
        seen.append(f"{address} is not IPv{version}")
    detail = f" ({'; '.join(seen)})" if seen else ""
    raise UnusableAddress(f"node {name} has no usable {kind}{detail}")
