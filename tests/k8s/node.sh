#!/usr/bin/env bash
# A real single-node Kubernetes on this machine (root): containerd + runc, a bridge CNI (cni0,
# 10.88.0.0/16, the node's address 10.88.0.1), etcd, kube-apiserver, controller-manager, scheduler,
# kubelet, kube-proxy (iptables) and a cluster DNS (dnsmasq fed with the Services' ClusterIPs).
#   node.sh up STATE     start everything, import the images (tests/k8s/images.sh), wait for the node
#                        and the default ServiceAccount; writes STATE/kubeconfig and STATE/image
#   node.sh down STATE   stop everything by recorded PID and undo what it changed on the host
# Recipe and its two blockers: docs/kubernetes.md ("Tests on a real node"). Every address stays inside
# the machine. Logs: STATE/logs/*.log.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cache="${TRUNKLINE_CACHE_DIR:-$root/.cache}"
bin="$cache/bin"
cmd="${1:?usage: node.sh up|down STATE}"
state="$(mkdir -p "${2:?usage: node.sh up|down STATE}" && cd "$2" && pwd)"
node_ip=10.88.0.1
pod_cidr=10.88.0.0/16
svc_cidr=10.96.0.0/16
node_name=trunkline-node
extra_ips="10.88.255.253 10.88.255.254"
sock="$state/containerd/containerd.sock"
export KUBECONFIG="$state/kubeconfig"
log() { printf '%s node.sh: %s\n' "$(date +%T)" "$*" >&2; }

# Start a daemon in its own session; its PID goes into STATE/pids (stopped in reverse order).
spawn() {
    local name="$1"; shift
    setsid "$@" >"$state/logs/$name.log" 2>&1 < /dev/null &
    echo "$name $!" >> "$state/pids"
}
alive_or_die() {
    local name pid
    while read -r name pid; do
        kill -0 "$pid" 2>/dev/null || { log "$name died; its log:"; tail -n 30 "$state/logs/$name.log" >&2; exit 1; }
    done < "$state/pids"
}
wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local limit=$(( SECONDS + $1 )) what="$2"; shift 2
    until "$@" >/dev/null 2>&1; do
        alive_or_die
        (( SECONDS < limit )) || { log "timed out waiting for $what"; exit 1; }
        sleep 0.3
    done
}

sysctls=(net.ipv4.ip_forward net.ipv4.conf.all.route_localnet net.bridge.bridge-nf-call-iptables
         net.bridge.bridge-nf-call-ip6tables net.netfilter.nf_conntrack_tcp_timeout_established
         net.netfilter.nf_conntrack_tcp_timeout_close_wait vm.overcommit_memory vm.panic_on_oom
         kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes)

up() {
    for tool in etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl pause; do
        [[ -x "$bin/$tool" ]] || { log "$bin/$tool missing: run tests/e2e/cluster.sh --node"; exit 1; }
    done
    [[ -e "$state/pids" ]] && { log "$state holds a running node: node.sh down $state first"; exit 1; }
    mkdir -p "$state/logs" "$state/pki" "$state/cni" "$state/dns"
    : > "$state/pids"
    for s in "${sysctls[@]}"; do echo "$s $(sysctl -n "$s" 2>/dev/null || echo -)"; done > "$state/sysctls"

    # The pod network must be ours alone: another bridge on it (podman's default network is also
    # 10.88.0.0/16, made by a first `podman run`) takes the route, and pods become unreachable.
    local taken
    taken="$(ip -o route show "$pod_cidr" | awk '$3 != "cni0" {print $3}')"
    if [[ -n "$taken" ]]; then
        log "$pod_cidr is already routed through $taken (podman's default network?); remove it first:" \
            "ip link delete $taken"
        exit 1
    fi
    # -- the bridge first: kubelet refuses a loopback node IP and this VM has no dummy device.
    if ! ip link show cni0 >/dev/null 2>&1; then
        ip link add cni0 type bridge
        ip addr add "$node_ip/16" dev cni0
    fi
    # A fixed MAC: a bridge without one takes the lowest of its ports', so a new pod's veth can change
    # it, and the pods' ARP entries of the node's addresses (the PBX, the carrier) then point nowhere
    # for seconds: calls from an edge to the carrier went unanswered right after an edge pod started.
    ip link set cni0 address 02:00:0a:58:00:01
    ip link set cni0 up
    # Two more host addresses on the pod network, outside the pods' range: tests put a PBX and a
    # carrier there (sources the trunk's IP-ACL and the carrier's inbound CIDRs tell apart).
    for extra in $extra_ips; do ip addr replace "$extra/16" dev cni0; done
    ip route replace "$svc_cidr" dev cni0   # un-NATed ClusterIP packets stay on the bridge
    sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1

    # -- containerd: own root, state and socket; pause from images.sh; no oom_score_adj (blocker 1).
    cat > "$state/cni/10-trunkline.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "trunkline", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$pod_cidr", "gateway": "$node_ip",
                          "rangeStart": "10.88.0.2", "rangeEnd": "10.88.254.254"}]],
            "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$state/cni/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}},
  {"type": "loopback"}]}
