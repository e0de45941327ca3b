"""Fixtures of the tests on a real node (node.py, node.sh): one node per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .node import Node, NodeError

HERE = Path(__file__).resolve().parent
# A cold build (node binaries, base images) happens inside the first test's setup.
COLD_TIMEOUT = 3600


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.k8s)
            if config.pluginmanager.hasplugin("timeout"):
                item.add_marker(pytest.mark.timeout(COLD_TIMEOUT))


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
