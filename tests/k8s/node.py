"""A real single-node Kubernetes for tests (tests/k8s/node.sh does the work; this drives it).

    with Node() as node:
        node.kubectl("get", "pods", "-A")

Needs root (CI runs as root): it creates the cni0 bridge, iptables rules and a containerd.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
BIN_DIR = Path(os.environ.get("TRUNKLINE_CACHE_DIR", REPO_ROOT / ".cache")) / "bin"
NODE_SH = HERE / "node.sh"
CLUSTER_SH = REPO_ROOT / "tests" / "e2e" / "cluster.sh"
NODE_IP = "10.88.0.1"


class NodeError(RuntimeError):
    pass


def _run(args: list[str], timeout: float, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise NodeError(f"{' '.join(args)} failed (exit {proc.returncode}):\n{proc.stdout[-6000:]}")
    return proc.stdout


class Node:
    """The node's control plane, kubelet and pod network, up between enter and exit."""

    def __init__(self) -> None:
        self.state = Path(tempfile.mkdtemp(prefix="trunkline-k8s-"))
        self.kubeconfig = self.state / "kubeconfig"
        self.image = ""  # localhost/trunkline:<hash of its inputs>
        self.redis_image = ""
        self.startup_seconds = 0.0

    def __enter__(self) -> Node:
        if os.geteuid() != 0:
            raise NodeError(
                "tests/k8s need root (a bridge, iptables, containerd): run them as root, as CI does"
            )
        _run(["bash", str(CLUSTER_SH), "--node"], timeout=3600)
        start = time.monotonic()
        try:
            _run(["bash", str(NODE_SH), "up", str(self.state)], timeout=900)
        except BaseException:
            self.down()
            raise
        self.startup_seconds = time.monotonic() - start
        self.image = (self.state / "image").read_text().strip()
        self.redis_image = (self.state / "redis-image").read_text().strip()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.down()

    def down(self) -> None:
        _run(["bash", str(NODE_SH), "down", str(self.state)], timeout=300)

    # ------------------------------------------------------------------ clients
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
            env[var] = str(self.state / "helm" / var.split("_")[1].lower())
        return env

    def run(self, tool: str, *args: str, input: str | None = None, timeout: float = 180) -> str:
        proc = subprocess.run(
            [str(BIN_DIR / tool), *args], input=input, capture_output=True, text=True,
            env=self.env(), timeout=timeout, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise NodeError(
                f"{tool} {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )
        return proc.stdout

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 180) -> str:
        return self.run("kubectl", *args, input=input, timeout=timeout)

    def helm(self, *args: str, timeout: float = 300) -> str:
        return self.run("helm", *args, timeout=timeout)

    def get(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json"))

    def kill_container(self, namespace: str, pod: str) -> str:
        """SIGKILL the first container of `pod` through containerd (a crash: no signal handler runs,
        and PID 1 of a container ignores a SIGKILL sent from inside it). Returns the killed
        container's id; kubelet starts a new container in the same pod (same name, IP and ports)."""
        status = self.get("pod", "-n", namespace, pod)["status"]["containerStatuses"][0]
        container_id = str(status["containerID"]).removeprefix("containerd://")
        sock = self.state / "containerd" / "containerd.sock"
        kill = ["tasks", "kill", "-s", "SIGKILL", container_id]
        _run(["ctr", "-a", str(sock), "-n", "k8s.io", *kill], timeout=60)
        return container_id

    def diagnostics(self, namespace: str) -> str:
        """Pods, events and every pod's log, for a failure message."""
        parts = []
        for args in (
            ("get", "pods", "-A", "-o", "wide"),
            ("get", "events", "-n", namespace, "--sort-by=.lastTimestamp"),
        ):
            try:
                parts.append(self.kubectl(*args, timeout=30))
            except (NodeError, subprocess.TimeoutExpired) as e:
                parts.append(str(e))
        try:
            pods = self.get("pods", "-n", namespace)["items"]
        except (NodeError, subprocess.TimeoutExpired, ValueError) as e:
            return "\n".join([*parts, str(e)])
        for pod in pods:
            name = pod["metadata"]["name"]
            try:
                log = self.kubectl("logs", "-n", namespace, name, "--all-containers", "--tail=60", timeout=30)
            except (NodeError, subprocess.TimeoutExpired) as e:
                log = str(e)
            parts.append(f"--- logs of {name}\n{log}")
        return "\n".join(parts)[-30000:]
