"""Free loopback ports for tests and benchmarks."""

from __future__ import annotations

import socket


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP right now on `host` (SIP listeners open both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as a:
            a.bind((host, 0))
            port = int(a.getsockname()[1])
            other = socket.SOCK_DGRAM if kind == socket.SOCK_STREAM else socket.SOCK_STREAM
            with socket.socket(socket.AF_INET, other) as b:
                try:
                    b.bind((host, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")
