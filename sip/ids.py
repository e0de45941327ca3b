"""Identifiers of SIP elements (RFC 3261 19.3): tags, branches, Call-IDs, and random bytes for
nonces. Straight from the OS's CSPRNG (`secrets`): no pool, no module state, nothing to reset in a
forked child."""

from __future__ import annotations

import secrets

from trunkline.sip.headers import MAGIC_COOKIE


def random_bytes(nbytes: int) -> bytes:
    return secrets.token_bytes(nbytes)


def new_tag() -> str:
    """A From/To tag: 48 random bits."""
    return secrets.token_hex(6)


def new_branch() -> str:
    """A Via branch: the magic cookie and 64 random bits."""
    return MAGIC_COOKIE + secrets.token_hex(8)


def new_call_id() -> str:
    """A Call-ID's local part: 96 random bits."""
    return secrets.token_hex(12)
