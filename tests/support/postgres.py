"""A private PostgreSQL cluster (Debian's `postgresql`) on a free loopback port, for one test module.

initdb refuses to run as root: as root the cluster belongs to the `postgres` system user (the Debian
package makes it) and the server runs as that user; otherwise as the current user. Trust auth, bound
to 127.0.0.1 only, socket in the data directory's parent. Stop and start it again to test outages.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import free_port


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    assert found, "PostgreSQL is not installed (scripts/test.sh installs the `postgresql` package)"
    return found[-1]


@dataclass
class PostgresProcess:
    port: int
    base: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres?connect_timeout=3"

    def _as_owner(self) -> dict[str, object]:
        if os.geteuid() != 0:
            return {}
        user = pwd.getpwnam("postgres")
        return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}

    def init(self) -> PostgresProcess:
        self.base.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.base, user.pw_uid, user.pw_gid)
        subprocess.run(
            [_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync",
             "-E", "UTF8"],
            check=True, capture_output=True, timeout=120, **self._as_owner(),  # type: ignore[call-overload]
        )  # fmt: skip
        return self

    def start(self) -> PostgresProcess:
        log = (self.base / "log.txt").open("ab")
        self.proc = subprocess.Popen(  # type: ignore[call-overload]
            [_bin("postgres"), "-D", str(self.data), "-p", str(self.port), "-h", "127.0.0.1",
             "-k", str(self.base), "-c", "fsync=on", "-c", "max_connections=20"],
            stdout=log, stderr=subprocess.STDOUT, **self._as_owner(),
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {(self.base / 'log.txt').read_text()[-2000:]}")
            if self.accepts():
                return self
            time.sleep(0.1)
        raise RuntimeError(f"postgres on port {self.port} did not accept connections")

    def accepts(self) -> bool:
        result = subprocess.run(
            [_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-t", "2"],
            capture_output=True, timeout=10,
        )  # fmt: skip
        return result.returncode == 0

    def stop(self, kill: bool = False) -> None:
        if self.proc and self.proc.poll() is None:
            # SIGINT: a "fast" shutdown that ends client sessions (SIGTERM would wait for them).
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


def start_postgres() -> PostgresProcess:
    # Not under pytest's tmp_path: as root that is mode 0700 and the postgres user could not enter it.
    base = Path(tempfile.mkdtemp(prefix="trunkline-pg-"))
    os.chmod(base, 0o755)
    return PostgresProcess(free_port(), base).init().start()


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0
