"""The operator's verdict on the platform ConfigMap, written onto it as an annotation.

Every platform reconcile ends in a verdict: applied, or refused with the reason (a model error, or the
API server refusing an object the platform builds). It is written as JSON in the annotation
`trunkline.io/platform-status` of the platform ConfigMap, with the SHA-256 of the `platform.yaml` it
judged, so a reader (`trunkline platform-check`, the chart's `helm test`) can tell a verdict on the
current content from a stale one after `helm upgrade`. Pure: no API calls here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from trunkline.operator.platform import PLATFORM_KEY

STATUS_ANNOTATION = "trunkline.io/platform-status"
APPLIED = "Applied"
REFUSED = "PlatformRefused"
MESSAGE_LIMIT = 1024  # as an Event's message: an annotation must stay small


@dataclass(frozen=True)
class Verdict:
    applied: bool
    reason: str  # APPLIED or REFUSED
    message: str
    checksum: str  # of the platform.yaml judged

    def annotation(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def platform_checksum(configmap: dict[str, Any]) -> str:
    text = (configmap.get("data") or {}).get(PLATFORM_KEY) or ""
    return hashlib.sha256(str(text).encode()).hexdigest()


def verdict(configmap: dict[str, Any], refusal: str | None) -> Verdict:
    """The verdict on this ConfigMap's content: refused for `refusal`, else applied."""
    if refusal is None:
        return Verdict(True, APPLIED, "data plane applied", platform_checksum(configmap))
    return Verdict(False, REFUSED, refusal[:MESSAGE_LIMIT], platform_checksum(configmap))


def read_verdict(configmap: dict[str, Any]) -> Verdict | None:
    """The verdict recorded on the ConfigMap; None when there is none (or it is not one: ignored)."""
    text = ((configmap.get("metadata") or {}).get("annotations") or {}).get(STATUS_ANNOTATION)
    if not isinstance(text, str):
        return None
    try:
        doc = json.loads(text)
        found = Verdict(
            applied=doc["applied"], reason=doc["reason"], message=doc["message"], checksum=doc["checksum"]
        )
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(found.applied, bool) or not all(
        isinstance(v, str) for v in (found.reason, found.message, found.checksum)
    ):
        return None
    return found


def verdict_patch(configmap: dict[str, Any], new: Verdict) -> dict[str, Any] | None:
    """The merge patch that records `new`; None when the ConfigMap already says exactly that."""
    if read_verdict(configmap) == new:
        return None
    return {"metadata": {"annotations": {STATUS_ANNOTATION: new.annotation()}}}
