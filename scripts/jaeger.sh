#!/usr/bin/env bash
# Make sure the Jaeger v2 binary (`jaeger`, OTLP receivers + in-memory storage + query API) the tests
# trace into is in <repo>/.cache/bin, building it from the Go module proxy only when missing.
# Prints "jaeger: cached" or "jaeger: built (N s)". Safe to run repeatedly, from any cwd.
set -euo pipefail

JAEGER_VERSION="${TRUNKLINE_JAEGER_VERSION:-v1.75.0}"  # the v2 binary ships from the v1.x module tags

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(git -C "$here" rev-parse --show-toplevel 2>/dev/null || (cd "$here/.." && pwd))"
cache="${TRUNKLINE_CACHE_DIR:-$root/.cache}"
bin="$cache/bin"
mkdir -p "$bin"

GO="${GO:-}"
if [[ -z "$GO" ]]; then
    if [[ -x /usr/local/go/bin/go ]]; then GO=/usr/local/go/bin/go; else GO="$(command -v go || true)"; fi
fi

if command -v flock >/dev/null; then
    exec 9>"$cache/.jaeger.lock"
    flock 9
fi

stamp="$bin/jaeger.version"
if [[ -x "$bin/jaeger" ]] && [[ "$(cat "$stamp" 2>/dev/null)" == "$JAEGER_VERSION" ]]; then
    echo "jaeger: cached ($JAEGER_VERSION)"
    exit 0
fi
[[ -n "$GO" ]] || { echo "jaeger.sh: no Go toolchain found (set GO=/path/to/go)" >&2; exit 1; }

# Module and build caches stay where Go keeps them for this user: a fresh clone rebuilds in seconds.
export GOFLAGS="-modcacherw" GOTOOLCHAIN=local CGO_ENABLED=0
start=$SECONDS
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# `go install module@version` refuses jaeger: its go.mod has a replace directive. So a wrapper module
# takes jaeger as a tool dependency (`go get -tool`) with jaeger's own replace lines copied over.
module="github.com/jaegertracing/jaeger"
wrap="$cache/jaeger-build"
mkdir -p "$wrap"
gomod="$(cd "$tmp" && "$GO" mod download -json "$module@$JAEGER_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
[[ -f "$gomod" ]] || { echo "jaeger.sh: go mod download $module@$JAEGER_VERSION gave no go.mod" >&2; exit 1; }
{
    echo "module trunkline.local/jaeger-build"
    echo
    grep -E '^go [0-9.]+$' "$gomod"
    echo
    grep -E '^replace .* => [^./][^ ]* v[^ ]+$' "$gomod" || true
} > "$wrap/go.mod"
rm -f "$wrap/go.sum"
(cd "$wrap" && "$GO" get -tool "$module/cmd/jaeger@$JAEGER_VERSION" &&
    "$GO" build -trimpath -ldflags=-s -o "$tmp/jaeger" "$module/cmd/jaeger")
mv "$tmp/jaeger" "$bin/jaeger"
echo "$JAEGER_VERSION" > "$stamp"
echo "jaeger: built ($JAEGER_VERSION, $((SECONDS - start)) s)"
