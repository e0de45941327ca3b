"""Which of the SIP core's modules run compiled (mypyc's C extensions, built by setup.py)."""

from __future__ import annotations

import importlib
import importlib.machinery

# The modules setup.py compiles (it reads this list): the SIP core, standard library imports only.
COMPILED = (
    "grammar", "uri", "headers", "message", "transaction", "sdp", "dialog", "ids", "errors", "refusal",
    "flood",
)  # fmt: skip
# Imported by the compiled modules but run as Python (setup.py links them for mypyc to read, not to
# compile): `peer_log` subclasses logging.Filter, a Python class mypyc compiles no subclass of.
INTERPRETED = ("peer_log",)


def compiled_modules() -> list[str]:
    """Those of `COMPILED` loaded from an extension; empty for a pure-Python install (no compiler or
    Python headers at install time, or TRUNKLINE_PURE=1)."""
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    return [
        name
        for name in COMPILED
        if str(getattr(importlib.import_module(f"trunkline.sip.{name}"), "__file__", "")).endswith(suffixes)
    ]
