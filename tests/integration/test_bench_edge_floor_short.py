"""bench/edge_floor.py in a few seconds: one round of IP ACL calls and of OPTIONS on one edge, the
messages each handled read from its /metrics, and the floor's share of a call printed."""

from __future__ import annotations

import re

import pytest

from bench import edge_floor


@pytest.mark.timeout(300)
def test_one_round_counts_the_messages_of_a_call_and_of_an_options(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = edge_floor.main(["--rounds", "1", "--seconds", "2", "--call-rate", "10", "--options-rate", "20"])
    out = capsys.readouterr().out
    assert code == 0, out
    call = re.search(r"IP ACL call\s+(\d+) us CPU, (\S+) SIP messages handled", out)
    options = re.search(r"OPTIONS\s+(\d+) us CPU, (\S+) SIP messages handled", out)
    assert call and options, out
    assert float(options[2]) == 2.0, out  # the request and its 200
    # The caller's INVITE, ACK and BYE and the callee's 180, 200 and 200, each received and relayed.
    assert 12.0 <= float(call[2]) <= 14.0, out
    assert int(call[1]) > int(options[1]) > 0, out
    # A 2 s step's CPU is a few clock ticks (10 ms each): the share is printed, not its value checked.
    assert re.search(r"a call's messages at that price: +\d+ us = \d+\.\d\d of the call's CPU", out), out
