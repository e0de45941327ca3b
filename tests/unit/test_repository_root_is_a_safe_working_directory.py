"""Python run from the repository root puts the root on sys.path, where `operator/` is found as a
top-level `operator`: it must hand over to the standard library's module (pip, pytest and anything
else importing `operator` from the root work, with no PYTHONSAFEPATH)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_from_root(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONSAFEPATH", "PYTHONPATH")}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240
    )


def test_import_operator_from_the_root_is_the_standard_library() -> None:
    code = (
        "import sys, operator; assert sys.path[0] == '', sys.path[0]; "
        "from operator import eq, attrgetter; assert eq(1, 1); "
        "import trunkline.operator.platform as p; print(operator.__file__); print(p.__file__)"
    )
    done = run_from_root("-c", code)
    assert done.returncode == 0, done.stderr
    stdlib_file, platform_file = done.stdout.split()
    assert not stdlib_file.startswith(str(ROOT)), stdlib_file
    assert Path(platform_file) == ROOT / "operator" / "platform.py"


def test_the_root_folder_is_found_and_hands_over() -> None:
    """The shim itself runs (the root really shadows), and what `import operator` returns is stdlib's."""
    code = (
        "import importlib.util, operator; spec = importlib.util.find_spec('operator'); "
        "print(spec.origin if spec else ''); print(operator.__doc__.splitlines()[0])"
    )
    done = run_from_root("-c", code)
    assert done.returncode == 0, done.stderr
    found, doc = done.stdout.splitlines()
    assert found, "operator found nowhere"
    assert "trunkline" not in doc


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
