"""The chart rendered with every documented value set to something other than its default: each value
shows up in the objects helm renders (the operator) or in those the operator then builds (data plane).
The list of values comes from the model, so a new value without a check here fails the coverage test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.chart_values import CHECKS, COMPANIONS, FIRST, SECOND, SECOND_CHECKS, holds, objects
from trunkline.generate import field_defaults
from trunkline.operator.values import ChartValues


def test_every_value_is_set_to_a_non_default_and_checked() -> None:
    defaults = field_defaults(ChartValues)
    assert set(defaults) == (set(FIRST) | set(SECOND)) - set(COMPANIONS)
    for path, default in defaults.items():  # COMPANIONS: required, no default
        assert json.dumps(FIRST.get(path, SECOND.get(path))) != json.dumps(default), path
    assert set(CHECKS) | set(SECOND_CHECKS) == set(defaults)


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    return objects(FIRST, tmp_path_factory.mktemp("first"))


@pytest.mark.parametrize("path", sorted(CHECKS))
def test_each_value_reaches_its_object(first: dict[str, dict[str, Any]], path: str) -> None:
    check = CHECKS[path]
    if callable(check):
        assert check(first), path
    else:
        key, wanted = check
        assert key in first, (path, sorted(first))
        assert holds(first[key], wanted), (path, key, wanted)


def test_the_values_that_hide_others(tmp_path: Path) -> None:
    found = objects({**FIRST, **SECOND}, tmp_path)
    for path, check in SECOND_CHECKS.items():
        assert check(found), path
