"""Every command's flags: --help, the global --log-level before or after the command, and a bad value
for each flag that parses one are a usage line and exit 2 (0 for --help), never a traceback."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from trunkline import cli
from trunkline.cdr.server import build_parser as cdr_parser
from trunkline.control.server import build_parser as control_parser
from trunkline.edge.server import build_parser as edge_parser
from trunkline.media.server import build_parser as media_parser
from trunkline.operator.main import build_parser as operator_parser
from trunkline.operator.platform_check import build_parser as platform_check_parser

EXAMPLES = str(Path(__file__).resolve().parents[2] / "examples")


def command_parsers() -> dict[str, argparse.ArgumentParser]:
    top = cli.build_parser()
    (sub,) = [a for a in top._actions if isinstance(a, argparse._SubParsersAction)]
    parsers = {name: parser for name, parser in sub.choices.items() if name not in cli.COMPONENTS}
    parsers.update(
        control=control_parser(),
        edge=edge_parser(),
        media=media_parser(),
        operator=operator_parser(),
        cdr=cdr_parser(),
        **{"platform-check": platform_check_parser()},
    )
    assert set(parsers) == {"validate", "up", "ladder", *cli.COMPONENTS}
    return parsers


@pytest.fixture(autouse=True)
def level_restored(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("TRUNKLINE_LOG_LEVEL", raising=False)  # main() sets it; restored afterwards
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


def exit_code(capsys: pytest.CaptureFixture[str], *words: str) -> tuple[int, str, str]:
    try:
        code = cli.main(list(words))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


@pytest.mark.parametrize(
    "command", ["validate", "up", "control", "edge", "media", "operator", "platform-check"]
)
def test_help_with_the_global_flag_anywhere(capsys: pytest.CaptureFixture[str], command: str) -> None:
    for words in (
        [command, "--help"],
        ["--log-level", "debug", command, "--help"],
        [command, "--log-level=warning", "--help"],
        [command, "--help", "--log-level", "ERROR"],
    ):
        code, out, _ = exit_code(capsys, *words)
        assert code == 0 and "usage:" in out, words


@pytest.mark.parametrize(
    "command", ["validate", "up", "control", "edge", "media", "operator", "platform-check"]
)
def test_a_bad_value_for_each_typed_flag_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], command: str
) -> None:
    checked = 0
    for action in command_parsers()[command]._actions:
        typed = action.type is not None or action.choices is not None
        if not action.option_strings or action.nargs == 0 or not typed or action.dest == "log_level":
            continue
        code, _, err = exit_code(capsys, command, action.option_strings[-1], "%bad%")
        assert code == 2, (command, action.option_strings)
        assert "error:" in err and action.option_strings[-1] in err, err
        checked += 1
    assert checked or command == "validate"


@pytest.mark.parametrize(
    "command", ["validate", "up", "control", "edge", "media", "operator", "platform-check"]
)
def test_unknown_flags_and_missing_values(capsys: pytest.CaptureFixture[str], command: str) -> None:
    code, _, err = exit_code(capsys, command, "--no-such-flag")
    assert code == 2 and "error" in err
    for action in command_parsers()[command]._actions:
        if action.option_strings and action.nargs != 0 and action.dest not in ("help", "log_level"):
            code, _, err = exit_code(capsys, command, action.option_strings[-1])
            assert code == 2 and "error:" in err, (command, action.option_strings)


@pytest.mark.parametrize(
    "words",
    [
        ["--log-level", "loud", "validate", "-f", EXAMPLES],
        ["validate", "-f", EXAMPLES, "--log-level=loud"],
        ["edge", "--log-level", "verbose"],
        ["control", "--log-level"],
    ],
)
def test_a_bad_log_level_is_one_line(capsys: pytest.CaptureFixture[str], words: list[str]) -> None:
    code, out, err = exit_code(capsys, *words)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "--log-level" in err


def test_the_level_applies_before_or_after_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    for words in (
        ["--log-level", "warning", "validate", "-f", EXAMPLES],
        ["validate", "-f", EXAMPLES, "--log-level=WARNING"],
    ):
        code, out, _ = exit_code(capsys, *words)
        assert code == 0 and out.startswith("ok:")
        assert logging.getLogger().level == logging.WARNING


def test_a_bad_level_in_the_environment_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRUNKLINE_LOG_LEVEL", "chatty")
    code, _, err = exit_code(capsys, "validate", "-f", EXAMPLES)
    assert code == 2 and "$TRUNKLINE_LOG_LEVEL" in err and err.count("\n") == 1


def test_platform_check_without_a_cluster_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    code, _, err = exit_code(capsys, "platform-check", "--platform", "ns/name", "--timeout", "1")
    assert code == 1 and err.startswith("FAILED:") and err.count("\n") == 1
