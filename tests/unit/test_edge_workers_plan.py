"""`trunkline edge --workers N`: how many workers, what each is told, when the parent gives up on
them, and how their /metrics become one exposition."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from trunkline.core.cpu_limit import cpus_allowed
from trunkline.core.net import ConfigError, HostPort
from trunkline.edge import server, workers
from trunkline.edge.worker_metrics import exposition
from trunkline.edge.workers import RestartBudget, WorkerPlan, worker_argv


@pytest.mark.parametrize(
    ("affinity", "cpu_max", "cpus"),
    [
        (8, None, 8),  # no cgroup file: the CPUs it may run on
        (8, "max 100000\n", 8),  # no quota
        (8, "250000 100000\n", 2),  # 2.5 CPUs: rounded down
        (8, "50000 100000\n", 1),  # half a CPU: still one process
        (2, "400000 100000\n", 2),  # a quota above the CPUs it may use
        (0, None, 1),
        (4, "garbage", 4),
        (4, "-1 100000", 4),
    ],
)
def test_the_cpu_limit_is_affinity_capped_by_the_cgroup_quota(
    affinity: int, cpu_max: str | None, cpus: int
) -> None:
    assert cpus_allowed(affinity, cpu_max) == cpus


EXAMPLES = str(Path(__file__).resolve().parents[2] / "examples")


def plan_of(*argv: str, files: str = EXAMPLES) -> WorkerPlan | None:
    args = server.build_parser().parse_args(["-f", files, *argv])
    return server.worker_plan(args, ["-f", files, *argv])


def test_the_parent_says_what_is_wrong_with_the_manifests_once(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("apiVersion: trunkline.io/v1alpha1\nkind: Trunk\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml"):
        plan_of("--redis", "redis://h:6379/0", "--workers", "2", files=str(tmp_path / "bad.yaml"))


def test_workers_need_a_shared_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRUNKLINE_REDIS_URL", raising=False)
    with pytest.raises(ConfigError, match="shared store"):
        plan_of("--workers", "2")
    assert plan_of("--workers", "1") is None
    assert plan_of() is None  # the default without a store: one process


def test_the_default_is_the_cpu_limit_with_a_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRUNKLINE_REDIS_URL", raising=False)
    monkeypatch.setattr(server, "cpu_limit", lambda: 3)
    plan = plan_of("--redis", "redis://127.0.0.1:6379/0", "--edge-id", "pod-a")
    assert plan is not None and plan.count == 3 and plan.edge_id == "pod-a"
    # An edge already one of several on a shared address, or a worker itself, is one process.
    assert plan_of("--redis", "redis://127.0.0.1:6379/0", "--service-listen", "127.0.0.1:5070") is None
    assert plan_of("--redis", "redis://127.0.0.1:6379/0", "--worker-of", "1") is None
    monkeypatch.setattr(server, "cpu_limit", lambda: 1)
    assert plan_of("--redis", "redis://127.0.0.1:6379/0") is None


def test_workers_refuse_a_second_shared_address() -> None:
    with pytest.raises(ConfigError, match="--service-listen"):
        plan_of("--redis", "redis://h:6379/0", "--workers", "2", "--service-listen", "127.0.0.1:5070")


def test_the_parent_refuses_bad_flags_before_starting_anything() -> None:
    with pytest.raises(SystemExit):
        server.build_parser().parse_args(["--workers", "0"])
    with pytest.raises(ConfigError, match="--worker-ports"):
        plan_of("--redis", "redis://h:6379/0", "--workers", "2", "--worker-ports", "65535")


def test_each_worker_gets_its_own_port_id_and_ops_socket_and_shares_the_address() -> None:
    plan = WorkerPlan(2, ["-f", "m.yaml", "--sip-listen", "0.0.0.0:5060"], HostPort("0.0.0.0", 5060),
                      "pod-a", first_port=7000, log_level="DEBUG")  # fmt: skip
    args = server.build_parser().parse_args(worker_argv(plan, 1, http_fd=9, parent=42))
    assert args.workers == 1 and args.worker_of == 42 and args.http_fd == 9
    assert args.sip_listen == "0.0.0.0:7001"  # own port: first_port + index
    assert args.service_listen == "0.0.0.0:5060"  # the shared address (SO_REUSEPORT)
    assert args.edge_id == "pod-a-w1"  # after restarts too: the new process takes the old one's calls
    assert args.cdr_spool is None
    assert args.log_level == "DEBUG" and args.files == ["m.yaml"]  # the parent's own, as given
    any_port = WorkerPlan(2, [], HostPort("::1", 5060), "pod-a")
    args = server.build_parser().parse_args(worker_argv(any_port, 0, http_fd=9, parent=42))
    assert args.sip_listen == "[::1]:0" and args.edge_id == "pod-a-w0"


def test_workers_that_keep_dying_use_up_the_restart_budget() -> None:
    budget = RestartBudget(allowed=3, window=60.0)
    assert all(budget.allow(t) for t in (0.0, 1.0, 2.0))
    assert not budget.allow(3.0)  # a fourth within the minute
    assert budget.allow(61.5)  # the first one has left the window


def test_the_workers_metrics_are_one_exposition_labelled_by_worker() -> None:
    texts = {}
    for worker, calls in (("0", 3), ("1", 4)):
        registry = CollectorRegistry()
        Counter("trunkline_calls", "Calls", ["trunk"], registry=registry).labels("acme").inc(calls)
        texts[worker] = exposition({}, registry).decode()
    texts["2"] = "not { prometheus"  # a worker answering garbage contributes nothing
    own = CollectorRegistry()
    Counter("trunkline_edge_worker_restarts", "Restarts", registry=own).inc()
    text = exposition(texts, own).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    totals = {s.labels["worker"]: s.value for s in families["trunkline_calls"].samples
              if s.name == "trunkline_calls_total"}  # fmt: skip
    assert totals == {"0": 3.0, "1": 4.0}
    assert text.count("# TYPE trunkline_calls_total counter") == 1  # one family, not one per worker
    assert families["trunkline_edge_worker_restarts"].samples[0].value == 1.0


async def test_workers_that_cannot_be_started_end_the_parent(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_process(*args: object, **kwargs: object) -> None:
        raise OSError("Resource temporarily unavailable")

    monkeypatch.setattr(asyncio, "create_subprocess_exec", no_process)
    monkeypatch.setattr(workers, "RESTART_DELAY", 0.0)
    ops = socket.socket()
    ops.bind(("127.0.0.1", 0))
    ops.listen()
    plan = WorkerPlan(2, [], HostPort("127.0.0.1", 5060), "pod-a")
    supervisor = workers.Supervisor(plan, ops, RestartBudget(allowed=3, window=60.0))
    assert await asyncio.wait_for(supervisor.run(), 30) == 1  # no traceback: a clear end, non-zero
    assert supervisor.failed
    assert supervisor.registry.get_sample_value("trunkline_edge_worker_restarts_total") == 3.0


def test_each_worker_spools_call_ends_in_its_own_folder() -> None:
    plan = WorkerPlan(2, ["--cdr-spool", "/var/spool/trunkline"], HostPort("0.0.0.0", 5060), "pod-a",
                      cdr_spool="/var/spool/trunkline")  # fmt: skip
    parse = server.build_parser().parse_args
    folders = {parse(worker_argv(plan, i, http_fd=9, parent=1)).cdr_spool for i in (0, 1)}
    assert folders == {"/var/spool/trunkline/w0", "/var/spool/trunkline/w1"}
