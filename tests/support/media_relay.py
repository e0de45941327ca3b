"""`trunkline media` as a real process on loopback, and RTP streams at a real-time pace through it."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.ports import free_port
from tests.support.processes import TRUNKLINE
from trunkline.media.testing import HOST, Party, recvfrom, rtp_packet

BIN = TRUNKLINE


def media_ports(count: int = 20) -> tuple[int, int]:
    """A range below the ephemeral ports (Party sockets never land in it), by pid so that parallel
    runs rarely meet."""
    low = 25000 + (os.getpid() % 200) * count
    return low, low + count - 1


@dataclass
class RelayProcess:
    workdir: Path
    args: list[str] = field(default_factory=list)
    grpc_port: int = field(default_factory=free_port)
    ports: tuple[int, int] = field(default_factory=media_ports)
    proc: subprocess.Popen[str] | None = None
    runs: int = 0

    def grpc_flags(self) -> list[str]:
        """Plaintext gRPC on loopback unless the test gives certificates."""
        return [] if any(a.startswith("--grpc-") for a in self.args) else ["--insecure-grpc"]

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"media-{self.runs}.log"

    def start(self, timeout: float = 20.0) -> RelayProcess:
        """Start (again: same arguments, same ports) and wait for its "listening" line."""
        self.runs += 1
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [BIN, "media", "--listen", self.target, "--media-listen", HOST,
             "--media-ports", f"{self.ports[0]}-{self.ports[1]}", "--workers", "1", *self.grpc_flags(),
             *self.args],
            stdout=log, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "media relay listening" in self.output():
                return self
            assert self.proc.poll() is None, self.output()
            time.sleep(0.02)
        raise AssertionError(f"trunkline media did not start: {self.output()}")

    def output(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        """SIGTERM; the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


class Stream:
    """One party sending 20 ms RTP packets at 50/s to one relay port, and what another party gets."""

    def __init__(self, sender: Party, port: int, receiver: Party, ssrc: int) -> None:
        self.sender, self.port, self.receiver, self.ssrc = sender, port, receiver, ssrc
        self.sent: dict[int, float] = {}  # seq -> when sent (monotonic)
        self.received: list[tuple[int, float, tuple[str, int]]] = []  # seq, when, from where
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._send()), asyncio.create_task(self._receive())]

    async def stop(self) -> None:
        self._tasks[0].cancel()
        await asyncio.sleep(0.3)  # what is in flight arrives
        self._tasks[1].cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _send(self) -> None:
        start = time.monotonic()
        for seq in range(65536):
            await asyncio.sleep(max(0.0, start + seq * 0.02 - time.monotonic()))
            self.sent[seq] = time.monotonic()
            self.sender.send(rtp_packet(seq, seq * 160, self.ssrc, bytes(160)), self.port)

    async def _receive(self) -> None:
        while True:
            data, source = await recvfrom(self.receiver.sock, 2048)
            self.received.append((int.from_bytes(data[2:4], "big"), time.monotonic(), source))

    def longest_gap(self) -> float:
        """The longest time without a packet received, in seconds."""
        times = [when for _, when, _ in self.received]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)

    def missing_sent_after(self, moment: float) -> list[int]:
        got = {seq for seq, _, _ in self.received}
        return sorted(seq for seq, when in self.sent.items() if when >= moment and seq not in got)
