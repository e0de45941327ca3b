#!/usr/bin/env python3
"""Media relay benchmark: trunkline's relay against rtpengine (userspace), same load, same run.

For each relay: (1) flood: packets/s relayed by one relay process with 1,000 calls; (2) G.711 calls
(50 packets/s each way) stepped up until loss reaches 0.1%; (3) added one-way latency p50/p99 at
70% load (of the 1,000-call target and of the largest lossless step), minus the same path without
relay. See bench/README-media.md.

    .venv/bin/python -m bench.media_relay [--quick] [--no-rtpengine]
    .venv/bin/python -m bench.media_relay --cpu-flood RUNS   # relayed packets per CPU-second only
    .venv/bin/python -m bench.media_relay --per-packet ROUNDS  # CPU time per packet, in-process
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

from tests.support.ports import free_port

HOST = "127.0.0.1"
OURS_PORTS = (20000, 29999)
RTPENGINE_PORTS = (30000, 39999)
TARGET_CALLS = 1000  # the capacity target: 1,000 G.711 calls (100,000 packets/s) at zero loss
# Latency runs: several per load, because the p99 of one run swings with how the VM schedules the
# relay (episodes where it does not run for 1-5 ms while packets queue); the median run is reported
# next to the best and the worst.
LATENCY_RUNS = 5
LATENCY_SECONDS = 4.0  # ~28,000 samples per run at 700 calls
PACKET = 172  # 12-byte RTP header + 160 bytes of PCMU: 20 ms of G.711
_HEADER = struct.Struct("!BBHII")
_STAMP = struct.Struct("!q")


# ---- load generator: one process that sends for both parties and receives what the relay sends ----

FLOOD_CHUNK = 256  # packets sent flat out between two looks at the receive side


def generator(socks: list[socket.socket], targets: list[tuple[int, int]], rate: float | None, seconds: float,
              start: float, conn: Connection) -> None:  # fmt: skip
    """Send PCMU-sized RTP to `targets` (socket index, port) round-robin, at `rate` packets/s or flat
    out, and count what comes back; sample one-way latency from the send time in each payload.

    One busy loop does both, on its own core: it sends what is due (a few packets per turn at call
    rates, so arrivals are spread as real calls' are, not bunched by a sleep) and then reads whatever
    arrived. A separate receiver process sharing the core waited for the sender's time slice, and
    its scheduling delays dominated the p99 being measured; here a packet waits at most one turn."""
    poller = select.epoll()
    for sock in socks:
        sock.setblocking(False)
        poller.register(sock.fileno(), select.EPOLLIN)
    receive = {sock.fileno(): sock.recv_into for sock in socks}
    sendto = [s.sendto for s in socks]
    payload, buf = bytearray(PACKET), bytearray(2048)
    seqs = [0] * len(targets)
    sent, received, count = 0, 0, len(targets)
    latencies: list[int] = []
    clock, clock_ns, poll = time.perf_counter, time.perf_counter_ns, poller.poll
    while clock() < start:
        pass
    end = start + seconds
    drain_until = end + 0.5  # what is still in flight when sending stops
    while (now := clock()) < drain_until:
        if now < end:
            due = FLOOD_CHUNK if rate is None else int((now - start) * rate) - sent
            for _ in range(min(due, 4096)):
                index = sent % count
                sock, port = targets[index]
                seqs[index] += 1
                _HEADER.pack_into(payload, 0, 0x80, 0, seqs[index] & 0xFFFF, seqs[index] * 160, index + 1)
                _STAMP.pack_into(payload, 12, clock_ns())
                try:
                    sendto[sock](payload, (HOST, port))
                except OSError:  # ENOBUFS under flood: the packet is lost, and counted as such
                    pass
                sent += 1
        for fd, _ in poll(0 if now < end else 0.05):
            recv_into = receive[fd]
            while True:
                try:
                    size = recv_into(buf)
                except BlockingIOError:
                    break
                received += 1
                if size >= 20 and received % 8 == 0:
                    latencies.append(clock_ns() - _STAMP.unpack_from(buf, 12)[0])
    conn.send((sent, received, latencies))


@dataclass
class Result:
    sent: int
    received: int
    seconds: float
    latencies_ns: list[int]

    @property
    def loss(self) -> float:
        return max(0.0, 1 - self.received / self.sent) if self.sent else 0.0

    @property
    def rate(self) -> float:
        return self.received / self.seconds

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies_ns)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p))] / 1000 if ordered else float("nan")


def drain(parties: list[socket.socket]) -> None:
    """Throw away what an earlier run left in the parties' buffers (it would count twice, and late)."""
    time.sleep(0.2)
    for sock in parties:
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                sock.recv(2048)


# With --pin: the load generator's processes run on this CPU, the relay's packet path on RELAY_CPU.
GENERATOR_CPU: set[int] | None = None
RELAY_CPU: set[int] | None = None


def pin(pid: int, cpus: set[int] | None) -> None:
    """Every thread of `pid` onto `cpus` (threads keep the mask they had when they were created)."""
    if cpus is None:
        return
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(task.name), cpus)


