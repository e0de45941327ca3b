"""A real DNS server (Debian's dnsmasq) on a free loopback port, serving the records a test gives.

dnsmasq serves A/AAAA (`host-record=`), SRV (`srv-host=`) and NAPTR (`naptr-record=`) from its
config, answers NXDOMAIN for anything else under the `.test` domain and logs every query it gets,
so a test can tell which lookups a resolver made (`queries()`).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import dns.exception
import dns.message
import dns.query
import dns.rdatatype

from tests.support.ports import free_port

READY_NAME = "dns-server-ready.test"


class DnsServer:
    """`with DnsServer(tmp_path, ["host-record=a.test,127.0.0.2"]) as dns_server: ...`"""

    def __init__(self, workdir: Path, records: list[str], ttl: int = 300) -> None:
        self.workdir = workdir
        self.records = records
        self.ttl = ttl  # for records that give none (dnsmasq's default, 0, would defeat caching)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: BinaryIO | None = None
        self.log_path = workdir / "dnsmasq.log"

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def start(self) -> DnsServer:
        binary = shutil.which("dnsmasq") or shutil.which("dnsmasq", path="/usr/sbin:/sbin")
        assert binary, "dnsmasq is not installed (scripts/test.sh installs dnsmasq-base)"
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "dnsmasq.conf"
        lines = [
            "local=/test/",  # names under .test that have no record: NXDOMAIN, never forwarded
            f"local-ttl={self.ttl}",
            "log-queries",
            "pid-file=",  # none: several servers may run at once
            f"host-record={READY_NAME},127.0.0.1",
            *self.records,
        ]
        conf.write_text("\n".join(lines) + "\n")
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                binary,
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--no-daemon",
                f"--port={self.port}",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                f"--conf-file={conf}",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dnsmasq exited: {self.log_path.read_text()[-2000:]}")
            if self.answers():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"dnsmasq on port {self.port} did not answer")

    def answers(self) -> bool:
        query = dns.message.make_query(READY_NAME, dns.rdatatype.A)
        try:
            response = dns.query.udp(query, "127.0.0.1", timeout=0.5, port=self.port)
        except (dns.exception.DNSException, OSError):
            return False
        return bool(response.answer)

    def queries(self) -> list[tuple[str, str]]:
        """(type, name) of every query the server got, in order, the start-up check left out."""
        out = []
        for line in self.log_path.read_text().splitlines():
            # "dnsmasq: query[SRV] _sip._udp.example.test from 127.0.0.1"
            _, found, rest = line.partition(": query[")
            if found:
                rdtype, _, tail = rest.partition("] ")
                name = tail.split(" ")[0]
                if name != READY_NAME:
                    out.append((rdtype, name))
        return out

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        if self._log:
            self._log.close()
            self._log = None

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
