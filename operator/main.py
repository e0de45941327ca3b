"""`trunkline operator [--namespace NS ... | --all-namespaces] [--standalone] [--platform NS/NAME]`."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import kopf

from trunkline.operator.handlers import State, registry


def _platform_ref(value: str) -> tuple[str, str]:
    namespace, sep, name = value.partition("/")
    if not sep or not namespace or not name:
        raise argparse.ArgumentTypeError(f"expected NAMESPACE/NAME, got {value!r}")
    return namespace, name


def parse_args(argv: list[str] | None) -> argparse.Namespace:
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
    parser.add_argument(
        "--liveness", metavar="URL", help="serve health here, e.g. http://0.0.0.0:8080/healthz"
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_args(argv)  # a string default goes through `type` too


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    kopf.configure(verbose=args.verbose)
    state = State(platform=args.platform, drain_grace=args.drain_grace, resync=args.resync)
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