def run_load(
    parties: list[socket.socket], targets: list[tuple[int, int]], rate: float | None, seconds: float
) -> Result:
    drain(parties)
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    start = time.perf_counter() + 1.0  # the process is up by then
    process = context.Process(target=generator, args=(parties, targets, rate, seconds, start, theirs))
    process.start()
    assert process.pid is not None
    pin(process.pid, GENERATOR_CPU)
    sent, received, latencies = ours.recv()
    process.join()
    return Result(sent, received, seconds, latencies)


# ---- the relays under test ----


class Relay(Protocol):
    name: str

    async def start(self) -> None: ...
    async def call(self, index: int, port_a: int, port_b: int) -> tuple[int, int]: ...
    async def hangup_all(self) -> None: ...
    async def stop(self) -> None: ...


class Ours:
    name = "trunkline"

    def __init__(self) -> None:
        from trunkline.media.server import MediaServer

        self.server = MediaServer("127.0.0.1:0", HOST, OURS_PORTS, workers=1)
        self.sessions: list[str] = []

    async def start(self) -> None:
        import grpc

        from trunkline.media.v1 import media_pb2_grpc

        await self.server.start()
        for pid in self.server.pool.engine_pids():
            pin(pid, RELAY_CPU)
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.server.port}")
        self.stub = media_pb2_grpc.MediaRelayStub(self.channel)

    async def call(self, index: int, port_a: int, port_b: int) -> tuple[int, int]:
        from trunkline.media.v1 import media_pb2

        session_id = f"bench-{index}-{time.monotonic_ns()}"
        created = await self.stub.CreateSession(media_pb2.CreateSessionRequest(
            session_id=session_id,
            leg_a=media_pb2.LegSpec(remote_address=HOST, remote_rtp_port=port_a),
            leg_b=media_pb2.LegSpec(remote_address=HOST, remote_rtp_port=port_b),
        ))  # fmt: skip
        self.sessions.append(session_id)
        return created.leg_a.rtp_port, created.leg_b.rtp_port

    async def hangup_all(self) -> None:
        from trunkline.media.v1 import media_pb2

        for session_id in self.sessions:
            await self.stub.DeleteSession(media_pb2.DeleteSessionRequest(session_id=session_id))
        self.sessions.clear()

    async def stop(self) -> None:
        await self.channel.close()
        await self.server.stop(0)


def bencode(value: Any) -> bytes:
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list):
        return b"l" + b"".join(bencode(v) for v in value) + b"e"
    return b"d" + b"".join(bencode(k) + bencode(v) for k, v in sorted(value.items())) + b"e"


def bdecode(data: bytes, at: int = 0) -> tuple[Any, int]:
    kind = data[at : at + 1]
    if kind == b"i":
        end = data.index(b"e", at)
        return int(data[at + 1 : end]), end + 1
    if kind in (b"l", b"d"):
        items, at = [], at + 1
        while data[at : at + 1] != b"e":
            item, at = bdecode(data, at)
            items.append(item)
        return (dict(zip(items[::2], items[1::2], strict=True)) if kind == b"d" else items), at + 1
    colon = data.index(b":", at)
    length = int(data[at:colon])
    return data[colon + 1 : colon + 1 + length], colon + 1 + length


def sdp(port: int) -> str:
    return (f"v=0\r\no=- 1 1 IN IP4 {HOST}\r\ns=-\r\nc=IN IP4 {HOST}\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n")  # fmt: skip


