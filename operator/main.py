"""`trunkline operator [--namespace NS ... | --all-namespaces] [--standalone] [--platform NS/NAME]
[--redis URL [--counts-interval SECONDS]]`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

import kopf

from trunkline.core import observability
from trunkline.core.net import ConfigError
from trunkline.core.state_redis import RedisStore, RedisTarget, add_redis_arguments, redis_target
from trunkline.operator.handlers import State, registry


def _platform_ref(value: str) -> tuple[str, str]:
    namespace, sep, name = value.partition("/")
    if not sep or not namespace or not name:
        raise argparse.ArgumentTypeError(f"expected NAMESPACE/NAME, got {value!r}")
    return namespace, name


def _seconds(value: str) -> float:
    seconds = float(value)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {value!r}")
    return seconds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trunkline operator",
        description="Reconcile Trunks, DIDs and Carriers, and deploy the data plane.",
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", dest="namespaces", metavar="NS",
                       help="watch this namespace (repeatable)")  # fmt: skip
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="watch every namespace (the default)"
    )
    parser.add_argument("--standalone", action="store_true", help="no peering with other operator replicas")
    parser.add_argument(
        "--platform", type=_platform_ref, metavar="NS/NAME", default=os.environ.get("TRUNKLINE_PLATFORM"),
        help="the platform ConfigMap (env TRUNKLINE_PLATFORM); without it no data plane is deployed",
    )  # fmt: skip
    parser.add_argument("--drain-grace", type=float, default=300.0, metavar="SECONDS",
                        help="how long live calls of a deleted trunk may last (default 300)")  # fmt: skip
    parser.add_argument("--resync", type=float, default=60.0, metavar="SECONDS",
                        help="period of the full re-apply and re-check (default 60)")  # fmt: skip
    add_redis_arguments(
        parser,
        "the edges' shared store (redis://, rediss://, sentinel://; env TRUNKLINE_REDIS_URL; a password "
        "from env TRUNKLINE_REDIS_PASSWORD): each Trunk's status then shows its active calls and registered "
        "contacts, and a drain waits for its calls. Without it the status has no counts and a drain ends "
        "at once",
    )
    parser.add_argument("--counts-interval", type=_seconds, default=15.0, metavar="SECONDS",
                        help="how often each Trunk's counts are read from --redis (default 15)")  # fmt: skip
    parser.add_argument(
        "--liveness", metavar="URL", help="serve health here, e.g. http://0.0.0.0:8080/healthz"
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    observability.add_arguments(parser)
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)  # a string default goes through `type` too


def configure_logging(verbose: bool, level: str) -> None:
    """kopf's logging at the platform's level (`trunkline --log-level`, $TRUNKLINE_LOG_LEVEL);
    --verbose still means debug."""
    level = "DEBUG" if verbose else level.upper()
    kopf.configure(verbose=level == "DEBUG", quiet=level in ("WARNING", "ERROR"))
    root = logging.getLogger()
    root.handlers[:] = root.handlers[-1:]  # kopf's own, added last: not a second copy of every line
    if level == "ERROR":
        root.setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    level = "DEBUG" if args.verbose else (os.environ.get("TRUNKLINE_LOG_LEVEL") or "INFO").upper()
    configure_logging(args.verbose, level)
    try:  # after kopf's: our handler and format replace the ones kopf just set
        observability.configure("operator", args, level)
    except ConfigError as exc:
        print(f"trunkline operator: {exc}", file=sys.stderr)
        return 2
    store = None
    try:
        redis: RedisTarget | None = redis_target(args)
        if redis is not None:
            # Only a client here: it connects on first use, in the operator's event loop.
            store = RedisStore.from_target(redis)
    except ValueError as exc:
        print(f"trunkline operator: {exc}", file=sys.stderr)
        return 2
    state = State(
        platform=args.platform, drain_grace=args.drain_grace, resync=args.resync,
        store=store, counts_interval=args.counts_interval,
    )  # fmt: skip
    asyncio.run(
        kopf.operator(
            registry=registry,
            standalone=args.standalone,
            clusterwide=not args.namespaces,
            namespaces=args.namespaces or (),
            liveness_endpoint=args.liveness,
            memo=kopf.Memo(state=state),
        )
    )
    return 0
