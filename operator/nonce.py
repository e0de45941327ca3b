"""The digest nonce keys every edge pod of an installation shares (a Secret the operator writes).

Each edge signs the nonces of its challenges with the first key and accepts any key of the file, so
the PBX's authenticated request may land on any edge pod. The operator creates the Secret when it is
missing and rotates it every `edge.nonceKeyRotationHours`: the new key first, the previous newest key
on the next line, so challenges issued just before a rotation stay good. Pure: the caller reads the
current Secret and applies what this returns.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from typing import Any

from trunkline.operator.builders import NONCE_FILE, Manifest, object_metadata, object_name
from trunkline.operator.platform import Platform

ROTATED_AT = "trunkline.io/nonce-key-rotated-at"  # unix seconds of the last write
KEPT_KEYS = 2  # the new key and the one before it


def new_nonce_key() -> str:
    return secrets.token_urlsafe(32)


def current_keys(secret: dict[str, Any] | None) -> list[str]:
    """The keys of an existing Secret, newest first; [] when missing or unreadable."""
    encoded = ((secret or {}).get("data") or {}).get(NONCE_FILE, "")
    try:
        text = base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return []
    return [line.strip() for line in text.splitlines() if line.strip()]


def _rotated_at(secret: dict[str, Any]) -> float | None:
    value = (secret.get("metadata", {}).get("annotations") or {}).get(ROTATED_AT, "")
    try:
        return float(value)
    except ValueError:
        return None


def nonce_secret_update(
    platform: Platform,
    namespace: str,
    existing: dict[str, Any] | None,
    now: float,
    owner: dict[str, Any] | None = None,
    key: str | None = None,
) -> Manifest | None:
    """The Secret to write, or None while the current one stands."""
    keys = current_keys(existing)
    rotated_at = _rotated_at(existing) if existing else None
    hours = platform.edge.nonceKeyRotationHours
    if keys and rotated_at is not None and (hours == 0 or now - rotated_at < hours * 3600):
        return None
    keys = [key or new_nonce_key(), *keys][:KEPT_KEYS]
    metadata = object_metadata(platform, namespace, object_name(platform, "nonce"), "edge", owner)
    metadata["annotations"] = {ROTATED_AT: str(int(now))}
    text = "\n".join(keys) + "\n"
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": "Opaque",
        "data": {NONCE_FILE: base64.b64encode(text.encode()).decode()},
    }