class RtpEngine:
    """rtpengine in userspace (--table=-1), one worker thread, driven over its ng protocol."""

    name = "rtpengine"

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.settimeout(2)
        self.ng_port = free_port(socket.SOCK_DGRAM)
        self.calls: list[str] = []
        self.cookie = 0

    async def start(self) -> None:
        self.proc = subprocess.Popen(
            ["rtpengine", "--config-file=none", "--table=-1", f"--interface={HOST}",
             f"--listen-ng={HOST}:{self.ng_port}", "--foreground", "--log-stderr", "--log-level=3",
             "--num-threads=1", f"--port-min={RTPENGINE_PORTS[0]}", f"--port-max={RTPENGINE_PORTS[1]}",
             "--timeout=60", "--delete-delay=0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(50):
            with contextlib.suppress(OSError, TimeoutError):
                if self.ng({"command": "ping"}).get(b"result") == b"pong":
                    pin(self.proc.pid, RELAY_CPU)
                    return
            await asyncio.sleep(0.1)
        raise RuntimeError("rtpengine did not answer ping")

    def ng(self, command: dict[str, Any]) -> dict[bytes, Any]:
        self.cookie += 1
        cookie = str(self.cookie).encode()
        self.sock.sendto(cookie + b" " + bencode(command), (HOST, self.ng_port))
        while True:
            data = self.sock.recv(65536)
            if data.startswith(cookie + b" "):
                answer: dict[bytes, Any] = bdecode(data[len(cookie) + 1 :])[0]
                if answer.get(b"result") not in (b"ok", b"pong"):
                    raise RuntimeError(f"rtpengine: {answer}")
                return answer

    @staticmethod
    def media_port(answer: dict[bytes, Any]) -> int:
        line = next(x for x in answer[b"sdp"].decode().splitlines() if x.startswith("m=audio"))
        return int(line.split()[1])

    async def call(self, index: int, port_a: int, port_b: int) -> tuple[int, int]:
        call_id = f"bench-{index}-{time.monotonic_ns()}"
        offer = self.ng({"command": "offer", "call-id": call_id, "from-tag": "a", "sdp": sdp(port_a)})
        answer = self.ng(
            {"command": "answer", "call-id": call_id, "from-tag": "a", "to-tag": "b", "sdp": sdp(port_b)}
        )
        self.calls.append(call_id)
        # The offer's SDP goes to B (so B sends to that port); the answer's SDP goes to A.
        return self.media_port(answer), self.media_port(offer)

    async def hangup_all(self) -> None:
        for call_id in self.calls:
            self.ng({"command": "delete", "call-id": call_id})
        self.calls.clear()

    async def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)
        self.sock.close()


# ---- the measurements ----


async def setup_calls(relay: Relay, parties: list[socket.socket], calls: int) -> list[tuple[int, int]]:
    """`calls` sessions between the two party sockets; targets for both directions."""
    await relay.hangup_all()
    port_a, port_b = (p.getsockname()[1] for p in parties)
    targets: list[tuple[int, int]] = []
    for index in range(calls):
        relay_a, relay_b = await relay.call(index, port_a, port_b)
        targets += [(0, relay_a), (1, relay_b)]
    return targets


async def measure(relay: Relay, steps: list[int], seconds: float) -> dict[str, Any]:
    parties = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    for sock in parties:
        # Default buffers on purpose: a big receive buffer turns the generator's own scheduling delays
        # into a standing queue (tens of ms "latency") instead of visible loss.
        sock.bind((HOST, 0))
    figures: dict[str, Any] = {}
    await relay.start()
    try:
        targets = await setup_calls(relay, parties, 1000)
        flood = run_load(parties, targets, None, seconds)
        figures["flood"] = flood
        print(f"  [{relay.name}] flood, 1000 calls: sent {flood.sent / seconds:,.0f}/s, relayed "
              f"{flood.rate:,.0f}/s, loss {flood.loss:.2%}", flush=True)  # fmt: skip
        best = 0
        for calls in steps:
            targets = await setup_calls(relay, parties, calls)
            result = run_load(parties, targets, calls * 100, seconds)
            # The generator may fall short of the rate on a busy machine: then the step does not count.
            ok = result.loss < 0.001 and result.sent >= 0.98 * calls * 100 * seconds
            print(f"  [{relay.name}] {calls:5d} calls ({calls * 100:,} pkt/s): "
                  f"sent {result.sent / seconds:,.0f}/s, "
                  f"relayed {result.rate:,.0f}/s, "
                  f"loss {result.loss:.3%}, latency p50 {result.percentile(0.5):,.0f} us "
                  f"p99 {result.percentile(0.99):,.0f} us {'ok' if ok else 'OVER'}", flush=True)  # fmt: skip
            if not ok:
                break
            best = calls
        figures["calls"] = best
        # Latency at 70% load: of the target capacity (1,000 calls), and of the largest lossless step.
        figures["latency"] = {}
        for calls in sorted({int(TARGET_CALLS * 0.7), max(int(best * 0.7), 10)}):
            targets = await setup_calls(relay, parties, calls)
            figures["latency"][calls] = [
                run_load(parties, targets, calls * 100, LATENCY_SECONDS) for _ in range(LATENCY_RUNS)
            ]
    finally:
        with contextlib.suppress(Exception):
            await relay.hangup_all()
        await relay.stop()
        for sock in parties:
            sock.close()
    return figures


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes so far (/proc/PID/stat fields 14 and 15)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def settle(pids: list[int], limit: float = 30.0) -> None:
    """Until the engines are idle: after a flood they still relay what filled their sockets' buffers
    (up to ~300 packets per socket) for seconds; that CPU time must not count in the next run."""
    deadline = time.monotonic() + limit
    last = cpu_seconds(pids)
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = cpu_seconds(pids)
        if now - last < 0.01:
            return
        last = now


async def cpu_flood(runs: int, seconds: float) -> int:
    """Flood 1,000 calls `runs` times; per run, relayed packets per CPU-second of the engine process.
    Throughput alone swings with what else the (shared) machine runs; the engine's own CPU time says
    what a packet costs it. Run it against two checkouts in turn to compare them (README-media.md)."""
    relay = Ours()
    parties = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    for sock in parties:
        sock.bind((HOST, 0))
    await relay.start()
    try:
        targets = await setup_calls(relay, parties, 1000)
        pids = relay.server.pool.engine_pids()
        for run in range(runs):
            settle(pids)
            before = cpu_seconds(pids)
            result = run_load(parties, targets, None, seconds)
            used = cpu_seconds(pids) - before
            per_cpu = result.received / max(used, 1e-9)
            print(f"  run {run + 1}: relayed {result.rate:,.0f}/s (loss {result.loss:.1%}), engine CPU "
                  f"{used:.2f} s, {per_cpu:,.0f} relayed per CPU-second", flush=True)  # fmt: skip
    finally:
        await relay.hangup_all()
        await relay.stop()
        for sock in parties:
            sock.close()
    return 0


def per_packet(rounds: int, batch: int = 200) -> int:
    """CPU time of the engine's packet path per packet, in this thread (no generator process, no
    scheduling): `batch` packets are queued on a leg's socket, then `Engine.relay` handles them one by
    one under `time.thread_time_ns`. Steady state (the source is the lock), and a stranger's packets
    (dropped by source); with batching on, steady state through `Engine.relay_batch` too (the engine
    takes that path for sockets with packets queued). Median of `rounds` batches; compare two
    checkouts with it (README-media.md)."""
    import statistics

    from trunkline.media.engine import Engine, LegConfig

    low = 41000 + (os.getpid() % 50) * 20
    engine = Engine(HOST, low, low + 19)
    a, b, stranger = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3))
    for sock in (a, b, stranger):
        sock.bind((HOST, 0))
        sock.setblocking(False)
    engine.create("bench", (LegConfig(a.getsockname(), None), LegConfig(b.getsockname(), None)), 0)
    flow = engine.sessions["bench"].legs[0].rtp
    target = flow.sock.getsockname()
    payload = b"x" * 160
    figures = {}
    try:
        cases = [("steady", a, engine.relay), ("stranger", stranger, engine.relay)]
        if engine.batch:  # the packets queued on the socket, read `engine.batch` per recvmmsg
            cases.append((f"steady, recvmmsg of {engine.batch}", a, engine.relay_batch))
        for name, sender, relay in cases:
            costs = []
            seq = 0
            for _ in range(rounds):
                for _ in range(batch):
                    seq += 1
                    sender.sendto(_HEADER.pack(0x80, 0, seq & 0xFFFF, seq * 160, 1) + payload, target)
                done = engine.relayed_packets + engine.dropped_source + batch
                began = time.thread_time_ns()
                for _ in range(batch):
                    relay(flow, 0.0)
                    if engine.relayed_packets + engine.dropped_source >= done:
                        break
                costs.append((time.thread_time_ns() - began) / batch)
                drain([b])
            figures[name] = statistics.median(costs)
            print(f"  {name}: {figures[name]:,.0f} ns of CPU per packet (median of {rounds} batches "
                  f"of {batch}; min {min(costs):,.0f}, max {max(costs):,.0f})", flush=True)  # fmt: skip
    finally:
        engine.stop()
        for sock in (a, b, stranger):
            sock.close()
    return 0


