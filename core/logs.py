"""Logging: stdlib logging with `key=value` context, one line per event, easy to grep and to ship."""

from __future__ import annotations

import logging
import sys
from typing import Any


class KeyValueFormatter(logging.Formatter):
    """`2026-11-22T04:16:28Z INFO trunkline.edge: call rejected trunk=acme rule=allowedPrefixes`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")
        self._stamp = (-1, "")  # (second, its text): the date format has no sub-second field

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        stamp = self._stamp
        if stamp[0] != second:
            stamp = self._stamp = (second, super().formatTime(record, datefmt))
        return stamp[1]

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields: dict[str, Any] | None = getattr(record, "fields", None)
        if fields:
            line += " " + " ".join(f"{k}={_quote(v)}" for k, v in fields.items())
        return line


def _quote(value: Any) -> str:
    text = str(value)
    return repr(text) if (" " in text or not text) else text


def setup(level: str = "INFO") -> None:
    # What our lines never show, LogRecord need not look up (thread, process; logging HOWTO,
    # "Optimization"): it is a hot path at one line per call.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def event(logger: logging.Logger, level: int, message: str, **fields: Any) -> None:
    """Log `message` with structured fields (rendered as key=value)."""
    logger.log(level, message, extra={"fields": fields})
