"""The Dockerfile's Python steps, replayed without Docker (no container runtime or base image here):
copy what its COPY lines copy, `pip wheel` that tree, install the wheel into a fresh virtualenv, and
run every component's entry point from there, outside the repository. A file or package the image
would miss (a generated `v1` module, a subpackage left out of `pyproject.toml`) fails here."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import sysconfig
from fnmatch import fnmatch
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def context_paths() -> list[str]:
    """What `COPY . .` takes from a checkout: its top-level entries that .dockerignore does not name
    (tests/k8s/images.sh builds its context from the same folders)."""
    lines = (REPO / ".dockerignore").read_text().splitlines()
    ignored = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    return sorted(p.name for p in REPO.iterdir() if not any(fnmatch(p.name, pattern) for pattern in ignored))


def copied_paths(dockerfile: str) -> list[str]:
    """The sources of the build stage's `COPY <src>... <dest>` lines (not `COPY --from=`); `.` is the
    build context."""
    paths = []
    for line in dockerfile.splitlines():
        m = re.match(r"COPY\s+(?!--)(.+)\s+\S+$", line.strip())
        if m:
            paths += m.group(1).split()
    return [entry for path in paths for entry in (context_paths() if path == "." else [path])]


def test_the_dockerfile_copies_exactly_the_package_folders() -> None:
    paths = copied_paths((REPO / "Dockerfile").read_text())
    package_dirs = re.findall(r'"trunkline[.\w]*" = "(\w+)"', (REPO / "pyproject.toml").read_text())
    # setup.py: the compiled SIP core (mypyc)
    assert {p.rstrip("/") for p in paths} == {"pyproject.toml", "setup.py", "README.md", *package_dirs}


def test_the_wheel_built_like_the_image_runs_every_component(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for path in copied_paths((REPO / "Dockerfile").read_text()):
        origin = REPO / path.rstrip("/")
        if origin.is_dir():
            shutil.copytree(origin, source / origin.name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(origin, source / origin.name)
    pip = [sys.executable, "-m", "pip"]
    wheels = str(tmp_path / "wheels")
    # "./src", not "src": a bare name is a requirement, and PyPI has a project called src.
    built = subprocess.run([*pip, "wheel", "-q", "--no-deps", "--wheel-dir", wheels, "./src"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    [wheel] = (tmp_path / "wheels").glob("trunkline-*.whl")

    image = tmp_path / "image"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(image)], check=True, timeout=60)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(image), "platbase": str(image)}))
    # The dependencies come from the test environment (the image installs them from the same index);
    # trunkline itself only from the wheel: a .pth line adds a path but runs none of its .pth files, so
    # the editable install of the checkout stays out.
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    installed = subprocess.run([*pip, "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                               capture_output=True, text=True, timeout=120)  # fmt: skip
    assert installed.returncode == 0, installed.stdout + installed.stderr

    python = str(image / "bin" / "python")
    where = subprocess.run([python, "-c", "import trunkline; print(trunkline.__file__)"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert where.stdout.strip().startswith(str(site)), where.stdout + where.stderr

    def trunkline(*args: str) -> subprocess.CompletedProcess[str]:  # the image's ENTRYPOINT
        command = [python, "-c", "from trunkline.cli import main; main()", *args]
        return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)

    for component in ("control", "edge", "media", "operator", "cdr", "platform-check"):  # the helm test too
        run = trunkline(component, "--help")
        assert run.returncode == 0 and "usage: trunkline" in run.stdout, run.stdout + run.stderr
    validate = trunkline("validate", "-f", str(REPO / "examples"))
    assert validate.returncode == 0 and validate.stdout.startswith("ok: "), validate.stdout + validate.stderr
