"""A real redis-server (or redis-sentinel) process on a free loopback port, for one test or session."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.ports import free_port


@dataclass
class RedisProcess:
    port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    extra: list[str] = field(default_factory=list)
    sentinel: bool = False
    password: str | None = None  # requirepass
    tls: tuple[Path, Path] | None = None  # (cert, key): TLS only on `port`, no plaintext port

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProcess:
        binary = shutil.which("redis-sentinel" if self.sentinel else "redis-server")
        assert binary, "redis-server is not installed (scripts/test.sh installs it)"
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / ("sentinel.conf" if self.sentinel else "redis.conf")
        lines = [f"port {self.port}", "bind 127.0.0.1", f"dir {self.workdir}", "daemonize no", *self.extra]
        if self.password:
            lines.append(f"requirepass {self.password}")
        if self.tls:  # clients authenticate with the password, not with a certificate
            cert, key = self.tls
            lines[0] = "port 0"
            lines += [f"tls-port {self.port}", f"tls-cert-file {cert}", f"tls-key-file {key}",
                      f"tls-ca-cert-file {cert}", "tls-auth-clients no"]  # fmt: skip
        if not self.sentinel:
            lines += ["save ''", "appendonly no"]
        conf.write_text("\n".join(lines) + "\n")
        log = (self.workdir / "log.txt").open("wb")
        self.proc = subprocess.Popen([binary, str(conf)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{binary} exited: {(self.workdir / 'log.txt').read_text()[-2000:]}")
            if self.ping():
                return self
            time.sleep(0.05)
        raise RuntimeError(f"{binary} on port {self.port} did not answer PING")

    def ping(self) -> bool:
        """The server answers (with a password set: that it wants one)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as plain:
                sock = plain
                if self.tls:
                    sock = ssl.create_default_context(cafile=str(self.tls[0])).wrap_socket(
                        plain, server_hostname="127.0.0.1"
                    )
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def stop(self, kill: bool = False) -> None:
        if self.proc and self.proc.poll() is None:
            (self.proc.kill if kill else self.proc.terminate)()
            self.proc.wait(timeout=10)


def start_redis(workdir: Path, *extra: str) -> RedisProcess:
    return RedisProcess(free_port(), workdir, extra=list(extra)).start()
