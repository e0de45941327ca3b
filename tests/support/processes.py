"""Start, wait for and stop the real processes tests and benchmarks run (trunkline, relay, redis)."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

TRUNKLINE = str(Path(sys.executable).parent / "trunkline")


def http_ready(url: str) -> bool:
    """True when `url` answers 200 (a /readyz)."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def wait_started(
    proc: subprocess.Popen[bytes] | subprocess.Popen[str],
    ready: Callable[[], bool],
    what: str,
    log: Callable[[], str],
    timeout: float = 20.0,
) -> None:
    """Poll `ready` until it holds; fail with the log's tail if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited ({proc.returncode}):\n{log()[-3000:]}")
        if ready():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} not ready after {timeout:.0f} s:\n{log()[-3000:]}")


def stop(proc: subprocess.Popen[bytes] | subprocess.Popen[str], timeout: float = 15.0) -> int:
    """SIGTERM, then SIGKILL after `timeout` seconds; the exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
