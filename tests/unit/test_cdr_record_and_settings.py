"""The CDR record's content and the exporter's settings: clear errors, never a traceback or a secret."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from trunkline.cdr import server
from trunkline.cdr.sinks import JsonLinesSink, PostgresSink, WebhookSink, check_dsn, check_url, sign
from trunkline.core.cdr import MAX_CDR_BYTES, Cdr, Direction, billable_seconds, duration_seconds
from trunkline.core.net import ConfigError


def _cdr(**extra: object) -> Cdr:
    return Cdr.model_validate({
        "call_id": "abc@pbx", "trunk": "acme", "direction": "inbound", "callee": "+15550100",
        "invite_at": datetime(2026, 12, 7, 2, 0, 0, tzinfo=UTC),
        "end_at": datetime(2026, 12, 7, 2, 1, 0, tzinfo=UTC),
        "duration_seconds": 60.0, "billable_seconds": 55, **extra,
    })  # fmt: skip


def test_billable_seconds_round_up_and_unanswered_bill_nothing() -> None:
    assert billable_seconds(None, 100.0) == 0
    assert billable_seconds(100.0, 100.0) == 0
    assert billable_seconds(100.0, 100.2) == 1
    assert billable_seconds(100.0, 160.0) == 60
    assert billable_seconds(100.0, 160.0004) == 60  # float noise below a millisecond is not a second
    assert duration_seconds(10.0, 9.0) == 0.0


def test_the_record_round_trips_with_rfc3339_utc_times_and_an_id() -> None:
    cdr = _cdr(
        q850_cause=16, attempts=[{"target": "sip:gw1", "status": 503}, {"target": "sip:gw2", "status": 200}]
    )
    data = json.loads(cdr.to_json())
    assert data["invite_at"] == "2026-12-07T02:00:00.000Z"
    assert data["direction"] == Direction.INBOUND.value
    assert data["answer_at"] is None
    assert Cdr.from_json(cdr.to_json()) == cdr
    assert _cdr().id != _cdr().id  # each call its own id


def test_hostile_records_are_refused() -> None:
    with pytest.raises(ValidationError):
        _cdr(final_status=42)
    with pytest.raises(ValidationError):
        _cdr(surprise="field")
    odd = _cdr(caller="+1555\x00\udcff", attempts=[{"target": "sip:a\x00b"}])
    assert odd.caller == "+1555?" and odd.attempts[0].target == "sip:ab"  # what PostgreSQL can store
    assert Cdr.from_json(odd.to_json()) == odd
    with pytest.raises(ValueError, match="limit"):
        Cdr.from_json(b"x" * (MAX_CDR_BYTES + 1))


def test_signature_is_the_hmac_sha256_of_the_body() -> None:
    # RFC 4231 test case 2.
    body = b"what do ya want for nothing?"
    assert sign(b"Jefe", body) == "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"


def test_bad_sink_settings_are_one_clear_error() -> None:
    with pytest.raises(ConfigError, match="not valid") as bad:
        check_dsn("host=x password=hunter2 nonsense")
    assert "hunter2" not in str(bad.value)
    check_dsn("postgresql://u:p@127.0.0.1:5432/db")
    with pytest.raises(ConfigError, match="http"):
        check_url("ftp://example.invalid/x")
    with pytest.raises(ConfigError):
        check_url("http:///nohost")
    with pytest.raises(ConfigError, match="secret"):
        WebhookSink("http://127.0.0.1:9/x", b"")
    with pytest.raises(ConfigError, match="1024"):
        JsonLinesSink("/tmp/x", max_bytes=10)
    assert PostgresSink("postgresql://127.0.0.1:1/db").ready() is False


def test_the_command_refuses_what_it_cannot_run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRUNKLINE_REDIS_URL", raising=False)
    monkeypatch.delenv("TRUNKLINE_REDIS_SENTINELS", raising=False)
    monkeypatch.delenv("TRUNKLINE_CDR_POSTGRES_DSN", raising=False)
    assert server.main(["--jsonl", "-"]) == 1
    assert "no store" in capsys.readouterr().err
    assert server.main(["--redis", "redis://127.0.0.1:1/0"]) == 1
    assert "no sink" in capsys.readouterr().err
    assert server.main(["--redis", "redis://127.0.0.1:1/0", "--postgres"]) == 1
    assert "no DSN" in capsys.readouterr().err
    monkeypatch.setenv("TRUNKLINE_CDR_POSTGRES_DSN", "host=x password=hunter2 nonsense")
    assert server.main(["--redis", "redis://127.0.0.1:1/0", "--postgres"]) == 1
    err = capsys.readouterr().err
    assert "not valid" in err and "hunter2" not in err
    assert server.main(["--redis", "redis://127.0.0.1:1/0", "--webhook-url", "http://127.0.0.1:9/"]) == 1
    assert "secret is empty" in capsys.readouterr().err
    assert server.main(["--redis", "http://127.0.0.1:1/", "--jsonl", "-"]) == 1
    assert "redis://" in capsys.readouterr().err