JSON
    cat > "$state/containerd.toml" <<TOML
version = 2
root = "$state/containerd/root"
state = "$state/containerd/state"
[grpc]
  address = "$sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/pause:3.10"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$state/cni"
TOML
    spawn containerd containerd --config "$state/containerd.toml"
    wait_for 30 containerd ctr -a "$sock" version

    # -- images (cached builds; import ~15 s)
    "$here/images.sh" "$sock" > "$state/images"
    sed -n 's/^trunkline-image: //p' "$state/images" > "$state/image"
    sed -n 's/^redis-image: //p' "$state/images" > "$state/redis-image"
    [[ -s "$state/image" && -s "$state/redis-image" ]] || { log "images.sh gave no images"; exit 1; }

    # -- certificates and tokens (test only: every component in system:masters)
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=trunkline-node-apiserver \
        -keyout "$state/pki/apiserver.key" -out "$state/pki/apiserver.crt" \
        -addext "subjectAltName=IP:$node_ip,IP:10.96.0.1,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local" 2>/dev/null
    openssl genrsa -out "$state/pki/sa.key" 2048 2>/dev/null
    local token
    token="$(openssl rand -hex 24)"
    echo "$token,admin,admin,\"system:masters\"" > "$state/pki/tokens.csv"
    local server="https://$node_ip:6443"
    cat > "$state/kubeconfig" <<YAML
