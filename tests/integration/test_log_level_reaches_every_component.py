"""The platform's log level reaches every component: operator-built pods set $TRUNKLINE_LOG_LEVEL, and
`trunkline --log-level X` works before or after the command (control and media hard-coded INFO)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.ports import free_port
from tests.support.processes import TRUNKLINE, http_ready, stop, wait_started

ROOT = Path(__file__).resolve().parents[2]


def component_args(command: str) -> list[str]:
    if command == "control":
        listen = f"127.0.0.1:{free_port()}"
        return ["control", "-f", str(ROOT / "examples"), "--listen", listen, "--insecure-grpc"]
    if command == "media":
        low = 26000 + (os.getpid() % 100) * 10
        return ["media", "--listen", f"127.0.0.1:{free_port()}", "--media-ports", f"{low}-{low + 9}",
                "--insecure-grpc"]  # fmt: skip
    return ["edge", "-f", str(ROOT / "examples"), "--sip-listen", f"127.0.0.1:{free_port()}"]


def run_until_ready(tmp_path: Path, words: list[str], env_level: str | None) -> str:
    """Start `trunkline WORDS --http-listen ...`, wait for /readyz, stop it; its log."""
    http = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if k != "TRUNKLINE_LOG_LEVEL"}
    if env_level:
        env["TRUNKLINE_LOG_LEVEL"] = env_level
    log_path = tmp_path / f"{words[0]}-{len(list(tmp_path.iterdir()))}.log"
    with log_path.open("w") as log:
        command = [TRUNKLINE, *words, "--http-listen", http]
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, text=True)
    try:
        wait_started(
            proc, lambda: http_ready(f"http://{http}/readyz"), " ".join(words[:1]), log_path.read_text
        )
    finally:
        stop(proc)
    return log_path.read_text()


@pytest.mark.parametrize("command", ["control", "media"])
def test_the_environment_level_reaches_the_component(tmp_path: Path, command: str) -> None:
    """What operator-built pods do: TRUNKLINE_LOG_LEVEL from the runtime ConfigMap (logLevel)."""
    assert "level=DEBUG" in run_until_ready(tmp_path, component_args(command), "debug")
    assert "level=DEBUG" not in run_until_ready(tmp_path, component_args(command), None)


@pytest.mark.parametrize("command", ["control", "media"])
def test_the_global_flag_works_before_and_after_the_command(tmp_path: Path, command: str) -> None:
    args = component_args(command)
    assert "level=DEBUG" in run_until_ready(tmp_path, ["--log-level", "debug", *args], None)
    assert "level=DEBUG" in run_until_ready(tmp_path, [*args, "--log-level=DEBUG"], "info")  # the flag wins
    assert "level=DEBUG" not in run_until_ready(tmp_path, [*args, "--log-level", "warning"], "debug")
