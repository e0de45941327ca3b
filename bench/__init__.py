"""Benchmarks: `python -m bench.NAME` from the repository root; they share tests/support."""
