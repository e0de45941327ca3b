"""Fixtures of the tests on a real node (node.py, node.sh): one node and one install of the chart
(platform.py) per session, shared by every module; the tests marked `k8s_uninstalls` run last."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.wait import wait_for

from .node import Node, NodeError
from .platform import NAMESPACE, READY_TIMEOUT, Platform, install

HERE = Path(__file__).resolve().parent
# A cold build (node binaries, base images) happens inside the first test's setup.
COLD_TIMEOUT = 3600


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.k8s)
            if config.pluginmanager.hasplugin("timeout"):
                item.add_marker(pytest.mark.timeout(COLD_TIMEOUT))
    # Removing the release ends the session's platform: whatever module they are in, those go last.
    items.sort(key=lambda item: item.get_closest_marker("k8s_uninstalls") is not None)


@pytest.fixture(scope="session")
def node() -> Iterator[Node]:
    # Not root or a failed start is a failure, never a skip: CI must not go green without a node.
    try:
        running = Node().__enter__()
    except NodeError as e:
        pytest.fail(str(e), pytrace=False)
    try:
        yield running
    finally:
        running.down()


@pytest.fixture(scope="session")
def platform(node: Node) -> Iterator[Platform]:
    try:
        running = install(node)
        for component, count in (("operator", 1), ("control", 1), ("edge", 2), ("media", 1), ("cdr", 1)):
            wait_for(lambda c=component, n=count: running.ready(c, n), f"{count} Ready {component} pod(s)",
                     READY_TIMEOUT)  # fmt: skip
    except BaseException:
        print(node.diagnostics(NAMESPACE))
        raise
    yield running
