"""A real Jaeger v2 (`jaeger`, built by scripts/jaeger.sh) on loopback ports with in-memory storage:
OTLP gRPC and HTTP receivers in, its HTTP query API out."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]

CONFIG = """\
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 10000
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:{query_port}
    grpc:
      endpoint: 127.0.0.1:{query_grpc_port}
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{otlp_grpc_port}
      http:
        endpoint: 127.0.0.1:{otlp_http_port}
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"""


def jaeger_binary() -> Path | None:
    """$TRUNKLINE_JAEGER, else .cache/bin/jaeger (scripts/jaeger.sh, called by scripts/test.sh)."""
    for candidate in (os.environ.get("TRUNKLINE_JAEGER"), ROOT / ".cache" / "bin" / "jaeger"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


@dataclass
class Jaeger:
    workdir: Path
    binary: Path
    otlp_grpc_port: int = field(default_factory=free_port)
    otlp_http_port: int = field(default_factory=free_port)
    query_port: int = field(default_factory=free_port)
    query_grpc_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def otlp_grpc(self) -> str:
        return f"http://127.0.0.1:{self.otlp_grpc_port}"

    @property
    def otlp_http(self) -> str:
        return f"http://127.0.0.1:{self.otlp_http_port}"

    @property
    def query_url(self) -> str:
        return f"http://127.0.0.1:{self.query_port}"

    def start(self, timeout: float = 60.0) -> Jaeger:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "jaeger.yaml"
        config.write_text(CONFIG.format(**self.__dict__))
        log = (self.workdir / "jaeger.log").open("ab")
        self.proc = subprocess.Popen([str(self.binary), "--config", str(config)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jaeger exited: {self.log()[-3000:]}")
            try:
                self.get("/api/services")
                return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"jaeger did not answer on {self.query_url}: {self.log()[-3000:]}")

    def log(self) -> str:
        path = self.workdir / "jaeger.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def get(self, path: str, **params: str) -> Any:
        url = self.query_url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        with urllib.request.urlopen(url, timeout=10) as answer:
            return json.load(answer)

    def trace(self, trace_id: str) -> dict[str, Any] | None:
        """The trace (Jaeger's JSON: spans, processes), None while Jaeger does not have it."""
        try:
            data = self.get(f"/api/traces/{trace_id}")["data"]
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise
        return data[0] if data else None

    def wait_for_trace(
        self, trace_id: str, until: Callable[[dict[str, Any]], bool], timeout: float = 60.0
    ) -> dict[str, Any]:
        """Poll until the trace satisfies `until` (spans arrive in batches, from several processes)."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            last = self.trace(trace_id)
            if last is not None and until(last):
                return last
            time.sleep(0.5)
        seen = sorted(f"{s['processID']}:{s['operationName']}" for s in (last or {}).get("spans", []))
        raise AssertionError(f"trace {trace_id} never became complete; spans seen: {seen}")


def spans_by_service(trace: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    processes = {pid: p["serviceName"] for pid, p in trace["processes"].items()}
    found: dict[str, list[dict[str, Any]]] = {}
    for span in trace["spans"]:
        found.setdefault(processes[span["processID"]], []).append(span)
    return found


def tags(span: dict[str, Any]) -> dict[str, Any]:
    return {tag["key"]: tag["value"] for tag in span.get("tags", [])}


def parent_id(span: dict[str, Any]) -> str | None:
    for ref in span.get("references", []):
        if ref.get("refType") == "CHILD_OF":
            return str(ref["spanID"])
    return None
