"""Free loopback ports for tests and benchmarks."""

from __future__ import annotations

import random
import socket

# Below the kernel's ephemeral range (32768-60999 here) and the media ranges tests give relays
# (20000 and up): a port the kernel hands to some client socket between our check and the listener's
# bind made "address already in use" flakes when many tests ran at once.
LISTEN_PORTS = range(10000, 20000)


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP right now on `host` (SIP listeners open both)."""
    del kind  # both kinds are checked either way
    for _ in range(200):
        port = random.choice(LISTEN_PORTS)
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
