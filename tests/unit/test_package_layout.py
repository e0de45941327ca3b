"""The folders are subpackages of one import package; nothing imports them as top-level modules."""

from __future__ import annotations

import ast
import importlib
import operator
import subprocess
import sys
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


# The edge's rooms (ARCHITECTURE.md, "The edge in rooms"): each one concern, importable alone; the
# shared ones (call model, context, ending, session timers) are what the others may import.
ROOMS = ["call", "context", "ending", "session_timers", "auth", "new_call", "admission", "attempts",
         "in_dialog", "adoption", "b2bua"]  # fmt: skip
SHARED_ROOMS = {"call", "context", "ending", "session_timers"}
# Modules over the limit, and why: the relay client holds the gRPC calls and their batching; the
# resolver is RFC 3263 (NAPTR, SRV, A/AAAA) with its cache; the server wires processes and flags.
EDGE_SIZE_EXCEPTIONS = {"media.py", "resolver.py", "server.py"}


def test_each_room_of_the_edge_imports_alone_in_a_fresh_interpreter() -> None:
    started = {
        room: subprocess.Popen(
            [sys.executable, "-P", "-c", f"import trunkline.edge.{room}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for room in ROOMS
    }
    failed = {}
    for room, proc in started.items():
        _, err = proc.communicate(timeout=300)
        if proc.returncode != 0:
            failed[room] = err
    assert failed == {}


def test_rooms_import_only_the_shared_rooms() -> None:
    offenders = []
    for room in ROOMS[:-1]:  # b2bua is the coordinator: it imports them all
        path = ROOT / "edge" / f"{room}.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("trunkline.edge."):
                name = node.module.removeprefix("trunkline.edge.")
                if (name in ROOMS and name not in SHARED_ROOMS) or name == "b2bua":
                    offenders.append(f"{room} imports {name}")
    assert offenders == []


def test_edge_modules_stay_under_300_lines() -> None:
    long = [
        f"{path.name}: {len(path.read_text().splitlines())} lines"
        for path in (ROOT / "edge").glob("*.py")
        if len(path.read_text().splitlines()) >= 300 and path.name not in EDGE_SIZE_EXCEPTIONS
    ]
    assert long == []


def test_core_imports_nothing_of_ours_not_even_the_version() -> None:
    offenders = []
    for path in (ROOT / "core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "trunkline":
                offenders.append(str(path.relative_to(ROOT)))
            if isinstance(node, ast.Import) and any(alias.name == "trunkline" for alias in node.names):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_the_version_core_reports_is_the_packages() -> None:
    from trunkline import __version__
    from trunkline.core.http import package_version

    assert package_version() == __version__
