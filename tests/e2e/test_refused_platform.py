"""A platform the operator refuses is visible: a Warning Event on the platform ConfigMap, the
`PlatformReady=False` condition on every Trunk, and a failing `helm test`, with the reason.

Two kinds of refusal: one the model makes (maxReplicas below minReplicas: JSON Schema cannot compare two
values, so `helm install` takes it) and one the API server makes (a Service annotation key it finds
invalid, which the values schema and the model take as any string). There is no kubelet here, so the
`helm test` pod's own command (`trunkline platform-check`, read from the release's hooks) runs as a
process with the token of the test pod's ServiceAccount: the chart's RBAC is what it gets.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.wait import wait_for

from .cluster import ControlPlane, free_port
from .test_operator_lifecycle import CHART, EXAMPLES, PREFIX, RELEASE, Cluster, install, run_operator

PLATFORM = f"{PREFIX}-platform"
BASE_VALUES = ("operator.resyncSeconds=5", "operator.liveCounts.enabled=false")
CHECK_TIMEOUT = 300  # the check's own deadline is the chart's: at most 2 resyncs (5 s here) + 60 s


@pytest.fixture(scope="module")
def refused(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Cluster, Path]]:
    cluster = install(
        control_plane, *BASE_VALUES, "edge.autoscaling.minReplicas=5", "edge.autoscaling.maxReplicas=3"
    )
    cluster.apply((EXAMPLES / "trunk.yaml").read_text())
    with run_operator(cluster, tmp_path_factory.mktemp("operator")) as log:
        yield cluster, log


def refusals(k: Cluster) -> list[dict[str, object]]:
    out = k.cp.kubectl("get", "events", "-n", k.ns, "-o", "json").stdout
    return [
        e for e in json.loads(out)["items"]
        if e.get("reason") == "PlatformRefused" and e["involvedObject"]["name"] == PLATFORM
    ]  # fmt: skip


def verdict(k: Cluster) -> dict[str, object] | None:
    configmap = k.get("configmap", PLATFORM) or {}
    text = configmap.get("metadata", {}).get("annotations", {}).get("trunkline.io/platform-status")
    return json.loads(text) if text else None


def platform_ready(k: Cluster) -> tuple[str, str, str] | None:
    trunk = k.get("trunk", "acme") or {}
    for c in trunk.get("status", {}).get("conditions", []):
        if c["type"] == "PlatformReady":
            return (c["status"], c["reason"], c["message"])
    return None


def helm_test_args(k: Cluster) -> list[str]:
    """The `helm test` pod's arguments, as the release has them."""
    hooks = k.cp.helm("get", "hooks", RELEASE, "-n", k.ns).stdout
    [pod] = [d for d in yaml.safe_load_all(hooks) if d and d["kind"] == "Pod"]
    [container] = pod["spec"]["containers"]
    assert pod["spec"]["serviceAccountName"] == f"{PREFIX}-test"
    args: list[str] = container["args"]
    assert args[0] == "platform-check"
    return args


def run_check(k: Cluster, workdir: Path, args: list[str], **replace: str) -> subprocess.CompletedProcess[str]:
    """The helm test pod's command, with the test ServiceAccount's token; `replace` swaps flag values."""
    token = k.cp.kubectl("create", "token", f"{PREFIX}-test", "-n", k.ns).stdout.strip()
    kubeconfig = json.loads(k.cp.kubeconfig.read_text())
    kubeconfig["users"][0]["user"] = {"token": token}
    (workdir / "kubeconfig").write_text(json.dumps(kubeconfig))
    for flag, value in replace.items():
        option = f"--{flag.replace('_', '-')}="
        args = [f"{option}{value}" if a.startswith(option) else a for a in args]
    code = f"from trunkline.cli import main; raise SystemExit(main({args!r}))"
    env = {**k.cp.env(), "KUBECONFIG": str(workdir / "kubeconfig")}
    return subprocess.run(  # cwd outside the repo: its `operator/` must not shadow the standard library's
        [sys.executable, "-c", code], cwd=workdir, env=env, capture_output=True, text=True,
        timeout=CHECK_TIMEOUT,
    )  # fmt: skip


def upgrade(k: Cluster, *values: str) -> None:
    """`helm upgrade` to these values alone (on top of the test's base)."""
    sets = (f"--set={v}" for v in (*BASE_VALUES, *values))
    k.cp.helm("upgrade", RELEASE, str(CHART), "-n", k.ns, "--reset-values", *sets)


