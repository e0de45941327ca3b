"""Python run from the repository root puts the root on sys.path, where `operator/` is found as a
top-level `operator`: it must hand over to the standard library's module (pip, pytest and anything
else importing `operator` from the root work, with no PYTHONSAFEPATH)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_from_root(*args: str, python: str = sys.executable) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONSAFEPATH", "PYTHONPATH")}
    return subprocess.run([python, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A fresh virtualenv's python with nothing installed: no .pth file imports `collections` (and so
    the standard `operator`) before the root is on sys.path, as this project's editable install does."""
    where = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True, timeout=120)
    return str(where / "bin" / "python")


def test_import_operator_from_the_root_is_the_standard_library(bare_python: str) -> None:
    code = (
        "import sys; assert sys.path[0] == '', sys.path[0]; "
        "assert 'operator' not in sys.modules, 'imported before the root was on sys.path'; "
        "import operator; from operator import eq, attrgetter; assert eq(1, 1); print(operator.__file__)"
    )
    done = run_from_root("-c", code, python=bare_python)
    assert done.returncode == 0, done.stderr
    assert not done.stdout.strip().startswith(str(ROOT)), done.stdout


def test_python_m_runs_from_the_root(bare_python: str) -> None:
    """`-m` imports runpy -> importlib.util -> contextlib -> collections -> operator, all from the root."""
    done = run_from_root("-m", "timeit", "-n", "1", "pass", python=bare_python)
    assert done.returncode == 0, done.stderr
    assert "loop" in done.stdout


def test_the_package_is_still_trunkline_operator() -> None:
    code = "import operator, trunkline.operator.platform as p; print(operator.__file__); print(p.__file__)"
    done = run_from_root("-c", code)
    assert done.returncode == 0, done.stderr
    stdlib_file, platform_file = done.stdout.split()
    assert not stdlib_file.startswith(str(ROOT)), stdlib_file
    assert Path(platform_file) == ROOT / "operator" / "platform.py"


def test_pip_runs_from_the_root_and_builds_the_editable_install() -> None:
    version = run_from_root("-m", "pip", "--version")
    assert version.returncode == 0, version.stderr
    # The build backend runs with the root as its working directory: metadata for an editable install.
    dry = run_from_root(
        "-m", "pip", "install", "--dry-run", "--no-deps", "--no-build-isolation", "--no-index", "-e", "."
    )
    assert dry.returncode == 0, dry.stderr
    assert "Would install trunkline" in dry.stdout


def test_python_m_pytest_runs_from_the_root() -> None:
    done = run_from_root("-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/unit/test_package_layout.py")
    assert done.returncode == 0, done.stdout + done.stderr
    assert " passed" in done.stdout
