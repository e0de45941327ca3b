"""The `trunkline` command.

  trunkline validate -f PATH...   check manifests (files or folders of multi-document YAML)
  trunkline up -f PATH...         the embedded default: control + edge + media in one process
  trunkline control|edge|media|cdr  one component per process, as run in Kubernetes
  trunkline operator              the Kubernetes operator (kopf)
  trunkline platform-check        the chart's `helm test`: platform applied by the operator, control ready

Every error a user can cause is one readable line and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, NoReturn

from trunkline import __version__
from trunkline.core import emergency, logs, observability, trunk_defaults
from trunkline.core.manifests import load, security_warnings
from trunkline.core.net import ConfigError
from trunkline.core.runner import run
from trunkline.core.state_redis import add_redis_arguments, redis_target


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (`trunkline up: error: ...`), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_files(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument(
        "-f", "--filename", dest="files", action="extend", nargs="+", required=required, metavar="PATH",
        help="manifest file or folder (every *.yaml/*.yml inside); repeatable",
    )  # fmt: skip


def cmd_validate(args: argparse.Namespace) -> int:
    config, problems = load(args.files)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s)")
        return 1
    for warning in security_warnings(config):
        print(warning)
    print(f"ok: {config.summary()}")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from trunkline.up import UpOptions, up

    try:  # the same flags, files and checks as the edge's and the relay's
        redis = redis_target(args)
        defaults = trunk_defaults.from_arguments(args)
        numbers = emergency.from_arguments(args)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    opts = UpOptions(
        files=args.files, sip_listen=args.sip_listen, tls_listen=args.tls_listen, tls_cert=args.tls_cert,
        tls_key=args.tls_key, media_listen=args.media_listen, media_ports=args.media_ports,
        http_listen=args.http_listen, advertise=args.advertise, redis=redis, grace=args.grace,
        cdr=args.cdr, relay=not args.no_relay, emergency_numbers=numbers, trunk_defaults=defaults,
    )  # fmt: skip
    return _run_async(lambda: up(opts))


def cmd_ladder(args: argparse.Namespace) -> int:
    from trunkline.ladder import LadderError, ladder

    try:
        print(ladder(args.ident, args.jaeger, args.otlp_file, args.html), end="")
    except LadderError as exc:
        print(f"trunkline ladder: {exc}", file=sys.stderr)
        return 1
    return 0


def _run_async(main: Callable[[], Coroutine[Any, Any, object]]) -> int:
    result = run(main())
    return int(result) if isinstance(result, int) else 0


COMPONENTS = {
    "control": ("the control service (config snapshots, relay directory)", "trunkline.control.server"),
    "edge": ("a SIP edge (B2BUA)", "trunkline.edge.server"),
    "media": ("a media relay", "trunkline.media.server"),
    "operator": ("the Kubernetes operator (kopf)", "trunkline.operator.main"),
    "cdr": ("the CDR exporter (store stream -> JSON lines, PostgreSQL, webhook)", "trunkline.cdr.server"),
    "platform-check": (
        "helm test: is the platform applied and control ready",
        "trunkline.operator.platform_check",
    ),
}


def run_component(name: str, argv: list[str]) -> int:
    """`trunkline control|edge|media|operator ARGS`: the component's own `main(argv)` parses ARGS."""
    main = importlib.import_module(COMPONENTS[name][1]).main
    return int(main(argv) or 0)


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_LEVEL_ENV = "TRUNKLINE_LOG_LEVEL"  # what the operator's pods set; every component reads it


class UsageError(Exception):
    """A bad global flag: one line, exit 2."""


def take_log_level(words: list[str]) -> tuple[str | None, list[str]]:
    """`--log-level X` or `--log-level=X` anywhere before a `--` (before or after the command), and
    the other words. The global flag is taken out here, so no component's own parser has to know it."""
    level, rest, i = None, [], 0
    while i < len(words):
        word = words[i]
        if word == "--":
            rest += words[i:]
            break
        if word == "--log-level" or word.startswith("--log-level="):
            if "=" in word:
                value = word.split("=", 1)[1]
            elif i + 1 < len(words):
                value, i = words[i + 1], i + 1
            else:
                raise UsageError("--log-level needs a value")
            level = check_log_level(value, "--log-level")
        else:
            rest.append(word)
        i += 1
    return level, rest


