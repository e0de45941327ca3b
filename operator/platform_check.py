"""`trunkline platform-check --platform NS/NAME [--control-url URL] [--timeout SECONDS]`: the chart's
`helm test`. Exit 0 when the operator has applied the platform as it is now and control answers;
exit 1 with the reason otherwise (the same words as the operator's Event), never a traceback.

It reads the platform ConfigMap (its ServiceAccount may `get` that one ConfigMap and nothing else):
1. its `platform.yaml` through the operator's own model: a platform the model refuses fails at once;
2. the operator's verdict on exactly this content (operator/verdict.py), waited for until the timeout
   (the operator re-reads the platform every resync): a refusal fails with its reason, no verdict
   fails as "is the operator running?";
3. with --control-url, control's /readyz until it answers 200.
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from kubernetes.client.exceptions import ApiException

from trunkline.operator.kube import Kube, connect
from trunkline.operator.main import _platform_ref, _seconds
from trunkline.operator.platform import parse_platform
from trunkline.operator.verdict import platform_checksum, read_verdict

POLL = 2.0


class CheckFailed(Exception):
    """The platform is not (yet) working: the message says why."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trunkline platform-check",
        description="helm test: fail with the reason unless the operator applied the platform and "
        "control is ready.",
    )
    parser.add_argument("--platform", type=_platform_ref, required=True, metavar="NS/NAME",
                        help="the platform ConfigMap")  # fmt: skip
    parser.add_argument(
        "--control-url", metavar="URL", help="control's /readyz, e.g. http://tl-control:8080/readyz"
    )
    parser.add_argument("--timeout", type=_seconds, default=120.0, metavar="SECONDS",
                        help="wait for the verdict and control this long (default 120)")  # fmt: skip
    return parser


def judge(configmap: dict[str, Any] | None, where: str) -> bool:
    """True: applied; False: no verdict on this content yet; CheckFailed: refused or unreadable."""
    if configmap is None:
        raise CheckFailed(f"platform ConfigMap {where} not found")
    try:
        parse_platform(configmap.get("data"))
    except ValueError as exc:
        raise CheckFailed(f"platform {where} refused: {exc}") from None
    found = read_verdict(configmap)
    if found is None or found.checksum != platform_checksum(configmap):
        return False  # none yet, or on the content before an upgrade
    if not found.applied:
        raise CheckFailed(f"platform {where} refused by the operator: {found.message}")
    return True


def wait_applied(read: Callable[[], dict[str, Any] | None], where: str, deadline: float) -> None:
    while not judge(read(), where):
        if time.monotonic() >= deadline:
            name = where.split("/")[1]
            raise CheckFailed(
                f"the operator has not applied platform {where} as it is now (is the operator running? its "
                f"log and `kubectl get events --field-selector involvedObject.name={name}` say more)"
            )
        time.sleep(POLL)


def wait_ready(url: str, deadline: float) -> None:
    while True:
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                if response.status == 200:
                    return
                last = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except OSError as exc:
            last = str(exc)
        if time.monotonic() >= deadline:
            raise CheckFailed(f"platform applied, but control never answered {url}: {last}")
        time.sleep(POLL)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    namespace, name = args.platform
    where = f"{namespace}/{name}"
    deadline = time.monotonic() + args.timeout
    try:
        kube = Kube(connect())
        wait_applied(lambda: kube.get("v1", "ConfigMap", namespace, name), where, deadline)
        print(f"platform {where}: applied by the operator")
        if args.control_url:
            wait_ready(args.control_url, deadline)
            print(f"control ready: {args.control_url}")
    except CheckFailed as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    except ApiException as exc:
        print(f"FAILED: cannot read platform ConfigMap {where}: {exc.status} {exc.reason}", file=sys.stderr)
        return 1
    except Exception as exc:  # e.g. no kubeconfig: one line, not a traceback
        print(f"FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0
