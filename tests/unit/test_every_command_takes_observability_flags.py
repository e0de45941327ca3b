"""`--log-format` and `--otlp-endpoint` on every command; a bad log format is one readable line."""

from __future__ import annotations

import pytest

from trunkline.cli import main


@pytest.mark.parametrize("command", ["validate", "up", "ladder", "control", "edge", "media", "operator"])
def test_flags_are_in_the_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "--log-format" in text and "--otlp-endpoint" in text


def test_a_bad_log_format_from_the_environment_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TRUNKLINE_LOG_FORMAT", "xml")
    assert main(["validate", "-f", "/nonexistent"]) == 1
    assert "log format 'xml' is not one of text, json" in capsys.readouterr().err


def test_an_unknown_otlp_protocol_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    assert main(["validate", "-f", "/nonexistent", "--otlp-endpoint", "http://127.0.0.1:4317"]) == 1
    assert "OTLP protocol 'http/json'" in capsys.readouterr().err
