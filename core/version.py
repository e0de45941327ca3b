"""This installation's version, from package metadata."""

from __future__ import annotations

from importlib import metadata


def package_version() -> str:
    """The installed distribution's version (core imports nothing of ours, not even `trunkline`)."""
    try:
        return metadata.version("trunkline")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"
