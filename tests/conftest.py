"""Shared test fixtures. Levels: unit (default), integration (real sockets, SIPp, Redis), e2e (real
kube-apiserver, helm); the marker is set by the folder a test lives in."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import uvloop

from tests.support.ports import free_port

if TYPE_CHECKING:
    from tests.support.jaeger import Jaeger
    from tests.support.redis_server import RedisProcess

ROOT = Path(__file__).resolve().parent.parent


def pytest_sessionstart(session: pytest.Session) -> None:
    """Tests run what the sources say: a compiled SIP core module (setup.py builds them in place for an
    editable install) older than its .py file is stale, and would be what every test imports."""

    def source_time(so: Path) -> float:
        source = so.with_name(f"{so.name.split('.')[0]}.py")
        return source.stat().st_mtime if source.exists() else float("inf")  # no source: stale too

    stale = [so.name for so in (ROOT / "sip").glob("*.so") if so.stat().st_mtime < source_time(so)]
    if stale:
        rebuild = "rebuild it with `.venv/bin/pip install -e .`, or delete sip/*.so to run the .py files"
        why = "older than its source, or without one"
        pytest.exit(f"compiled SIP core {why} ({', '.join(stale)}): {rebuild}", returncode=4)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        level = Path(str(item.fspath)).relative_to(ROOT / "tests").parts[0]
        if level in ("integration", "e2e"):
            item.add_marker(getattr(pytest.mark, level))


@pytest.fixture
def carrier_port() -> int:
    """Where a test's carrier (a SIPp UAS or a test UA) listens; the manifests point there."""
    return free_port()


@pytest.fixture
def pbx_port() -> int:
    """Where a test's PBX listens for inbound calls."""
    return free_port()


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A real redis-server of the test's own, on a free loopback port."""
    from tests.support.redis_server import start_redis

    proc = start_redis(tmp_path / "redis")
    yield proc
    proc.stop()


@pytest.fixture
def jaeger(tmp_path: Path) -> Iterator[Jaeger]:
    """A real Jaeger (in-memory storage, loopback ports) of the test's own."""
    from tests.support.jaeger import Jaeger, jaeger_binary

    binary = jaeger_binary()
    assert binary, "no jaeger binary: run scripts/jaeger.sh (scripts/test.sh does)"
    server = Jaeger(tmp_path / "jaeger", binary).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def trunkline_bin() -> str:
    return str(Path(sys.executable).parent / "trunkline")


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Async tests run on uvloop, the loop every trunkline process runs on (`core/runner.run`)."""
    return {"uvloop": uvloop.new_event_loop}
