"""`trunkline up` as a user runs it: a real process, real sockets, real signals."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_http(proc: subprocess.Popen[str], port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"trunkline up exited early: {proc.communicate()}"
        try:
            if http_get(port, "/healthz")[0] == 200:
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("trunkline up did not answer /healthz")


@pytest.fixture
def up(trunkline_bin: str) -> Iterator[tuple[subprocess.Popen[str], int, int]]:
    sip, http = free_port(), free_port()
    proc = subprocess.Popen(
        [trunkline_bin, "up", "-f", str(ROOT / "examples"), "--sip-listen", f"127.0.0.1:{sip}",
         "--http-listen", f"127.0.0.1:{http}", "--grace", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_http(proc, http)
        yield proc, sip, http
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def run_up(trunkline_bin: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([trunkline_bin, "up", *args], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_up_serves_health_readiness_metrics_and_exits_cleanly(
    up: tuple[subprocess.Popen[str], int, int], sig: signal.Signals
) -> None:
    proc, sip, http = up
    assert http_get(http, "/healthz") == (200, "ok\n")
    status, body = http_get(http, "/readyz")
    assert status == 200 and "control: ready" in body and "edge: ready" in body
    status, metrics = http_get(http, "/metrics")
    assert status == 200
    assert 'trunkline_component_ready{component="edge"} 1.0' in metrics
    # The SIP port is held on both UDP and TCP.
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as probe, pytest.raises(OSError):
            probe.bind(("127.0.0.1", sip))
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "signal received" in err and "stopped" in err
    assert "Traceback" not in err


def test_invalid_manifest_refuses_to_start_and_binds_nothing(trunkline_bin: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: trunkline.io/v1alpha1\nkind: DID\nmetadata: {name: x}\n"
        "spec: {number: '555-0100', trunkRef: acme}\n"
    )
    http = free_port()
    result = run_up(
        trunkline_bin, "-f", str(ROOT / "examples"), "-f", str(bad), "--http-listen", f"127.0.0.1:{http}"
    )
    assert result.returncode == 1
    assert f"{bad} (document 1): spec.number: String should match pattern" in result.stdout
    assert "nothing started" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", http))  # still free


@pytest.mark.parametrize("kind", [socket.SOCK_DGRAM, socket.SOCK_STREAM])
def test_port_in_use_is_one_clear_line(trunkline_bin: str, kind: socket.SocketKind) -> None:
    with socket.socket(socket.AF_INET, kind) as squatter:
        squatter.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            squatter.listen()
        port = squatter.getsockname()[1]
        result = run_up(trunkline_bin, "-f", str(ROOT / "examples"), "--sip-listen", f"127.0.0.1:{port}",
                        "--http-listen", "127.0.0.1:0")  # fmt: skip
    proto = "udp" if kind == socket.SOCK_DGRAM else "tcp"
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"trunkline up: --sip-listen: cannot listen on 127.0.0.1:{port} ({proto}): address already in use"
    ]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--tls-listen", "127.0.0.1:0"], "--tls-listen needs --tls-cert and --tls-key"),
        (
            [
                "--tls-listen",
                "127.0.0.1:0",
                "--tls-cert",
                "/nonexistent.pem",
                "--tls-key",
                "/nonexistent.key",
            ],
            "--tls-cert: cannot read /nonexistent.pem: no such file",
        ),
        (["--sip-listen", "127.0.0.1:99999"], "--sip-listen: port '99999' is not a number from 0 to 65535"),
        (["--media-ports", "30000-20000"], "--media-ports: '30000-20000' must satisfy"),
        (["--media-listen", "not-an-ip"], "--media-listen: 'not-an-ip' is not an IP address"),
        (["--media-listen", "192.0.2.1"], "--media-listen: cannot listen on 192.0.2.1:0 (udp)"),
    ],
)
def test_bad_flags_are_one_clear_line(trunkline_bin: str, args: list[str], expected: str) -> None:
    result = run_up(trunkline_bin, "-f", str(ROOT / "examples"), "--sip-listen", "127.0.0.1:0",
                    "--http-listen", "127.0.0.1:0", *args)  # fmt: skip
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert expected in line


def test_unreadable_certificate(trunkline_bin: str, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    result = run_up(trunkline_bin, "-f", str(ROOT / "examples"), "--sip-listen", "127.0.0.1:0",
                    "--http-listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0",
                    "--tls-cert", str(junk), "--tls-key", str(junk))  # fmt: skip
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert f"--tls-cert {junk} / --tls-key {junk}: not a usable certificate and key" in line


def test_unknown_flag(trunkline_bin: str) -> None:
    result = run_up(trunkline_bin, "-f", "examples", "--bogus")
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "unrecognized arguments: --bogus" in line
