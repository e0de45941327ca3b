"""Robustness: any bytes give a parsed message or SipParseError, never another exception."""

from __future__ import annotations

import pathlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trunkline.sip import Message, SipParseError, StreamFramer, parse_message
from trunkline.sip.sdp import parse_sdp

SEEDS = [
    p.read_bytes()
    for p in sorted((pathlib.Path(__file__).parent.parent / "fixtures" / "rfc4475").glob("*.dat"))
]


def exercise(data: bytes) -> None:
    """Parse and touch every structured view, then serialize and parse again."""
    try:
        msg = parse_message(data)
    except SipParseError:
        return
    assert isinstance(msg, Message)
    try:
        msg.validate()
        _ = msg.content_type
        if msg.body and msg.content_type is not None and msg.content_type.mime == "application/sdp":
            parse_sdp(msg.body).to_bytes()
    except SipParseError:
        pass
    again = parse_message(msg.to_bytes())  # what we write we can read back
    assert again.to_bytes() == parse_message(again.to_bytes()).to_bytes()


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_random_bytes(data: bytes) -> None:
    exercise(data)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SEEDS), st.lists(st.tuples(st.integers(0, 4000), st.binary(max_size=8)), max_size=6))
def test_mutated_torture_messages(seed: bytes, edits: list[tuple[int, bytes]]) -> None:
    data = bytearray(seed)
    for pos, blob in edits:
        p = pos % (len(data) + 1)
        data[p : p + len(blob)] = blob  # overwrite some octets
    exercise(bytes(data))


@settings(max_examples=300)
@given(st.sampled_from(SEEDS), st.lists(st.integers(1, 64), max_size=20))
def test_stream_framer_never_crashes(seed: bytes, cuts: list[int]) -> None:
    framer = StreamFramer()
    data = seed * 2
    pos = 0
    try:
        for cut in [*cuts, len(data)]:
            framer.feed(data[pos : pos + cut])
            pos += cut
    except SipParseError:
        pass
    assert framer.buffered <= 65536 + 64


@settings(max_examples=300)
@given(st.text(max_size=300))
def test_sdp_never_crashes(text: str) -> None:
    try:
        parse_sdp(("v=0\r\n" + text).encode()).to_bytes()
    except SipParseError:
        pass
