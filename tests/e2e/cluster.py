"""A real Kubernetes control plane (etcd + kube-apiserver, no kubelet) for end-to-end tests.

    with ControlPlane() as cp:
        cp.kubectl("get", "namespaces")

The binaries come from `tests/e2e/cluster.sh` (cached in `<repo>/.cache/bin`); `ensure_binaries()`
runs it. `python tests/e2e/cluster.py` starts a plane and waits for Ctrl-C.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.ports import free_port

if __package__:
    from ..support.certs import write_self_signed
else:  # run as a script: the repo root goes last on sys.path, after the stdlib (see tests/conftest.py)
    sys.path.append(str(Path(__file__).resolve().parents[2]))
    from tests.support.certs import write_self_signed

HERE = Path(__file__).resolve().parent
CLUSTER_SH = HERE / "cluster.sh"
REPO_ROOT = HERE.parent.parent
DEFAULT_BIN_DIR = Path(os.environ.get("TRUNKLINE_CACHE_DIR", REPO_ROOT / ".cache")) / "bin"

ADMIN_USER = "admin"
# ClusterIPs are only numbers in etcd here (no kube-proxy). A loopback range keeps any dial the
# apiserver itself makes to a Service (webhooks, aggregated APIs) on this machine.
SERVICE_CLUSTER_IP_RANGE = "127.200.0.0/24"


class ControlPlaneError(RuntimeError):
    pass


class CommandError(subprocess.CalledProcessError):
    """CalledProcessError whose message carries the output, where kubectl and helm say why."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


