"""Free loopback ports for tests and benchmarks."""

from __future__ import annotations

import itertools
import random
import socket

# Below the kernel's ephemeral range (32768-60999 here) and the media ranges tests give relays
# (20000 and up): a port the kernel hands to some client socket between our check and the listener's
# bind made "address already in use" flakes when many tests ran at once.
LISTEN_PORTS = range(10000, 20000)
# Handed out in turn from a random start: a port is not handed out twice in one process until the
# range wrapped (a random pick could repeat one not bound yet: an edge got the same port for SIP and
# HTTP, one in 10,000 calls), and processes that each start somewhere else rarely meet.
_turn = itertools.count(random.randrange(len(LISTEN_PORTS)))


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP right now on `host` (SIP listeners open both)."""
    del kind  # both kinds are checked either way
    for _ in range(len(LISTEN_PORTS)):
        port = LISTEN_PORTS[next(_turn) % len(LISTEN_PORTS)]
        if _free(socket.SOCK_STREAM, host, port) and _free(socket.SOCK_DGRAM, host, port):
            return port
    raise RuntimeError("no free port")


def _free(kind: socket.SocketKind, host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True
