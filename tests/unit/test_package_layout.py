"""The folders are subpackages of one import package; nothing imports them as top-level modules."""

from __future__ import annotations

import ast
import importlib
import operator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ["trunkline", "core", "sip", "edge", "media", "control", "operator", "cdr"]


def test_folders_import_as_trunkline_subpackages() -> None:
    for folder in FOLDERS[1:]:
        module = importlib.import_module(f"trunkline.{folder}")
        assert Path(module.__file__ or "").parent == ROOT / folder
    assert not str(operator.__file__).startswith(str(ROOT)), "stdlib operator is shadowed"


def test_no_top_level_imports_of_our_folders() -> None:
    ours = set(FOLDERS[1:]) - {"operator"}  # `import operator` is the standard library's
    offenders = []
    for folder in FOLDERS:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    top = name.split(".")[0]
                    if top in ours or (top == "operator" and "." in name):
                        offenders.append(f"{path.relative_to(ROOT)}: import {name}")
    assert offenders == []


ALLOWED = {
    "core": ("trunkline.core",),
    "sip": ("trunkline.core", "trunkline.sip"),
    "edge": (
        "trunkline.core",
        "trunkline.sip",
        "trunkline.edge",
        "trunkline.media.v1",
        "trunkline.control.client",
    ),
    "media": ("trunkline.core", "trunkline.media", "trunkline.control.client"),
    "control": ("trunkline.core", "trunkline.control"),
    "operator": ("trunkline.core", "trunkline.operator"),
    "cdr": ("trunkline.core", "trunkline.cdr"),
}


def test_packages_import_only_what_the_architecture_allows() -> None:
    offenders = []
    for folder, allowed in ALLOWED.items():
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    ours = name.startswith("trunkline.")  # bare `trunkline` is the version, fine anywhere
                    if ours and not name.startswith(allowed):
                        offenders.append(f"{path.relative_to(ROOT)}: {name}")
    assert offenders == [], "see ARCHITECTURE.md, Invariants"
