"""`trunkline media --http-listen`: /healthz, /readyz (engines up, gRPC serving, not draining) and
/metrics of a real relay process."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
import urllib.error
import urllib.request

import grpc

from tests.support.media_relay import BIN, RelayProcess
from tests.support.ports import free_port
from trunkline.media.records import REPORT_INTERVAL
from trunkline.media.testing import Party, leg, rtp_packet
from trunkline.media.v1 import media_pb2, media_pb2_grpc


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metric(text: str, name: str) -> float:
    line = next(line for line in text.splitlines() if line.startswith(name + " "))
    return float(line.split()[1])


async def test_probes_and_metrics_of_a_relay_process(tmp_path):
    http_port = free_port()
    relay = RelayProcess(tmp_path, ["--http-listen", f"127.0.0.1:{http_port}"]).start()
    a, b = Party(), Party()
    try:
        assert get(http_port, "/healthz") == (200, "ok\n")
        assert get(http_port, "/readyz") == (200, "media: ready\n")
        status, text = get(http_port, "/metrics")
        assert status == 200 and metric(text, "trunkline_media_sessions") == 0
        assert metric(text, 'trunkline_component_ready{component="media"}') == 1
        assert metric(text, "trunkline_media_session_capacity") == 5  # 20 ports: 10 pairs, 2 per session

        async with grpc.aio.insecure_channel(relay.target) as channel:
            stub = media_pb2_grpc.MediaRelayStub(channel)
            created = await stub.CreateSession(
                media_pb2.CreateSessionRequest(session_id="probe", leg_a=leg(a), leg_b=leg(b)), timeout=5
            )
            for seq in range(10):
                a.send(rtp_packet(seq, seq * 160, 1, b"x" * 160), created.leg_a.rtp_port)
            assert len(await b.recv_all(10)) == 10
            a.send(b"junk", created.leg_a.rtp_port)
            _, text = get(http_port, "/metrics")
            assert metric(text, "trunkline_media_sessions") == 1
            assert metric(text, 'trunkline_component_busy{component="media"}') == 1
            # Packet totals come with the engines' next report.
            deadline = time.monotonic() + REPORT_INTERVAL + 5
            while metric(text, "trunkline_media_packets_relayed_total") < 10 and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                _, text = get(http_port, "/metrics")
            assert metric(text, "trunkline_media_packets_relayed_total") == 10
            assert metric(text, 'trunkline_media_packets_dropped_total{reason="malformed"}') == 1
            assert metric(text, 'trunkline_media_packets_dropped_total{reason="source"}') == 0

            await stub.Drain(media_pb2.DrainRequest(), timeout=5)
            status, text = get(http_port, "/readyz")
            assert status == 503 and "media: not ready" in text
            assert get(http_port, "/healthz")[0] == 200  # alive: its sessions run on
        assert relay.stop() == 0
    finally:
        if relay.proc and relay.proc.poll() is None:
            relay.proc.kill()
        a.close()
        b.close()


def test_an_http_address_it_cannot_use_is_refused_at_start():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = subprocess.run(
            [BIN, "media", "--listen", "127.0.0.1:0", "--media-ports", "40000-40019", "--workers", "1",
             "--insecure-grpc", "--http-listen", f"127.0.0.1:{taken.getsockname()[1]}"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    assert result.returncode == 1 and "--http-listen" in result.stderr, result.stderr