def ensure_binaries(timeout: float = 3600) -> str:
    """Run cluster.sh (fetch/build what is missing); return its output, raise with it on failure."""
    proc = subprocess.run(
        ["bash", str(CLUSTER_SH)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise ControlPlaneError(f"{CLUSTER_SH} failed (exit {proc.returncode}):\n{proc.stdout}")
    return proc.stdout


def _write_service_account_key(path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the parent dies, even by SIGKILL (e.g. a CI timeout)."""
    if sys.platform == "linux":
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"(no log: {e})"


class ControlPlane:
    """etcd + kube-apiserver on free loopback ports, in a temp dir removed on exit."""

    def __init__(
        self,
        bin_dir: Path | str | None = None,
        startup_timeout: float = 90.0,
        stop_timeout: float = 15.0,
    ) -> None:
        self.bin_dir = Path(bin_dir) if bin_dir is not None else DEFAULT_BIN_DIR
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.token = secrets.token_hex(24)
        self.workdir: Path | None = None
        self.kubeconfig: Path = Path()
        self.server = ""
        self.etcd_url = ""
        self.ca_file: Path = Path()
        self._procs: list[tuple[str, subprocess.Popen[bytes], IO[bytes]]] = []

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        for tool in ("etcd", "kube-apiserver", "kubectl", "helm"):
            if not os.access(self.bin_dir / tool, os.X_OK):
                raise ControlPlaneError(f"{self.bin_dir / tool} is missing: run {CLUSTER_SH} first")
        self.workdir = Path(tempfile.mkdtemp(prefix="trunkline-e2e-"))
        try:
            self._start_etcd()
            self._start_apiserver()
            self._write_kubeconfig()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        # Reverse order: the apiserver first, so it does not log etcd errors while shutting down.
        for _name, proc, log in reversed(self._procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=self.stop_timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            log.close()
        self._procs.clear()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    # ------------------------------------------------------------------ processes
    def _spawn(self, name: str, args: list[str]) -> None:
        assert self.workdir is not None
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 (closed in stop())
        # A new session: a Ctrl-C in the terminal reaches us, and we stop the children in order.
        proc = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self._procs.append((name, proc, log))

    def _check_alive(self) -> None:
        assert self.workdir is not None
        for name, proc, _log in self._procs:
            if proc.poll() is not None:
                raise ControlPlaneError(
                    f"{name} exited with {proc.returncode}; tail of its log:\n"
                    + _tail(self.workdir / f"{name}.log")
                )

    def _start_etcd(self) -> None:
        assert self.workdir is not None
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        peer_url = f"http://127.0.0.1:{peer}"
        self._spawn(
            "etcd",
            [
                str(self.bin_dir / "etcd"),
                "--name=e2e",
                f"--data-dir={self.workdir / 'etcd-data'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=e2e={peer_url}",
                "--initial-cluster-state=new",
            ],
        )
        deadline = time.monotonic() + 30
        while True:
            self._check_alive()
            try:
                with urllib.request.urlopen(f"{self.etcd_url}/health", timeout=2) as resp:
                    if json.loads(resp.read()).get("health") == "true":
                        return
            except (urllib.error.URLError, OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    "etcd not healthy after 30 s; tail of its log:\n" + _tail(self.workdir / "etcd.log")
                )
            time.sleep(0.2)

    def _start_apiserver(self) -> None:
        wd = self.workdir
        assert wd is not None
        port = free_port()
        self.server = f"https://127.0.0.1:{port}"
        self.ca_file = wd / "apiserver.crt"
        write_self_signed(self.ca_file, wd / "apiserver.key", "trunkline-e2e-apiserver")
        _write_service_account_key(wd / "sa.key")
        (wd / "tokens.csv").write_text(f'{self.token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n')
        (wd / "certs").mkdir()
        self._spawn(
            "kube-apiserver",
            [
                str(self.bin_dir / "kube-apiserver"),
                f"--etcd-servers={self.etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={wd / 'certs'}",
                f"--tls-cert-file={self.ca_file}",
                f"--tls-private-key-file={wd / 'apiserver.key'}",
                "--authorization-mode=RBAC",
                f"--token-auth-file={wd / 'tokens.csv'}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                f"--service-account-issuer={self.server}",
                f"--service-account-key-file={wd / 'sa.key'}",
                f"--service-account-signing-key-file={wd / 'sa.key'}",
                "--disable-admission-plugins=ServiceAccount",
                "--allow-privileged=true",
                # Its Endpoints would hold 127.0.0.1, which validation refuses (an error every 10 s).
                "--endpoint-reconciler-type=none",
            ],
        )

    def _write_kubeconfig(self) -> None:
        assert self.workdir is not None
        self.kubeconfig = self.workdir / "kubeconfig"
        # JSON is valid YAML, so no YAML library is needed.
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "e2e",
                    "cluster": {"server": self.server, "certificate-authority": str(self.ca_file)},
                }
            ],
            "users": [{"name": ADMIN_USER, "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": "e2e",
                    "context": {"cluster": "e2e", "user": ADMIN_USER, "namespace": "default"},
                }
            ],
            "current-context": "e2e",
        }
        self.kubeconfig.write_text(json.dumps(config, indent=2))
        self.kubeconfig.chmod(0o600)

    def _wait_ready(self) -> None:
        assert self.workdir is not None
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        request = urllib.request.Request(
            f"{self.server}/readyz", headers={"Authorization": f"Bearer {self.token}"}
        )
        deadline = time.monotonic() + self.startup_timeout
        last = "no answer yet"
        while True:
            self._check_alive()
            try:
                with urllib.request.urlopen(request, timeout=5, context=ctx) as resp:
                    body = resp.read().decode(errors="replace")
                    if resp.status == 200 and body.strip() == "ok":
                        return
                    last = f"HTTP {resp.status}: {body[:500]}"
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code}: {e.read().decode(errors='replace')[:2000]}"
            except (urllib.error.URLError, OSError) as e:
                last = repr(e)
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"kube-apiserver not ready after {self.startup_timeout:.0f} s "
                    f"(last /readyz: {last}); tail of its log:\n" + _tail(self.workdir / "kube-apiserver.log")
                )
            time.sleep(0.5)

    # ------------------------------------------------------------------ clients
    def env(self) -> dict[str, str]:
        """The environment for a client of this plane; helm's state is kept in the temp dir."""
        assert self.workdir is not None, "control plane not started"
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
            env[var] = str(self.workdir / "helm" / var.split("_")[1].lower())
        return env

    def run(
        self,
        tool: str,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin_dir / tool), *args]
        try:
            return subprocess.run(
                cmd,
                input=input,
                capture_output=True,
                text=True,
                env=self.env(),
                timeout=timeout,
                check=check,
            )
        except subprocess.CalledProcessError as e:
            raise CommandError(e.returncode, e.cmd, e.stdout, e.stderr) from None

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return self.run("kubectl", *args, input=input, check=check, timeout=timeout)

    def helm(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return self.run("helm", *args, input=input, check=check, timeout=timeout)


def main() -> int:
    # Stop cleanly on SIGTERM too, and on SIGINT even where a background job started us with it
    # ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    print(ensure_binaries(), end="", flush=True)
    with ControlPlane() as cp:
        print(f"server:     {cp.server}")
        print(f"kubeconfig: {cp.kubeconfig}")
        print(f"try:        KUBECONFIG={cp.kubeconfig} {cp.bin_dir / 'kubectl'} get ns")
        print("Ctrl-C stops it.", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("\nstopping", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
