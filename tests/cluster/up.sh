#!/usr/bin/env bash
# Brings up a real single-node Kubernetes cluster on this machine (see README.md).
# Idempotent: if the cluster it started is still running and healthy, it only waits for it.
set -euo pipefail
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

[[ $EUID -eq 0 ]] || die "up.sh must run as root"
T0=$(date +%s)

# --- already up? -------------------------------------------------------------------------
alive=0 dead=0
for c in "${COMPONENTS_START[@]}"; do
  if pid_of "$c" >/dev/null; then alive=$((alive + 1)); elif [[ -f "$PIDS/$c.pid" ]]; then dead=$((dead + 1)); fi
done
if (( alive == ${#COMPONENTS_START[@]} )) && kc get --raw /readyz >/dev/null 2>&1; then
  log "cluster already running (pids in $PIDS)"
  ALREADY_UP=1
else
  ALREADY_UP=0
  if (( alive > 0 || dead > 0 )); then
    log "a previous cluster is partly running or was not cleaned up: running down.sh first"
    "$HERE/down.sh"
  fi
fi

if [[ $ALREADY_UP == 0 ]]; then
# --- packages ----------------------------------------------------------------------------
need=()
command -v containerd >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
[[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/portmap && -x /usr/lib/cni/loopback ]] \
  || need+=(containernetworking-plugins)
command -v iptables >/dev/null || need+=(iptables)
command -v nft >/dev/null || need+=(nftables) # down.sh removes the nftables tables iptables made
command -v openssl >/dev/null || need+=(openssl)
command -v gcc >/dev/null || need+=(gcc libc6-dev)
command -v curl >/dev/null || need+=(curl)
command -v ipset >/dev/null || need+=(ipset) # kube-router's NetworkPolicy enforcement (addons.sh)
[[ -x /bin/busybox ]] || need+=(busybox-static) # the BusyBox test images
if (( ${#need[@]} )); then
  log "installing Debian packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# --- binaries and images (cached outside the repository) ---------------------------------
"$HERE/build.sh"
"$HERE/build-tools.sh"   # helm, kube-router, registry
"$HERE/build-images.sh"

# --- preflight ---------------------------------------------------------------------------
for port in 2379 2380 "$API_PORT" 10250 10248 10257 10259; do
  if ss -Hltn "sport = :$port" | grep -q .; then
    die "port $port is already in use (ss -ltnp 'sport = :$port'); is another cluster running?"
  fi
done
HOST_IP="$(host_ip)"
[[ -n "$HOST_IP" ]] || die "no non-loopback IPv4 address found for the node"

mkdir -p "$STATE" "$LOGS" "$PIDS" "$PKI"
# Remember what existed before the first up, so that down.sh removes only what we made.
if [[ ! -f "$STATE/preexisting" ]]; then
  {
    for p in "${OUTSIDE_PATHS[@]}"; do [[ -e "$p" ]] && echo "path $p"; done
    echo "sysctl net.ipv4.ip_forward $(sysctl -n net.ipv4.ip_forward)"
    nft list tables 2>/dev/null | awk '{print "nft", $2, $3}'
    for ipt in iptables ip6tables iptables-legacy ip6tables-legacy; do
      command -v "$ipt-save" >/dev/null || continue
      "$ipt-save" 2>/dev/null | awk -v b="$ipt" '/^\*/{t=substr($0,2)} /^:/{print "chain", b, t, substr($1,2)}'
    done
    if command -v ipset >/dev/null; then ipset list -n 2>/dev/null | sed 's/^/ipset /'; fi
  } > "$STATE/preexisting"
fi
rm -f "$LOGS"/*.log

# --- certificates (openssl), reused while the host address and node name stay the same ---
pki_id="$HOST_IP $NODE_NAME $K8S_VERSION"
if [[ ! -f "$PKI/id" || "$(cat "$PKI/id")" != "$pki_id" ]]; then
  log "generating certificates in $PKI"
  rm -rf "$PKI"; mkdir -p "$PKI"
  (
    cd "$PKI"
    newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null; }
    newkey ca
    openssl req -x509 -new -key ca.key -days 3650 -subj "/CN=buildr-cluster-ca" -out ca.crt \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"
    # cert NAME SUBJECT EKU [SANS]
    cert() {
      newkey "$1"
      openssl req -new -key "$1.key" -subj "$2" -out "$1.csr"
      {
        echo "basicConstraints=critical,CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        echo "extendedKeyUsage=$3"
        [[ -n "${4:-}" ]] && echo "subjectAltName=$4"
      } > "$1.ext"
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
        -extfile "$1.ext" -out "$1.crt" 2>/dev/null
      rm -f "$1.csr" "$1.ext"
    }
    cert apiserver "/CN=kube-apiserver" serverAuth \
      "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,DNS:$NODE_NAME,IP:127.0.0.1,IP:$HOST_IP,IP:$SERVICE_IP"
    cert apiserver-kubelet-client "/CN=kube-apiserver-kubelet-client" clientAuth
    cert admin "/O=system:masters/CN=buildr-cluster-admin" clientAuth
    cert controller-manager "/CN=system:kube-controller-manager" clientAuth
    cert scheduler "/CN=system:kube-scheduler" clientAuth
    cert kubelet-client "/O=system:nodes/CN=system:node:$NODE_NAME" clientAuth
    cert kubelet-server "/CN=$NODE_NAME" serverAuth "DNS:$NODE_NAME,DNS:localhost,IP:$HOST_IP,IP:127.0.0.1"
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key 2>/dev/null
    openssl pkey -in sa.key -pubout -out sa.pub
    chmod 600 ./*.key
  )
  echo "$pki_id" > "$PKI/id"
fi

kubeconfig() { # FILE USER-CERT-NAME
  cat > "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: buildr-cluster
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 "$PKI/$2.crt")
    client-key-data: $(base64 -w0 "$PKI/$2.key")
contexts:
- name: buildr-cluster
  context:
    cluster: buildr-cluster
    user: $2
current-context: buildr-cluster
EOF
  chmod 600 "$1"
}
kubeconfig "$KUBECONFIG_ADMIN" admin
kubeconfig "$STATE/controller-manager.kubeconfig" controller-manager
kubeconfig "$STATE/scheduler.kubeconfig" scheduler
kubeconfig "$STATE/kubelet.kubeconfig" kubelet-client

mkdir -p "$DATA_ROOT" "$RUN_ROOT"

# --- etcd --------------------------------------------------------------------------------
start etcd "$BIN_DIR/etcd" --name default --data-dir "$DATA_ROOT/etcd" \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster default=http://127.0.0.1:2380 --initial-cluster-state new \
  --unsafe-no-fsync --log-level warn

# --- containerd (started early: it comes up while the API server does) --------------------
mkdir -p "$CNI_CONF_DIR" "$DATA_ROOT/containerd" "$RUN_ROOT/containerd"
cat > "$STATE/containerd.toml" <<EOF
version = 2
root = "$DATA_ROOT/containerd"
state = "$RUN_ROOT/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "$CONTAINERD_SOCK"

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "$PAUSE_IMAGE"
    # root lacks CAP_SYS_RESOURCE here: runc cannot lower oom_score_adj
    restrict_oom_score_adj = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    enable_tls_streaming = false
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "$CNI_CONF_DIR"
  [plugins."io.containerd.internal.v1.opt"]
    path = "$DATA_ROOT/containerd/opt"
EOF
cat > "$CNI_CONF" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "buildr-cluster",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "$POD_CIDR" }]],
        "routes": [{ "dst": "0.0.0.0/0" }],
        "dataDir": "$DATA_ROOT/cni/networks"
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
EOF
start containerd containerd --config "$STATE/containerd.toml"

# Pods may talk to each other and to this host, never to other hosts.
sysctl -qw net.ipv4.ip_forward=1
iptables -N "$FW_CHAIN" 2>/dev/null || iptables -F "$FW_CHAIN"
iptables -A "$FW_CHAIN" -s "$POD_CIDR" -d "$POD_CIDR" -j RETURN
iptables -A "$FW_CHAIN" -s "$POD_CIDR" -j REJECT
iptables -A "$FW_CHAIN" -d "$POD_CIDR" -j REJECT
iptables -C FORWARD -j "$FW_CHAIN" 2>/dev/null || iptables -I FORWARD -j "$FW_CHAIN"

# --- kube-apiserver ----------------------------------------------------------------------
wait_for etcd 30 "etcd health" curl -fsS http://127.0.0.1:2379/health
start_apiserver "$HOST_IP"

# containerd is up by now: import the images while the API server starts.
wait_for containerd 30 "containerd socket" ctr_ version
for img in "$CACHE_DIR"/images/*.tar; do
  ctr_ images import "$img" >/dev/null
done
log "imported $(ls "$CACHE_DIR"/images/*.tar | xargs -n1 basename | tr '\n' ' ')into containerd (namespace k8s.io)"

wait_for kube-apiserver 120 "kube-apiserver /readyz" kc get --raw /readyz
# The API server's kubelet client identity needs nodes/proxy etc. for exec, logs, port-forward.
kc create clusterrolebinding buildr-cluster:apiserver-kubelet-admin \
  --clusterrole=system:kubelet-api-admin --user=kube-apiserver-kubelet-client \
  --dry-run=client -o yaml | kc apply -f - >/dev/null

# --- controller-manager and scheduler ----------------------------------------------------
start kube-controller-manager "$BIN_DIR/kube-controller-manager" \
  --kubeconfig="$STATE/controller-manager.kubeconfig" \
  --authentication-kubeconfig="$STATE/controller-manager.kubeconfig" \
  --authorization-kubeconfig="$STATE/controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 \
  --leader-elect=false \
  --cluster-name=buildr-cluster \
  --service-cluster-ip-range="$SERVICE_CIDR" \
  --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
  --root-ca-file="$PKI/ca.crt" \
  --service-account-private-key-file="$PKI/sa.key" \
  --use-service-account-credentials=true \
  --profiling=false \
  --v=1
start kube-scheduler "$BIN_DIR/kube-scheduler" \
  --kubeconfig="$STATE/scheduler.kubeconfig" \
  --authentication-kubeconfig="$STATE/scheduler.kubeconfig" \
  --authorization-kubeconfig="$STATE/scheduler.kubeconfig" \
  --bind-address=127.0.0.1 \
  --leader-elect=false \
  --profiling=false \
  --v=1

# --- kubelet -----------------------------------------------------------------------------
mkdir -p "$DATA_ROOT/kubelet" "$DATA_ROOT/pod-logs"
cat > "$STATE/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $HOST_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: $PKI/ca.crt
authorization:
  mode: Webhook
tlsCertFile: $PKI/kubelet-server.crt
tlsPrivateKeyFile: $PKI/kubelet-server.key
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
cgroupDriver: cgroupfs
failSwapOn: false
failCgroupV1: false
resolvConf: /etc/resolv.conf
registerNode: true
podLogsDir: $DATA_ROOT/pod-logs
serializeImagePulls: false
# No image garbage collection (the local images cannot be pulled again) and eviction only
# when the machine is really short.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
rotateCertificates: false
serverTLSBootstrap: false
EOF
start kubelet "$BIN_DIR/kubelet" \
  --config="$STATE/kubelet.yaml" \
  --kubeconfig="$STATE/kubelet.kubeconfig" \
  --root-dir="$DATA_ROOT/kubelet" \
  --hostname-override="$NODE_NAME" \
  --node-ip="$HOST_IP" \
  --v=1

fi # ALREADY_UP

# --- wait until usable -------------------------------------------------------------------
node_ready() {
  [[ "$(kc get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}
wait_for kubelet 120 "node $NODE_NAME Ready" node_ready
wait_for kube-controller-manager 60 "service account default/default" kc -n default get serviceaccount default
# The API server's VIP for pods and NetworkPolicy enforcement (idempotent; down.sh stops them).
"$HERE/addons.sh" start

log "cluster ready in $(( $(date +%s) - T0 )) s: Kubernetes $K8S_VERSION, node $NODE_NAME"
cat <<EOF
Cluster is up. Use it with:
  export KUBECONFIG=$KUBECONFIG_ADMIN
  kubectl get nodes
Images (use imagePullPolicy: Never or IfNotPresent): $BASE_IMAGE, $PAUSE_IMAGE
NetworkPolicy is enforced (kube-router's firewall); pods reach the API server at $SERVICE_IP:443.
helm: $BIN_DIR/helm
Logs: $LOGS/   Stop it with: $HERE/down.sh
EOF