def check_log_level(value: str, where: str) -> str:
    if value.upper() not in LOG_LEVELS:
        choices = ", ".join(level.lower() for level in LOG_LEVELS)
        raise UsageError(f"{where}: {value!r} is not one of {choices}")
    return value.upper()


def build_parser(log_level: str = "INFO") -> argparse.ArgumentParser:
    parser = _Parser(prog="trunkline", description="Kubernetes-native, distributed SIP trunking.")
    parser.add_argument("--version", action="version", version=f"trunkline {__version__}")
    parser.add_argument(
        "--log-level", default=log_level, type=str.upper, choices=LOG_LEVELS, metavar="LEVEL",
        help=f"debug, info, warning or error; before or after the command (default: ${LOG_LEVEL_ENV}, info)",
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    validate = sub.add_parser("validate", help="check manifests and exit")
    _add_files(validate)
    observability.add_arguments(validate)
    validate.set_defaults(run=cmd_validate)

    up = sub.add_parser("up", help="run control, edge and media in one process (the embedded default)")
    _add_files(up)
    up.add_argument(
        "--sip-listen", default="127.0.0.1:5060", metavar="HOST:PORT", help="SIP over UDP and TCP"
    )
    up.add_argument("--tls-listen", metavar="HOST:PORT", help="SIP over TLS (needs --tls-cert, --tls-key)")
    up.add_argument("--tls-cert", metavar="FILE", help="PEM certificate chain for SIP over TLS")
    up.add_argument("--tls-key", metavar="FILE", help="PEM private key for SIP over TLS")
    up.add_argument(
        "--media-listen", default="127.0.0.1", metavar="HOST", help="relay address (bind and SDP)"
    )
    up.add_argument("--media-ports", default="20000-20999", metavar="LO-HI", help="relay port range")
    up.add_argument(
        "--http-listen", default="127.0.0.1:8080", metavar="HOST:PORT", help="/healthz /readyz /metrics"
    )
    up.add_argument(
        "--advertise", metavar="HOST[:PORT]", help="address written into SIP and SDP, if not the listen one"
    )
    add_redis_arguments(up, "shared state in Redis instead of memory (redis://, rediss://, sentinel://)")
    up.add_argument(
        "--grace", type=float, default=30.0, metavar="SECONDS", help="how long live calls may finish"
    )
    up.add_argument("--cdr", metavar="PATH", help="append one JSON line per call ('-': standard output)")
    up.add_argument(
        "--no-relay", action="store_true",
        help="no media anchoring: SDP keeps the parties' addresses (codec and SRTP rules still apply)",
    )  # fmt: skip
    emergency.add_arguments(up)
    trunk_defaults.add_arguments(up)
    observability.add_arguments(up)
    up.set_defaults(run=cmd_up)

    ladder = sub.add_parser("ladder", help="a call's SIP message sequence chart, from its trace")
    ladder.add_argument("ident", metavar="CALL-ID|TRACE-ID", help="a Call-ID of either leg, or a trace id")
    source = ladder.add_mutually_exclusive_group(required=True)
    source.add_argument("--jaeger", metavar="URL", help="Jaeger's query address, e.g. http://127.0.0.1:16686")
    source.add_argument("--otlp-file", metavar="FILE", help="OTLP/JSON traces (a collector's file exporter)")
    ladder.add_argument("--html", metavar="OUT", help="also write a self-contained page with span timing")
    observability.add_arguments(ladder)
    ladder.set_defaults(run=cmd_ladder)

    for name, (what, _) in COMPONENTS.items():
        sub.add_parser(name, help=f"{what}, as its own process (see trunkline {name} --help)", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        level, words = take_log_level(list(sys.argv[1:] if argv is None else argv))
        level = level or check_log_level(os.environ.get(LOG_LEVEL_ENV) or "INFO", f"${LOG_LEVEL_ENV}")
    except UsageError as exc:
        print(f"trunkline: error: {exc} (see trunkline --help)", file=sys.stderr)
        return 2
    # Components read the level from the environment (their own flags default to it).
    os.environ[LOG_LEVEL_ENV] = level
    logs.setup(level)
    if words and words[0] in COMPONENTS:
        return run_component(words[0], words[1:])
    args = build_parser(level).parse_args(words)
    try:
        observability.configure(args.command, args, args.log_level)
        return int(args.run(args))
    except ConfigError as exc:
        print(f"trunkline {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
