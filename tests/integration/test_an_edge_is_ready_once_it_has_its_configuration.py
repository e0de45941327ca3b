"""An edge that takes its configuration from control is not ready (its Service sends it no calls) until
control's first snapshot is applied: an edge just started would otherwise turn every caller away as a
stranger (a rolling update, a scale-out, the real-node test's first call)."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.ports import free_port
from tests.support.processes import TRUNKLINE, http_ready, stop, wait_started

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def readyz(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_an_edge_waits_for_controls_first_snapshot(tmp_path: Path) -> None:
    control_grpc, edge_http, control_http = (f"127.0.0.1:{free_port()}" for _ in range(3))
    edge_log, control_log = tmp_path / "edge.log", tmp_path / "control.log"
    edge_cmd = [TRUNKLINE, "edge", "--sip-listen", f"127.0.0.1:{free_port()}", "--control", control_grpc,
                "--insecure-grpc", "--http-listen", edge_http]  # fmt: skip
    with edge_log.open("w") as out:
        edge = subprocess.Popen(edge_cmd, stdout=out, stderr=subprocess.STDOUT, text=True)
    control: subprocess.Popen[str] | None = None
    try:
        # Up and listening, but control is not there yet: not ready, and /readyz says why.
        deadline = time.monotonic() + 30
        while (status := readyz_or_none(f"http://{edge_http}/readyz")) is None:
            assert edge.poll() is None and time.monotonic() < deadline, edge_log.read_text()
            time.sleep(0.2)
        time.sleep(2)  # a few reconnect attempts at the absent control
        code, body = readyz(f"http://{edge_http}/readyz")
        assert code == 503 and "no configuration from control yet" in body, (code, body, status)
        with control_log.open("w") as out:
            control = subprocess.Popen(
                [TRUNKLINE, "control", "-f", str(ROOT / "examples"), "--listen", control_grpc,
                 "--insecure-grpc", "--http-listen", control_http],
                stdout=out, stderr=subprocess.STDOUT, text=True,
            )  # fmt: skip
        wait_started(edge, lambda: http_ready(f"http://{edge_http}/readyz"), "edge", edge_log.read_text, 60)
        assert "configuration applied" in edge_log.read_text()
    finally:
        stop(edge)
        if control is not None:
            stop(control)


def readyz_or_none(url: str) -> tuple[int, str] | None:
    """/readyz's answer once the ops server listens (None before)."""
    try:
        return readyz(url)
    except OSError:
        return None
