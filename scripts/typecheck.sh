#!/usr/bin/env bash
# mypy --strict on the whole `trunkline` package. mypy does not follow setuptools' package-dir mapping,
# so it checks a tree of links laid out as the installed package is (build/typecheck/trunkline/...).
set -euo pipefail
cd "$(dirname "$0")/.."
tree=build/typecheck/trunkline
rm -rf build/typecheck && mkdir -p "$tree"
for f in trunkline/*.py trunkline/py.typed; do ln -s "../../../$f" "$tree/$(basename "$f")"; done
for d in core sip edge media control operator cdr; do ln -s "../../../$d" "$tree/$d"; done
exec .venv/bin/mypy --strict -p trunkline "$@"