@pytest.fixture
def control(request: pytest.FixtureRequest) -> Iterator[str]:
    """A stand-in for control's /readyz (no kubelet runs the real one here)."""

    class Ready(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/readyz" else 404)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ready)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/readyz"
    server.shutdown()
    server.server_close()


def test_a_refused_platform_is_a_warning_event_on_its_configmap(refused: tuple[Cluster, Path]) -> None:
    k, log = refused
    [event] = wait_for(lambda: refusals(k), "a PlatformRefused Event", timeout=60)
    assert event["type"] == "Warning"
    assert "maxReplicas must be >= minReplicas" in str(event["message"])
    assert k.get("deployment", f"{PREFIX}-control") is None  # nothing deployed
    # Reported once per reason, not at every resync (5 s here): two more refusals, still one Event.
    wait_for(lambda: log.read_text().count("not applied") >= 3, "three refusals logged", timeout=60)
    assert len(refusals(k)) == 1


def test_the_refusal_is_a_condition_on_every_trunk_and_fails_helm_test(
    refused: tuple[Cluster, Path], tmp_path: Path
) -> None:
    k, _ = refused
    ready = wait_for(lambda: platform_ready(k), "the Trunk's PlatformReady condition", timeout=60)
    assert ready[:2] == ("False", "PlatformRefused") and "maxReplicas must be >= minReplicas" in ready[2]
    assert (verdict(k) or {}).get("applied") is False
    wide = k.cp.kubectl("get", "trunks", "-n", k.ns, "-o", "wide").stdout.splitlines()
    column = wide[0].split().index("PLATFORM")  # Channels is empty on this Trunk: count from the end
    assert wide[1].split()[column - len(wide[0].split())] == "False", wide
    result = run_check(k, tmp_path, helm_test_args(k))
    assert result.returncode == 1, result
    assert "maxReplicas must be >= minReplicas" in result.stderr and "Traceback" not in result.stderr


def test_an_object_the_api_server_refuses_is_a_refusal_too(
    refused: tuple[Cluster, Path], tmp_path: Path
) -> None:
    # The model takes any annotation key; the API server refuses one that starts with "_".
    k, _ = refused
    upgrade(k, "edge.autoscaling.minReplicas=5", "edge.udpService.annotations._bad=x")
    wait_for(
        lambda: "the API server refused" in str((verdict(k) or {}).get("message")),
        "the new verdict",
        timeout=60,
    )
    ready = wait_for(lambda: platform_ready(k) if "API server" in str(platform_ready(k)) else None,
                     "PlatformReady with the API server's reason", timeout=60)  # fmt: skip
    assert ready[0] == "False" and "metadata.annotations" in ready[2], ready
    result = run_check(k, tmp_path, helm_test_args(k))
    assert result.returncode == 1, result
    assert "refused by the operator: the API server refused an object" in result.stderr
    assert "metadata.annotations: Invalid value" in result.stderr
    assert [e for e in refusals(k) if "metadata.annotations" in str(e["message"])]  # a new reason: an Event


def test_a_quantity_server_side_apply_cannot_convert_is_a_refusal_too(
    refused: tuple[Cluster, Path], tmp_path: Path
) -> None:
    # The model and the values schema take any quantity text; server-side apply answers 500 for "lots".
    k, _ = refused
    upgrade(k, "edge.autoscaling.minReplicas=5", "edge.resources.limits.cpu=lots")
    wait_for(lambda: "quantities must match" in str((verdict(k) or {}).get("message")), "the new verdict", 60)
    result = run_check(k, tmp_path, helm_test_args(k))
    assert result.returncode == 1 and "quantities must match" in result.stderr, result


def test_a_fixed_platform_passes_helm_test_once_control_answers(
    refused: tuple[Cluster, Path], tmp_path: Path, control: str
) -> None:
    k, _ = refused
    upgrade(k, "edge.autoscaling.minReplicas=5")
    wait_for(lambda: (verdict(k) or {}).get("applied") is True, "the platform applied", timeout=60)
    assert k.get("deployment", f"{PREFIX}-control") is not None
    ready = wait_for(lambda: platform_ready(k) if str(platform_ready(k)).startswith("('True'") else None,
                     "PlatformReady=True", timeout=60)  # fmt: skip
    assert ready == ("True", "Applied", "")
    args = helm_test_args(k)
    passed = run_check(k, tmp_path, args, control_url=control)
    assert passed.returncode == 0, passed
    assert "applied by the operator" in passed.stdout and "control ready" in passed.stdout
    # Applied but no control answering: still a failure, which says so.
    silent = f"http://127.0.0.1:{free_port()}/readyz"
    failed = run_check(k, tmp_path, args, control_url=silent, timeout="4")
    assert failed.returncode == 1 and "control never answered" in failed.stderr, failed
