"""What one call costs Redis, watched with MONITOR on a real redis-server: an outbound call with digest
auth writes in at most 4 round trips (nonce use, admission, the answered call, its end with its CDR)."""

from __future__ import annotations

import re
import socket
import threading
import time
from pathlib import Path

from tests.support import sipp
from tests.support.ports import free_port
from tests.support.redis_server import RedisProcess
from tests.support.trunkline_up import Up, manifests

READS = {"GET", "MGET", "HGETALL", "HMGET", "ZCOUNT", "PING", "SCRIPT", "CLIENT", "INFO", "ZCARD", "ZSCORE"}


class Monitor:
    """A MONITOR connection: every command Redis runs, as (client, command, arguments)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(b"MONITOR\r\n")
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        buffer = b""
        while chunk := self.sock.recv(65536):
            buffer += chunk
            *complete, buffer = buffer.split(b"\r\n")
            self.lines += [line.decode(errors="replace") for line in complete]

    def commands(self) -> list[tuple[str, list[str]]]:
        found = []
        for line in self.lines:
            match = re.match(r"\+[\d.]+ \[\d+ ([^\]]+)\] (.*)", line)
            if match:
                found.append((match.group(1), re.findall(r'"((?:[^"\\]|\\.)*)"', match.group(2))))
        return found

    def close(self) -> None:
        self.sock.close()


def round_trips(commands: list[tuple[str, list[str]]]) -> tuple[list[str], list[str]]:
    """(writes, reads): one entry per round trip; a MULTI..EXEC block is one round trip."""
    writes: list[str] = []
    reads: list[str] = []
    in_block: set[str] = set()
    for client, args in commands:
        name = args[0].upper()
        if client == "lua" or "trunkline:owners" in args:
            continue  # what a script runs is in its one round trip; the keep-alive is not this call's
        if name == "MULTI":
            in_block.add(client)
            writes.append("MULTI")
        elif name == "EXEC":
            in_block.discard(client)
        elif client not in in_block:
            (reads if name in READS else writes).append(" ".join(args[:1] + args[3:4]))
    return writes, reads


def test_an_outbound_call_with_digest_auth_writes_in_four_round_trips(
    redis: RedisProcess, tmp_path: Path
) -> None:
    carrier_port = free_port()
    edge = Up(tmp_path / "edge", manifests(carrier_port, free_port()), ["--redis", redis.url], command="edge")
    edge.start()
    carrier = sipp.uas(tmp_path / "carrier", "127.0.0.1", carrier_port)
    sipp.uac(tmp_path / "warm", edge.sip, "127.0.0.2", "+14155551234")  # scripts loaded, connections made
    assert len(edge.wait_cdrs(1)) == 1  # its end (after the BYE's 200) is not counted below
    monitor = Monitor(redis.port)
    try:
        result = sipp.uac(tmp_path / "pbx", edge.sip, "127.0.0.3", "+14155551234", "-au", "acme",
                          "-ap", "s3cret-acme")  # fmt: skip
        edge.wait_cdrs(2)
        time.sleep(0.3)
    finally:
        monitor.close()
        sipp.stop(carrier)
        edge.stop()
    assert result.ok, result.output + edge.output()
    writes, reads = round_trips(monitor.commands())
    print(f"writes: {writes}\nreads: {reads}")
    # The attempt's figures for the gateway's ASR and post-dial delay: one write off the call's path
    # (edge/gateway_figures.py: not awaited by the call).
    figures = [w for w in writes if "upkeep:figures:" in w]
    assert figures == ["EVALSHA trunkline:upkeep:figures:default/pstn"], writes
    writes = [w for w in writes if w not in figures]
    # The nonce's first use (SET NX), admission (rate, channel, record: one script), the answered call
    # (one script), its fenced end with its CDR (one script).
    assert writes == [
        "SET NX",
        "EVALSHA trunkline:cps:default/acme",
        "EVALSHA trunkline:channels:default/acme",
        "EVALSHA trunkline:call:" + writes[-1].rpartition(":")[2],
    ]
    # The failed authentications of (source, username) and of the username, one round trip at each
    # of the two INVITEs; the call's epoch at the BYE (does this edge still hold the call?).
    assert reads == ["MGET", "MGET", "HMGET owner"]  # HMGET call epoch owner
