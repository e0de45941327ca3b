"""Phone numbers: what a Request-URI's user part (or a tel: URI) means in E.164.

Accepted forms, in this order:
  +14155550100, +1 (415) 555-0100   E.164 with visual separators (RFC 3966 visual-separator: - . ( ) )
  0014155550100                     the numbering plan's international prefix, then the number
  04155550100                       the national prefix (trunk prefix), then the national number
  4155550100                        a national number, when the plan has no national prefix
  14155550100                       without a plan: the digits of an E.164 number without the '+'
"""

from __future__ import annotations

import re

from trunkline.core.models import Numbering, is_e164

_VISUAL_SEPARATORS = str.maketrans("", "", "-.() ")
_DIGITS = re.compile(r"^[0-9]+$")


def to_e164(user: str, plan: Numbering | None = None) -> str | None:
    """The E.164 form of `user` (a URI user part or tel: number), or None when it is not a number."""
    text = user.split(";", 1)[0].translate(_VISUAL_SEPARATORS)
    if text.startswith("+"):
        return text if is_e164(text) else None
    if not _DIGITS.match(text):
        return None
    candidate = "+" + text
    if plan is not None:
        if plan.internationalPrefix and text.startswith(plan.internationalPrefix):
            candidate = "+" + text[len(plan.internationalPrefix) :]
        elif plan.nationalPrefix and text.startswith(plan.nationalPrefix):
            candidate = "+" + plan.countryCode + text[len(plan.nationalPrefix) :]
        elif not plan.nationalPrefix:
            candidate = "+" + plan.countryCode + text
    return candidate if is_e164(candidate) else None


def matches_prefix(number: str, prefixes: list[str]) -> bool:
    return any(number.startswith(prefix) for prefix in prefixes)
