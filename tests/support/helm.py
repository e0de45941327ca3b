"""The chart rendered by the real helm binary (no cluster needed), and lookups in what it renders."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "trunkline"
HELM = Path(os.environ.get("HELM", ROOT / ".cache" / "bin" / "helm"))


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert HELM.exists(), f"no helm binary at {HELM}: scripts/test.sh (tests/e2e/cluster.sh) fetches it"
    return subprocess.run([str(HELM), *args], capture_output=True, text=True, check=check, timeout=60)


def render(*sets: str, namespace: str = "voice", values: Path | None = None) -> list[dict[str, Any]]:
    """`helm template tl` with `--set` for each of `sets` (and a values file); the objects."""
    args = [f"--set={s}" for s in sets] + (["--values", str(values)] if values else [])
    out = helm("template", "tl", str(CHART), "--namespace", namespace, *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    (doc,) = find(docs, kind, name)
    return doc
