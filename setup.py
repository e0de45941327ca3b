"""The SIP core compiled to C extensions by mypyc (pyproject.toml holds everything else).

Every SIP message an edge handles goes through these modules (sip/compiled.py lists them: parsing,
headers, URIs, transactions, SDP, the flood guard): compiled, an edge runs a call in ~25% fewer
instructions (bench/README-edge.md, "The SIP core compiled"). The sources stay plain typed Python, the
same code whether compiled or not: where no C compiler or Python headers are found, or with
TRUNKLINE_PURE=1, the package installs without the extensions and runs the .py files.

mypyc names a module from its path, so it compiles a tree of links laid out as the installed
package is (build/mypyc/trunkline/sip -> sip), as scripts/typecheck.sh does for mypy.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

from setuptools import Extension, setup


def compiled_list(root: Path, name: str = "COMPILED") -> list[str]:
    """`COMPILED` (or `INTERPRETED`) of sip/compiled.py, read without importing the package."""
    for node in ast.parse((root / "sip" / "compiled.py").read_text()).body:
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == name:
            return list(ast.literal_eval(node.value))
    raise RuntimeError(f"sip/compiled.py names no {name} modules")


def compiled_sip_core() -> list[Extension]:
    if os.environ.get("TRUNKLINE_PURE") == "1":
        return []
    from mypyc.build import mypycify

    root = Path(__file__).resolve().parent
    tree = root / "build" / "mypyc" / "trunkline"
    (tree / "sip").mkdir(parents=True, exist_ok=True)
    links = {tree / name: root / "trunkline" / name for name in ("__init__.py", "py.typed")}
    modules = compiled_list(root)
    read_only = compiled_list(root, "INTERPRETED")  # imported by the compiled modules, not compiled
    links |= {tree / "sip" / f"{m}.py": root / "sip" / f"{m}.py" for m in ["__init__", *modules, *read_only]}
    for link, target in links.items():
        link.unlink(missing_ok=True)  # made afresh: a copied or moved checkout's would point elsewhere
        link.symlink_to(target)
    sources = [str((tree / "sip" / f"{m}.py").relative_to(root)) for m in modules]
    # Its own mypy settings: pyproject's load the pydantic plugin, which the build environment lacks.
    config = tree.parent / "mypy.ini"
    config.write_text("[mypy]\nstrict = True\n")
    os.chdir(root)  # mypycify takes paths relative to the project
    extensions: list[Extension] = mypycify(
        [f"--config-file={config}", *sources],
        opt_level="3",
        group_name="trunkline.sip_compiled",
        target_dir="build/mypyc-c",
    )
    for extension in extensions:
        # No compiler or headers: the build goes on without the extensions (pure Python).
        extension.optional = True
    return extensions


setup(ext_modules=compiled_sip_core())
