"""The observability flags every trunkline command takes, and applying them at process start:
`--log-format text|json` (env TRUNKLINE_LOG_FORMAT; default text, json in the chart) and
`--otlp-endpoint URL` (trace to this OTLP endpoint; else the OTEL_* environment decides)."""

from __future__ import annotations

import argparse
import os

from trunkline.core import logs, telemetry
from trunkline.core.net import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-format", choices=logs.FORMATS, default=os.environ.get("TRUNKLINE_LOG_FORMAT") or "text",
        help="log lines as logfmt text or JSON (default: $TRUNKLINE_LOG_FORMAT, else text)",
    )  # fmt: skip
    parser.add_argument(
        "--otlp-endpoint", metavar="URL",
        help="send traces here over OTLP, e.g. http://127.0.0.1:4317 (default: $OTEL_EXPORTER_OTLP_"
        "[TRACES_]ENDPOINT; tracing is off without one)",
    )  # fmt: skip


def configure(component: str, args: argparse.Namespace, level: str | None = None) -> bool:
    """Set up logging and tracing for this process; True when tracing is on. ConfigError for a bad
    TRUNKLINE_LOG_FORMAT or OTLP protocol. The level: given, else `trunkline --log-level` (which the
    CLI puts in $TRUNKLINE_LOG_LEVEL for every component), else INFO."""
    try:
        logs.setup(level or os.environ.get("TRUNKLINE_LOG_LEVEL") or "INFO", args.log_format)
        return telemetry.setup(component, args.otlp_endpoint)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
