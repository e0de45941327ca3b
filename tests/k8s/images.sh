#!/usr/bin/env bash
# Build the images of tests/k8s without a registry and import them into a containerd:
#   localhost/pybase:bookworm   Debian 12 minbase + python3 (mmdebstrap), cached by its recipe
#   localhost/pybuild:bookworm  the same + binutils: the Dockerfile's build stage (strip)
#   localhost/trunkline:<hash>  the repo's Dockerfile on that base (buildah, offline: prebuilt wheels)
#   localhost/pause:3.10        the pod sandbox (tests/k8s/pause.go, built by cluster.sh --node)
#   localhost/redis:bookworm-*  Debian 12 minbase + redis-server (mmdebstrap), for the tests' Redis
# Usage: images.sh [CONTAINERD_SOCKET]   (no socket: build only).
# Prints `trunkline-image: NAME` and `redis-image: NAME`.
# Everything slow is cached under <repo>/.cache/images, keyed by a hash of its inputs.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cache="${TRUNKLINE_CACHE_DIR:-$root/.cache}"
out="$cache/images"
sock="${1:-}"
mkdir -p "$out"
exec 8>"$out/.lock"
flock 8
log() { printf '%s\n' "$*" >&2; }

mirror="$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)"
mirror="${mirror:-$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null)}"
[[ -n "$mirror" ]] || { echo "images.sh: no Debian mirror found in apt's sources" >&2; exit 1; }

# ------------------------------------------------------------------ Debian images
# debian_image NAME PACKAGES: Debian 12 minbase with PACKAGES (comma-separated), cached by its recipe;
# prints the image's name (localhost/NAME:bookworm-<hash>).
debian_image() {
    local name="$1" packages="$2" key tarball image
    key="$(printf '%s' "bookworm minbase $packages v1" | sha256sum | cut -c1-12)"
    tarball="$out/$name-$key.tar"
    image="localhost/$name:bookworm-$key"
    if [[ ! -s "$tarball" ]]; then
        log "$name: mmdebstrap bookworm with $packages (about a minute)"
        mmdebstrap --quiet --variant=minbase --include="$packages" \
            --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
            --dpkgopt='path-exclude=/usr/share/locale/*' bookworm "${tarball%.tar}.part.tar" "$mirror" >&2
        mv "${tarball%.tar}.part.tar" "$tarball"   # mmdebstrap picks its output format by the suffix
    fi
    if ! podman image exists "$image"; then
        podman import --quiet --change 'CMD ["/bin/bash"]' "$tarball" "$image" >/dev/null
    fi
    echo "$image"
}
base_image="$(debian_image pybase python3,python3-venv)"
base_key="${base_image##*-}"
# The Dockerfile's build stage: the same with binutils, to strip the shared objects.
build_image="$(debian_image pybuild python3,python3-venv,binutils)"
build_key="${build_image##*-}"
redis_image="$(debian_image redis redis-server)"

# ------------------------------------------------------------------ wheels (dependencies by pyproject)
pip="${PIP:-$root/.venv/bin/pip}"
deps_key="$( { cat "$root/pyproject.toml"; echo v2; } | sha256sum | cut -c1-12)"
deps="$out/wheels-$deps_key"
if [[ ! -f "$deps/.done" ]]; then
    log "wheels: dependencies of pyproject.toml"
    rm -rf "$deps"; mkdir -p "$deps"
    "$pip" wheel --quiet --disable-pip-version-check --wheel-dir "$deps" "$root"
    rm -f "$deps"/trunkline-*.whl
    # Wheels the base's interpreter needs and this one does not: Debian 12's python3 is 3.11.2, and
    # redis requires async-timeout below 3.11.3.
    "$pip" download --quiet --disable-pip-version-check --no-deps --dest "$deps" "async-timeout>=4.0.3"
    touch "$deps/.done"
fi

# ------------------------------------------------------------------ trunkline image
srcs=(pyproject.toml setup.py README.md Dockerfile .dockerignore trunkline core sip edge media control operator cdr)
src_key="$(cd "$root" && { echo "$base_key $build_key $deps_key"; find "${srcs[@]}" -type f ! -name '*.pyc' ! -name '*.so' -print0 |
    sort -z | xargs -0 sha256sum; } | sha256sum | cut -c1-12)"
image="localhost/trunkline:$src_key"
if ! podman image exists "$image"; then
    log "image: $image"
    ctx="$(mktemp -d "$out/context.XXXX")"
    # shellcheck disable=SC2064
    trap "rm -rf '$ctx'" EXIT
    (cd "$root" && tar --exclude=__pycache__ --exclude='*.so' -cf - "${srcs[@]}") | tar -xf - -C "$ctx"
    mkdir "$ctx/wheels"
    cp "$deps"/*.whl "$ctx/wheels/"
    "$pip" wheel --quiet --no-deps --disable-pip-version-check --wheel-dir "$ctx/wheels" "$ctx" >/dev/null
    # .dockerignore keeps its own list; the wheels must go in.
    buildah build --quiet --pull=never --network=none --layers=false \
        --build-arg BASE="$base_image" --build-arg BUILD_BASE="$build_image" \
        --build-arg WHEELS=wheels -t "$image" "$ctx" >/dev/null
fi
log "image size: $(podman image inspect --format '{{.Size}}' "$image") bytes unpacked"
oci="$out/${image#localhost/}.oci.tar"; oci="${oci//:/_}"
[[ -s "$oci" ]] || podman save --quiet --format oci-archive -o "$oci" "$image"
log "image size: $(stat -c %s "$oci") bytes compressed (the OCI archive: what a registry stores and pulls)"

# ------------------------------------------------------------------ pause
pause_image="localhost/pause:3.10"
if ! podman image exists "$pause_image"; then
    [[ -x "$cache/bin/pause" ]] || { echo "images.sh: $cache/bin/pause missing: run tests/e2e/cluster.sh --node" >&2; exit 1; }
    ctr_=$(buildah from scratch)
    buildah copy "$ctr_" "$cache/bin/pause" /pause >/dev/null
    buildah config --entrypoint '["/pause"]' "$ctr_"
    buildah commit --quiet "$ctr_" "$pause_image" >/dev/null
    buildah rm "$ctr_" >/dev/null
fi

# ------------------------------------------------------------------ into containerd
if [[ -n "$sock" ]]; then
    for img in "$image" "$pause_image" "$redis_image"; do
        name="${img#localhost/}"
        if ! ctr -a "$sock" -n k8s.io images ls -q | grep -qx "localhost/$name"; then
            tarball="$out/${name//[:\/]/_}.oci.tar"
            [[ -s "$tarball" ]] || podman save --quiet --format oci-archive -o "$tarball" "$img"
            ctr -a "$sock" -n k8s.io images import --base-name "localhost/${name%%:*}" "$tarball" >/dev/null
        fi
    done
fi
echo "trunkline-image: $image"
echo "redis-image: $redis_image"
