"""The lines any peer can cause at will (a malformed datagram, a refused connection) go through a
token bucket; the ones left out are counted in the next line let through."""

from __future__ import annotations

import logging

import pytest

from trunkline.sip import peer_log
from trunkline.sip.peer_log import LineBudget


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def line(text: str = "dropping message from %s", *args: object) -> logging.LogRecord:
    return logging.LogRecord("trunkline.sip.peers", logging.INFO, __file__, 1, text, args or ("x",), None)


def test_a_burst_passes_then_the_rate_and_the_next_line_counts_those_left_out() -> None:
    clock = Clock()
    budget = LineBudget(rate=10.0, burst=5.0, clock=clock)
    assert [budget.filter(line()) for _ in range(8)] == [True] * 5 + [False] * 3
    clock.now += 0.15  # a token and a half back
    record = line()
    assert budget.filter(record)
    assert record.getMessage() == "dropping message from x (3 such lines left out)"
    assert not budget.filter(line())  # spent again
    clock.now += 60  # a quiet minute refills the burst, no more
    assert [budget.filter(line()) for _ in range(6)] == [True] * 5 + [False]


def test_the_sip_core_s_peer_lines_go_through_the_budget(caplog: pytest.LogCaptureFixture) -> None:
    from trunkline.sip.transaction import TransactionLayer

    layer = TransactionLayer()
    budget = peer_log.budget
    budget.tokens, budget.left_out = 2.0, 0
    budget.rate = 0.0  # no refill during the test
    try:
        with caplog.at_level(logging.INFO, logger="trunkline.sip.peers"):
            for _ in range(10):
                assert layer.receive_data(b"\x00\x01 not SIP", ("192.0.2.1", 5060), "udp", 0.0) == []
        assert len(caplog.records) == 2 and budget.left_out == 8
    finally:
        budget.rate, budget.tokens, budget.left_out = peer_log.RATE, peer_log.BURST, 0
