#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs what it needs, then runs static checks and
# every test level (unit, integration: real sockets/SIPp/Redis, e2e: real kube-apiserver + helm,
# k8s: the chart on a real single-node Kubernetes, which needs root).
# Extra arguments go to pytest (e.g. `scripts/test.sh tests/unit -k sip`).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"

step() { printf '\n== %s\n' "$*"; }

step "Debian packages"
packages=(sip-tester stunnel4 redis-server redis-sentinel etcd-server dnsmasq-base openssl iproute2 postgresql
  # the compiled SIP core (setup.py: mypyc's C extensions)
  gcc python3-dev
  # tests/k8s: a real node (container runtime, CNI plugins, image builds without a registry)
  containerd runc containernetworking-plugins iptables conntrack ethtool buildah podman mmdebstrap)
missing=()
for pkg in "${packages[@]}"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
if ((${#missing[@]})); then
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "ok: ${packages[*]}"

step "Python environment (.venv)"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -U pip setuptools wheel
.venv/bin/pip install -q -e '.[test]'
.venv/bin/python -c 'import trunkline, sys; print("ok: trunkline", trunkline.__version__, sys.version.split()[0])'

if [ -x tests/e2e/cluster.sh ]; then
  step "Kubernetes binaries: control plane and node (cached in .cache/)"
  tests/e2e/cluster.sh --node
fi

step "Jaeger v2 for the tracing tests (cached in .cache/bin)"
scripts/jaeger.sh

step "Static checks"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
scripts/typecheck.sh
if [ -f scripts/gen_protos.py ]; then .venv/bin/python scripts/gen_protos.py --check; fi

step "Tests"
cd "$root"
exec .venv/bin/pytest "${@:-tests}"
