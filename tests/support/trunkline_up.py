"""`trunkline up` as a real process on free loopback ports, with manifests written for the test."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.ports import free_port
from tests.support.processes import TRUNKLINE, http_ready, stop, wait_started

BIN = TRUNKLINE


def manifests(carrier_port: int | list[int], pbx_port: int, **trunk_spec: object) -> str:
    """A carrier on 127.0.0.1:carrier_port (calls from 127.0.0.1; several ports: gateways tried in that
    order), trunk `acme` (IP ACL 127.0.0.2, digest acme/s3cret-acme, origination 127.0.0.4:pbx_port)
    and two DIDs."""
    ports = carrier_port if isinstance(carrier_port, list) else [carrier_port]
    gateways = [{"uri": f"sip:127.0.0.1:{port}", "priority": 10 * (i + 1)} for i, port in enumerate(ports)]
    spec: dict[str, object] = {
        "auth": {"digest": {"credentialsSecret": "acme-creds"}, "ipAcl": ["127.0.0.2/32"]},
        "registration": {"enabled": True},
        "origination": [{"uri": f"sip:127.0.0.4:{pbx_port}"}],
        "outbound": {"allowedPrefixes": ["+1", "+44"]},
    }
    spec.update(trunk_spec)
    docs = [
        {"apiVersion": "v1", "kind": "Secret",
         "metadata": {"name": "acme-creds", "labels": {"trunkline.io/credentials": ""}},
         "stringData": {"username": "acme", "password": "s3cret-acme"}},
        {"apiVersion": "trunkline.io/v1alpha1", "kind": "Carrier", "metadata": {"name": "pstn"},
         "spec": {"gateways": gateways, "inboundCidrs": ["127.0.0.1/32"]}},
        {"apiVersion": "trunkline.io/v1alpha1", "kind": "Trunk", "metadata": {"name": "acme"}, "spec": spec},
        {"apiVersion": "trunkline.io/v1alpha1", "kind": "DID", "metadata": {"name": "main"},
         "spec": {"number": "+14155550100", "trunkRef": "acme"}},
        {"apiVersion": "trunkline.io/v1alpha1", "kind": "DID", "metadata": {"name": "second"},
         "spec": {"number": "+14155550101", "trunkRef": "acme"}},
    ]  # fmt: skip
    return "\n---\n".join(json.dumps(d) for d in docs)


@dataclass
class Up:
    workdir: Path
    manifest_text: str
    extra: list[str] = field(default_factory=list)
    command: str = "up"  # or "edge": the same flags for what this needs
    env: dict[str, str] = field(default_factory=dict)  # added to the process's environment
    host: str = "127.0.0.1"  # the SIP listening address's IP
    start_timeout: float = 20.0  # seconds until ready (several processes take longer on a busy machine)
    sip_port: int = 0
    http_port: int = 0
    proc: subprocess.Popen[str] | None = None

    @property
    def cdr_path(self) -> Path:
        return self.workdir / "cdr.jsonl"

    @property
    def sip(self) -> str:
        return f"{self.host}:{self.sip_port}"

    def start(self, ready: bool = True) -> Up:
        """Start it and wait until /readyz says ready (`ready=False`: until SIP listens, for an edge
        that may never get its configuration)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "manifests.yaml").write_text(self.manifest_text)
        self.sip_port, self.http_port = free_port(), free_port()
        self.log = (self.workdir / "trunkline.log").open("a")  # a restart in the same folder adds to it
        # One edge process unless the test asks for workers (the default with --redis: the CPU count).
        workers = [] if self.command != "edge" or "--workers" in self.extra else ["--workers", "1"]
        self.proc = subprocess.Popen(
            [BIN, self.command, "-f", str(self.workdir / "manifests.yaml"), "--sip-listen", self.sip,
             "--http-listen", f"127.0.0.1:{self.http_port}", "--cdr", str(self.cdr_path), "--grace", "2",
             *workers, *self.extra],
            stdout=self.log, stderr=subprocess.STDOUT, text=True, env={**os.environ, **self.env},
        )  # fmt: skip
        readyz = f"http://127.0.0.1:{self.http_port}/readyz"
        started = (lambda: http_ready(readyz)) if ready else (lambda: "sip listening" in self.output())
        try:
            wait_started(self.proc, started, f"trunkline {self.command}", self.output, self.start_timeout)
        except AssertionError:
            self.stop()  # no process (nor its workers) left holding ports after a failed start
            raise
        return self

    def output(self) -> str:
        return (self.workdir / "trunkline.log").read_text(errors="replace")[-6000:]

    def cdrs(self) -> list[dict[str, object]]:
        if not self.cdr_path.exists():
            return []
        return [json.loads(line) for line in self.cdr_path.read_text().splitlines() if line.strip()]

    def wait_cdrs(self, count: int, timeout: float = 5.0) -> list[dict[str, object]]:
        """The call records, once `count` of them are written (a call's record follows its last BYE)."""
        deadline = time.monotonic() + timeout
        while len(records := self.cdrs()) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return records

    def wait_busy(self, calls: int, timeout: float = 10.0) -> None:
        """Wait until the edge carries `calls` live calls (its busy gauge)."""
        line = f'trunkline_component_busy{{component="edge"}} {float(calls)}'
        deadline = time.monotonic() + timeout
        while line not in self.metrics():
            assert time.monotonic() < deadline, f"never {calls} live calls:\n{self.output()}"
            time.sleep(0.05)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=2) as r:
            return r.read().decode()

    def stop(self) -> int:
        assert self.proc is not None
        code = stop(self.proc)
        self.log.close()
        return code
