"""An edge whose Redis dies or stalls: calls in progress go on and end cleanly, new calls get a prompt
503 with Retry-After (the documented degraded mode), and calls work again once Redis is back."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import sipp
from tests.support.ports import free_port
from tests.support.redis_server import RedisProcess
from tests.support.trunkline_up import Up, manifests


@pytest.fixture
def edge(tmp_path: Path, redis: RedisProcess, carrier_port: int) -> Iterator[Up]:
    up = Up(tmp_path / "edge", manifests(carrier_port, free_port()), ["--redis", redis.url], command="edge")
    yield up.start()
    up.stop()


def held_call(tmp_path: Path, edge: Up, name: str) -> sipp.Background:
    held = sipp.Background(
        lambda: sipp.uac(tmp_path / name, edge.sip, "127.0.0.2", "+442071234567", hold_ms=4000)
    )
    edge.wait_busy(1)
    return held


@pytest.mark.parametrize("trouble", ["dead", "stalled"])
def test_calls_in_progress_go_on_and_new_calls_get_503(
    trouble: str, edge: Up, redis: RedisProcess, tmp_path: Path, carrier_port: int
) -> None:
    gateway = sipp.uas(tmp_path / "gw", "127.0.0.1", carrier_port)
    assert redis.proc is not None
    try:
        held = held_call(tmp_path, edge, "held")
        if trouble == "dead":
            redis.stop(kill=True)
        else:
            redis.proc.send_signal(19)  # SIGSTOP: connections stay open, nothing answers
        began = time.monotonic()
        refused = sipp.uac_expect(tmp_path / "refused", edge.sip, "127.0.0.2", "+442071234567", 503)
        refused_after = time.monotonic() - began
        outcome = held.result(timeout=30)
        if trouble == "dead":
            redis.start()  # the same port, empty: what a restarted Redis without persistence is
        else:
            redis.proc.send_signal(18)  # SIGCONT
        again = sipp.uac(tmp_path / "again", edge.sip, "127.0.0.2", "+442071234567")
        cdrs = edge.wait_cdrs(2)
    finally:
        if trouble == "stalled" and redis.proc.poll() is None:
            redis.proc.send_signal(18)
        sipp.stop(gateway)
    assert refused.ok, refused.output + edge.output()
    assert refused_after < 5, f"the 503 took {refused_after:.1f} s"
    assert outcome.ok, outcome.output + edge.output()  # the held call ended with BYE/200
    assert again.ok, again.output + edge.output()
    assert "rule=store" in edge.output()
    assert [(c["status"], c["hung_up"]) for c in cdrs] == [(200, "caller")] * 2, cdrs  # refused: no record
    assert edge.proc is not None and edge.proc.poll() is None
