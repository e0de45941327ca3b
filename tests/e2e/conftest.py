"""End-to-end fixtures: a real kube-apiserver + etcd (see cluster.py and README.md)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.redis_server import RedisProcess, start_redis

from .cluster import DEFAULT_BIN_DIR, ControlPlane, ControlPlaneError, ensure_binaries

HERE = Path(__file__).resolve().parent
# A cold cluster.sh builds kube-apiserver inside the first test's setup, past the per-test timeout.
COLD_BUILD_TIMEOUT = 3600


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: end-to-end test against a real kube-apiserver")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # This hook sees the whole session's items, not only this folder's.
    cold = not (DEFAULT_BIN_DIR / "kube-apiserver").exists() and config.pluginmanager.hasplugin("timeout")
    for item in items:
        if item.path.parent == HERE or HERE in item.path.parents:
            item.add_marker(pytest.mark.e2e)
            if cold:
                item.add_marker(pytest.mark.timeout(COLD_BUILD_TIMEOUT))


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    # A missing binary or a failed build is a failure, never a skip: the suite must not go green
    # without having talked to a real API server.
    try:
        ensure_binaries()
    except ControlPlaneError as e:
        pytest.fail(str(e), pytrace=False)
    with ControlPlane() as cp, pytest.MonkeyPatch.context() as mp:
        mp.setenv("KUBECONFIG", str(cp.kubeconfig))
        yield cp


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """One redis-server per module (the e2e level's operators read live counts and upkeep from it)."""
    proc = start_redis(tmp_path_factory.mktemp("redis"))
    yield proc
    proc.stop()