apiVersion: v1
kind: Config
clusters: [{name: node, cluster: {server: "$server", certificate-authority: "$state/pki/apiserver.crt"}}]
users: [{name: admin, user: {token: "$token"}}]
contexts: [{name: node, context: {cluster: node, user: admin, namespace: default}}]
current-context: node
YAML
    chmod 600 "$state/kubeconfig"

    # -- etcd, then the apiserver (stopped in the other order)
    local etcd_port peer_port
    read -r etcd_port peer_port < <(python3 -c 'import socket
s=[socket.socket() for _ in range(2)]
[x.bind(("127.0.0.1",0)) for x in s]
print(*[x.getsockname()[1] for x in s])')
    spawn etcd "$bin/etcd" --name=node --data-dir="$state/etcd" \
        --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
        --listen-peer-urls="http://127.0.0.1:$peer_port" --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
        --initial-cluster="node=http://127.0.0.1:$peer_port"
    spawn kube-apiserver "$bin/kube-apiserver" --etcd-servers="http://127.0.0.1:$etcd_port" \
        --bind-address="$node_ip" --advertise-address="$node_ip" --secure-port=6443 \
        --cert-dir="$state/pki/apiserver" --tls-cert-file="$state/pki/apiserver.crt" \
        --tls-private-key-file="$state/pki/apiserver.key" --client-ca-file="$state/pki/apiserver.crt" \
        --authorization-mode=Node,RBAC --token-auth-file="$state/pki/tokens.csv" \
        --service-cluster-ip-range="$svc_cidr" --service-account-issuer=https://kubernetes.default.svc \
        --service-account-key-file="$state/pki/sa.key" --service-account-signing-key-file="$state/pki/sa.key" \
        --allow-privileged=true --kubelet-preferred-address-types=InternalIP
    wait_for 90 "kube-apiserver /readyz" "$bin/kubectl" get --raw /readyz

    # -- controller-manager, scheduler, kubelet, kube-proxy
    spawn kube-controller-manager "$bin/kube-controller-manager" --kubeconfig="$KUBECONFIG" \
        --controllers='*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller' \
        --leader-elect=false --service-account-private-key-file="$state/pki/sa.key" \
        --root-ca-file="$state/pki/apiserver.crt" --cluster-cidr="$pod_cidr" --use-service-account-credentials=false \
        --bind-address=127.0.0.1 --secure-port=0
    spawn kube-scheduler "$bin/kube-scheduler" --kubeconfig="$KUBECONFIG" --leader-elect=false \
        --bind-address=127.0.0.1 --secure-port=0
    cat > "$state/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$sock
address: $node_ip
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 0
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
clusterDNS: [$node_ip]
clusterDomain: cluster.local
resolvConf: $state/dns/host-resolv.conf
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
rotateCertificates: false
serializeImagePulls: false
maxPods: 60
YAML
    : > "$state/dns/host-resolv.conf"
    spawn kubelet "$bin/kubelet" --config="$state/kubelet.yaml" --kubeconfig="$KUBECONFIG" \
        --hostname-override="$node_name" --node-ip="$node_ip" --root-dir="$state/kubelet" \
        --cert-dir="$state/pki/kubelet"
    cat > "$state/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
bindAddress: $node_ip
clusterCIDR: $pod_cidr
hostnameOverride: $node_name
nodePortAddresses: ["$node_ip/32"]
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
clientConnection: {kubeconfig: "$KUBECONFIG"}
conntrack: {maxPerCore: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
YAML
    spawn kube-proxy "$bin/kube-proxy" --config="$state/kube-proxy.yaml"

    # -- cluster DNS: dnsmasq on the node address, its hosts from the Services (refreshed each second)
    mkdir -p "$state/dns/hosts"
    spawn dnsmasq dnsmasq --keep-in-foreground --no-resolv --no-hosts --conf-file=/dev/null \
        --listen-address="$node_ip" --bind-interfaces --port=53 --hostsdir="$state/dns/hosts" \
        --local=/cluster.local/ --local-ttl=1 --pid-file="$state/dns/dnsmasq.pid" --user=root
    spawn dns-feed bash -c '
        while :; do
            "$0" get svc -A -o jsonpath="{range .items[*]}{.spec.clusterIP} {.metadata.name}.{.metadata.namespace}.svc.cluster.local{\"\\n\"}{end}" \
                2>/dev/null | grep -v "^None " > "$1.tmp" && { cmp -s "$1.tmp" "$1" || mv "$1.tmp" "$1"; }
            sleep 1
        done' "$bin/kubectl" "$state/dns/hosts/services"

    wait_for 90 "node $node_name Ready" "$bin/kubectl" wait --for=condition=Ready "node/$node_name" --timeout=1s
    wait_for 60 "the default ServiceAccount" "$bin/kubectl" get serviceaccount default
    log "up: $(cat "$state/image") on node $node_name ($node_ip)"
}

# Every container and sandbox of our containerd, killed and removed (kubelet is stopped by then).
kill_containers() {
    local c
    for c in $(ctr -a "$sock" -n k8s.io tasks ls -q 2>/dev/null); do
        ctr -a "$sock" -n k8s.io tasks kill -s SIGKILL "$c" >/dev/null 2>&1 || true
    done
    for _ in $(seq 50); do
        [[ -z "$(ctr -a "$sock" -n k8s.io tasks ls -q 2>/dev/null | head -n1)" ]] && break
        for c in $(ctr -a "$sock" -n k8s.io tasks ls -q 2>/dev/null); do
            ctr -a "$sock" -n k8s.io tasks rm -f "$c" >/dev/null 2>&1 || true
        done
        sleep 0.2
    done
    for c in $(ctr -a "$sock" -n k8s.io containers ls -q 2>/dev/null); do
        ctr -a "$sock" -n k8s.io containers rm "$c" >/dev/null 2>&1 || true
    done
}

down() {
    set +e +o pipefail  # best effort: undo as much as can be undone
    [[ -e "$state/pids" ]] || return 0
    "$bin/kubectl" delete pods --all --all-namespaces --grace-period=0 --force --wait=false >/dev/null 2>&1 || true
    local name pid lines
    mapfile -t lines < <(tac "$state/pids")
    for entry in "${lines[@]}"; do
        read -r name pid <<< "$entry"
        [[ "$name" == etcd ]] && sleep 1   # the apiserver hung when stopped together with etcd
        [[ "$name" == containerd ]] && kill_containers
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL -- "-$pid" 2>/dev/null || true
    done
    # containerd's shims outlive it: kill what runs under our containerd root.
    local shim
    for shim in $(pgrep -f "containerd-shim-runc-v2 .*-address $sock" || true); do
        kill -KILL -- "-$shim" 2>/dev/null || kill -KILL "$shim" 2>/dev/null || true
    done
    "$bin/kube-proxy" --cleanup >/dev/null 2>&1 || true
    local ipt table chain
    for ipt in iptables ip6tables; do
        for table in filter nat mangle; do
            for chain in $("$ipt" -t "$table" -S 2>/dev/null | awk '$1=="-N" && $2 ~ /^KUBE-/ {print $2}'); do
                "$ipt" -t "$table" -S 2>/dev/null | grep -- "-j $chain\b" | grep -v "^-A $chain " |
                    sed 's/^-A/-D/' | while read -r rule; do eval "$ipt -t $table $rule" 2>/dev/null || true; done
            done
            for chain in $("$ipt" -t "$table" -S 2>/dev/null | awk '$1=="-N" && $2 ~ /^KUBE-/ {print $2}'); do
                "$ipt" -t "$table" -F "$chain" 2>/dev/null || true
            done
            for chain in $("$ipt" -t "$table" -S 2>/dev/null | awk '$1=="-N" && $2 ~ /^KUBE-/ {print $2}'); do
                "$ipt" -t "$table" -X "$chain" 2>/dev/null || true
            done
        done
    done
    grep -o " $state/[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    # The pods' network namespaces (containerd pins them under /run/netns/cni-*) and their veths.
    local ns
    for ns in $(ip netns list 2>/dev/null | awk '$1 ~ /^cni-/ {print $1}'); do ip netns delete "$ns" 2>/dev/null || true; done
    ip link del cni0 2>/dev/null || true
    local s v
    while read -r s v; do [[ "$v" == - ]] || sysctl -qw "$s=$v" 2>/dev/null || true; done < "$state/sysctls"
    rm -f "$state/pids"
    # Keep the logs for a post-mortem; the rest (images, etcd, pod volumes) is large.
    find "$state" -mindepth 1 -maxdepth 1 ! -name logs -exec rm -rf {} + 2>/dev/null || true
    log "down"
}

case "$cmd" in
    up) up ;;
    down) down ;;
    *) echo "usage: node.sh up|down STATE" >&2; exit 2 ;;
esac
