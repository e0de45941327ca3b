"""`trunkline cdr`: run the CDR exporter as its own process (the operator's `cdr` Deployment).

Secrets never go on the command line: the PostgreSQL DSN comes from $TRUNKLINE_CDR_POSTGRES_DSN (or
--postgres-dsn-file), the webhook secret from --webhook-secret-file or $TRUNKLINE_CDR_WEBHOOK_SECRET.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry

from trunkline.cdr.exporter import Exporter, ExporterSettings
from trunkline.cdr.sinks import JsonLinesSink, PostgresSink, Sink, WebhookSink
from trunkline.core.cdr import DEFAULT_STREAM
from trunkline.core.http import OpsServer
from trunkline.core.net import ConfigError, tcp_listener
from trunkline.core.runner import run, run_until_signalled
from trunkline.core.state_redis import add_redis_arguments, redis_target


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="trunkline cdr", description="Export CDRs from the store's stream.")
    add_redis_arguments(p, "the store (default: $TRUNKLINE_REDIS_URL or the sentinels)")
    p.add_argument("--stream", default=os.environ.get("TRUNKLINE_CDR_STREAM", DEFAULT_STREAM),
                   help="the CDR stream key (default: $TRUNKLINE_CDR_STREAM or trunkline:cdr)")  # fmt: skip
    p.add_argument("--group", default="trunkline-cdr", help="the consumer group every replica joins")
    p.add_argument("--consumer", default=os.environ.get("POD_NAME") or socket.gethostname(),
                   help="this replica's name in the group (default: $POD_NAME or the host name)")  # fmt: skip
    p.add_argument("--batch", type=int, default=500, help="CDRs per sink write (1-10000)")
    p.add_argument("--claim-idle", type=float, default=60.0, metavar="SECONDS",
                   help="take over another consumer's unacknowledged entries after this long")  # fmt: skip
    p.add_argument("--jsonl", metavar="PATH", help="write JSON lines to PATH ('-': standard output)")
    p.add_argument(
        "--jsonl-max-bytes", type=int, default=100 * 1024 * 1024, help="rotate the file at this size"
    )
    p.add_argument("--jsonl-keep", type=int, default=5, help="rotated files kept (PATH.1 ... PATH.N)")
    p.add_argument("--postgres", action="store_true", help="write to PostgreSQL (DSN from the env or a file)")
    p.add_argument("--postgres-dsn-file", metavar="FILE", help="a file holding the PostgreSQL DSN")
    p.add_argument("--webhook-url", metavar="URL", help="POST batches of CDRs here (signed)")
    p.add_argument(
        "--webhook-secret-file", metavar="FILE", help="HMAC key (else $TRUNKLINE_CDR_WEBHOOK_SECRET)"
    )
    p.add_argument("--webhook-attempts", type=int, default=4, help="tries per batch before backing off")
    p.add_argument(
        "--http-listen",
        default=os.environ.get("TRUNKLINE_HTTP_LISTEN", "127.0.0.1:8080"),
        metavar="HOST:PORT",
        help="/healthz /readyz /metrics (default: $TRUNKLINE_HTTP_LISTEN)",
    )
    p.add_argument("--grace", type=float, default=20.0, metavar="SECONDS", help="time to finish a batch")
    return p


def _read_secret(path: str, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{what} {path}: {exc.strerror or exc}") from exc


def build_sinks(args: argparse.Namespace, env: dict[str, str]) -> list[Sink]:
    sinks: list[Sink] = []
    if args.jsonl:
        sinks.append(JsonLinesSink(args.jsonl, args.jsonl_max_bytes, args.jsonl_keep))
    if args.postgres or args.postgres_dsn_file:
        if args.postgres_dsn_file:
            dsn = _read_secret(args.postgres_dsn_file, "--postgres-dsn-file")
        else:
            dsn = env.get("TRUNKLINE_CDR_POSTGRES_DSN", "")
        if not dsn:
            raise ConfigError("--postgres: no DSN ($TRUNKLINE_CDR_POSTGRES_DSN or --postgres-dsn-file)")
        sinks.append(PostgresSink(dsn))
    if args.webhook_url:
        if args.webhook_secret_file:
            secret = _read_secret(args.webhook_secret_file, "--webhook-secret-file")
        else:
            secret = env.get("TRUNKLINE_CDR_WEBHOOK_SECRET", "")
        sinks.append(WebhookSink(args.webhook_url, secret.encode(), attempts=args.webhook_attempts))
    if not sinks:
        raise ConfigError("no sink: give --jsonl, --postgres and/or --webhook-url")
    return sinks


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    env = dict(os.environ)
    try:
        try:
            target = redis_target(args)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if target is None:
            raise ConfigError("no store: --redis URL or $TRUNKLINE_REDIS_URL")
        sinks = build_sinks(args, env)
        http = tcp_listener(args.http_listen, "--http-listen")
    except ConfigError as exc:
        print(f"trunkline cdr: error: {exc}", file=sys.stderr)
        return 1
    settings = ExporterSettings(
        stream=args.stream, group=args.group, consumer=args.consumer, batch=args.batch,
        claim_idle=args.claim_idle,
    )  # fmt: skip

    async def serve() -> int:
        # Reads block for up to a second: the client's timeout must outlast them.
        redis = target.connect(timeout=settings.block + 5.0)
        registry = CollectorRegistry()
        exporter = Exporter(redis, sinks, settings, registry)
        try:
            return await run_until_signalled([exporter], OpsServer(http, [exporter], registry), args.grace)
        finally:
            await redis.aclose()

    try:
        return run(serve())
    except ConfigError as exc:
        print(f"trunkline cdr: error: {exc}", file=sys.stderr)
        return 1
