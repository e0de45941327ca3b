"""A relay session's record in Redis: what it holds, how it changes with updates, how long it lives."""

from __future__ import annotations

import json

import pytest

from trunkline.media import rtp
from trunkline.media.engine import LegAllocation, LegConfig, LegState
from trunkline.media.records import NO_TIMEOUT_TTL, REPORT_INTERVAL, SessionRecord

PARTY_KEY, RELAY_KEY = rtp.new_key(), rtp.new_key()
SRTP_LEG = LegConfig(("192.0.2.10", 4000), ("192.0.2.10", 4001), False, PARTY_KEY, 8000)
PLAIN_LEG = LegConfig(("198.51.100.7", 5000), ("198.51.100.7", 5001), True, None, 16000)
ALLOCATIONS = (LegAllocation(20000, 20001, RELAY_KEY), LegAllocation(20002, 20002, None))


def record() -> SessionRecord:
    created = SessionRecord.created("call-1@edge", 30.0, (SRTP_LEG, PLAIN_LEG), ALLOCATIONS)
    return created.latched(((("203.0.113.5", 40000), None), (("198.51.100.7", 5000), None)))


def test_round_trip_keeps_ports_keys_and_latches() -> None:
    original = record()
    text = original.to_json()
    assert SessionRecord.from_json(text) == original
    leg_a = json.loads(text)["legs"][0]
    assert leg_a["relay_key"] == rtp.encode_key(RELAY_KEY) and leg_a["party_key"] == rtp.encode_key(PARTY_KEY)
    assert leg_a["latched_rtp"] == ["203.0.113.5", 40000] and leg_a["remote_rtp"] == ["192.0.2.10", 4000]
    assert original.legs[0].state() == LegState(20000, RELAY_KEY, ("203.0.113.5", 40000), None)


def test_an_update_keeps_a_latch_only_while_the_sdp_names_the_same_address() -> None:
    moved = LegConfig(("192.0.2.99", 4000), None, False, PARTY_KEY)
    same = PLAIN_LEG
    updated = record().updated((moved, same), ALLOCATIONS)
    assert updated.legs[0].config == moved and updated.legs[0].rtp_latched is None
    assert updated.legs[1].rtp_latched == ("198.51.100.7", 5000)
    untouched = record().updated((None, None), ALLOCATIONS)
    assert untouched == record()


def test_ttl_outlives_the_inactivity_timeout() -> None:
    assert record().ttl() == 30.0 + 2 * REPORT_INTERVAL
    never = SessionRecord.created("call-2", 0.0, (PLAIN_LEG, PLAIN_LEG), ALLOCATIONS)
    assert never.ttl() == NO_TIMEOUT_TTL + 2 * REPORT_INTERVAL


@pytest.mark.parametrize(
    "text",
    ['{"v": 2, "session": "x", "timeout": 1, "legs": []}', '{"v": 1, "session": "x"}', "[]", "not json"],
)
def test_unreadable_records_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        SessionRecord.from_json(text)


def test_a_nat_lock_stays_while_the_sdp_and_signalling_host_stay() -> None:
    """As in the engine: the lock (here A's NAT address, not its SDP's) outlives an update that keeps
    the SDP's address and signalling host, and is dropped when the signalling host changes."""
    kept = record().updated((SRTP_LEG, None), ALLOCATIONS)
    assert kept.legs[0].rtp_latched == ("203.0.113.5", 40000)
    signalled = LegConfig(
        SRTP_LEG.rtp_peer, SRTP_LEG.rtcp_peer, False, PARTY_KEY, signalling_host="203.0.113.5"
    )
    relearn = record().updated((signalled, None), ALLOCATIONS)
    assert relearn.legs[0].rtp_latched is None
    assert SessionRecord.from_json(relearn.to_json()).legs[0].config.signalling_host == "203.0.113.5"
