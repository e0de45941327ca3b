"""stunnel (Debian stunnel4, OpenSSL) in the foreground: the TLS end that Debian's SIPp lacks."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def stunnel(workdir: pathlib.Path, services: dict[str, dict[str, str]]) -> Iterator[pathlib.Path]:
    """stunnel in the foreground with `services` (name -> options); yields its log once it listens."""
    binary = shutil.which("stunnel4") or shutil.which("stunnel")
    assert binary, "stunnel (Debian stunnel4) is not installed; scripts/test.sh installs it"
    log = workdir / "stunnel.log"
    lines = ["foreground = yes", "pid =", "debug = info", f"output = {log}", ""]
    for name, options in services.items():
        lines += [f"[{name}]", *(f"{k} = {v}" for k, v in options.items()), ""]
    conf = workdir / "stunnel.conf"
    conf.write_text("\n".join(lines))
    proc = subprocess.Popen([binary, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while "Configuration successful" not in (log.read_text() if log.exists() else ""):
            assert proc.poll() is None, f"stunnel exited {proc.returncode}: {log.read_text()}"
            assert time.monotonic() < deadline, "stunnel did not start in 10 s"
            time.sleep(0.05)
        yield log
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
