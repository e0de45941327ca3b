"""`routing: quality` through `trunkline up` with two SIPp gateways of one priority: the one the
weights put first rejects every call with 503 (each call fails over to the other); once both have
the minimum of attempts in the last 5 minutes, the gateway that answers is tried first and the failing
one is not asked any more. The assertions are on which gateway got INVITEs (the CDR's attempts, and
SIPp's own count), never on timing."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.support import sipp
from tests.support.ports import free_port
from tests.support.trunkline_up import Up, manifests
from trunkline.core.models import QUALITY_MIN_ATTEMPTS


def quality_manifests(bad: int, good: int) -> str:
    docs = [json.loads(doc) for doc in manifests([bad, good], free_port()).split("\n---\n")]
    (carrier,) = [d for d in docs if d["kind"] == "Carrier"]
    carrier["spec"]["routing"] = "quality"
    carrier["spec"]["gateways"] = [  # one priority; the weights put the bad one first (RFC 2782)
        {"uri": f"sip:127.0.0.1:{bad}", "priority": 10, "weight": 65535},
        {"uri": f"sip:127.0.0.1:{good}", "priority": 10, "weight": 0},
    ]
    return "\n---\n".join(json.dumps(d) for d in docs)


def tried(cdr: dict[str, object]) -> list[tuple[str, int | None]]:
    return [(a["target"], a["status"]) for a in cdr["attempts"]]  # type: ignore[attr-defined, index]


def test_the_gateway_that_answers_is_tried_first_once_the_figures_show_it(tmp_path: Path) -> None:
    bad_port, good_port = free_port(), free_port()
    bad_uri, good_uri = f"sip:127.0.0.1:{bad_port}", f"sip:127.0.0.1:{good_port}"
    up = Up(tmp_path / "up", quality_manifests(bad_port, good_port)).start()
    bad = sipp.uas_status(tmp_path / "bad", "127.0.0.1", bad_port, 503, "Service Unavailable")
    good = sipp.uas(tmp_path / "good", "127.0.0.1", good_port)
    calls, deadline = 0, time.monotonic() + 180
    try:
        # Until the last 5 calls all went to the good gateway alone (or the deadline).
        while True:
            result = sipp.uac(tmp_path / f"pbx{calls}", up.sip, "127.0.0.2", "+442071234567")
            assert result.ok, result.output + up.output()
            calls += 1
            cdrs = up.wait_cdrs(calls, timeout=30)
            assert len(cdrs) == calls, up.output()
            if calls > QUALITY_MIN_ATTEMPTS and all(tried(c) == [(good_uri, 200)] for c in cdrs[-5:]):
                break
            assert time.monotonic() < deadline, f"{calls} calls, last: {[tried(c) for c in cdrs[-3:]]}"
    finally:
        bad_out, good_out = sipp.stop(bad), sipp.stop(good)
        up.stop()
    first = tried(cdrs[0])
    assert first == [(bad_uri, 503), (good_uri, 200)]  # the weights' order while nothing is known
    to_bad = sum(1 for c in cdrs for target, _ in tried(c) if target == bad_uri)
    assert to_bad >= QUALITY_MIN_ATTEMPTS  # it was ranked only once it had the minimum of attempts
    print(f"{calls} calls; the failing gateway got {to_bad} INVITEs, none in the last 5")
    assert sipp.received(bad_out, "INVITE") == to_bad  # the gateway's own count agrees
    assert sipp.received(good_out, "INVITE") == calls