def median_run(runs: Iterable[Result]) -> Result:
    """The run with the median p99."""
    ordered = sorted(runs, key=lambda run: run.percentile(0.99))
    return ordered[len(ordered) // 2]


def baseline(calls: int, seconds: float) -> Result:
    """The load generator without relay (each party sends to the other directly): its own latency."""
    parties = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    for sock in parties:
        sock.bind((HOST, 0))
    ports = [p.getsockname()[1] for p in parties]
    try:
        return run_load(parties, [(0, ports[1]), (1, ports[0])] * calls, calls * 100, seconds)
    finally:
        for sock in parties:
            sock.close()


async def main_async(args: argparse.Namespace) -> int:
    steps = [100, 250, 500, 1000, 1250, 1500, 2000] if not args.quick else [100, 500, 1000]
    seconds = 2.0 if args.quick else 3.0
    relays: list[Relay] = [Ours()]
    if not args.no_rtpengine:
        if shutil.which("rtpengine"):
            relays.append(RtpEngine())
        else:
            print("rtpengine not found: measuring trunkline only", file=sys.stderr)
    results = {}
    began = time.monotonic()
    for relay in relays:
        print(f"{relay.name}:", flush=True)
        results[relay.name] = await measure(relay, steps, seconds)
    print(f"\nsummary ({os.cpu_count()} cores, {time.monotonic() - began:.0f} s):")
    for name, figures in results.items():
        print(f"  {name:10s} flood {figures['flood'].rate:>9,.0f} pkt/s (loss {figures['flood'].loss:.2%}); "
              f"calls <0.1% loss: {figures['calls']}")  # fmt: skip
        for calls, runs in figures["latency"].items():
            base = median_run(baseline(calls, LATENCY_SECONDS) for _ in range(LATENCY_RUNS))
            lat = median_run(runs)
            best = figures["calls"]
            load = f"{calls / TARGET_CALLS:.0%} of {TARGET_CALLS}, {calls / max(best, 1):.0%} of {best}"
            p99s = ", ".join(f"{run.percentile(0.99):,.0f}" for run in runs)
            print(f"  {name:10s}   latency at {calls} calls ({load}), median of {LATENCY_RUNS} runs: "
                  f"p50 {lat.percentile(0.5):.0f} us, p99 {lat.percentile(0.99):.0f} us "
                  f"(each run's p99: {p99s} us; generator alone p50 {base.percentile(0.5):.0f} us, "
                  f"p99 {base.percentile(0.99):.0f} us; added p50 "
                  f"{lat.percentile(0.5) - base.percentile(0.5):.0f} us, "
                  f"p99 {lat.percentile(0.99) - base.percentile(0.99):.0f} us)")  # fmt: skip
    if "rtpengine" in results:
        ours, theirs = results["trunkline"], results["rtpengine"]
        print(f"  ratio trunkline/rtpengine: flood {ours['flood'].rate / theirs['flood'].rate:.2f}, "
              f"calls {ours['calls'] / max(theirs['calls'], 1):.2f}")  # fmt: skip
    return 0


def main() -> int:
    global OURS_PORTS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter steps")
    parser.add_argument("--no-rtpengine", action="store_true", help="measure trunkline only")
    parser.add_argument("--pin", action="store_true", help="relay on CPU 1, load generator on CPU 0")
    parser.add_argument("--cpu-flood", type=int, metavar="RUNS", help="only: relayed packets per CPU-second")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of a --cpu-flood run")
    parser.add_argument(
        "--per-packet", type=int, metavar="ROUNDS", help="only: CPU time per packet, in-process"
    )
    parser.add_argument(
        "--ports",
        metavar="LOW-HIGH",
        help=f"trunkline's media ports (default {OURS_PORTS[0]}-{OURS_PORTS[1]}; another run may hold them)",
    )
    args = parser.parse_args()
    if args.ports:
        low, _, high = args.ports.partition("-")
        OURS_PORTS = (int(low), int(high))
    if args.pin:
        global GENERATOR_CPU, RELAY_CPU
        GENERATOR_CPU, RELAY_CPU = {0}, {1}
        pin(os.getpid(), GENERATOR_CPU)  # this process (gRPC, ng control) stays off the relay's core too
    if args.per_packet:
        return per_packet(args.per_packet)
    if args.cpu_flood:
        return asyncio.run(cpu_flood(args.cpu_flood, args.seconds))
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
