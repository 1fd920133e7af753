# Sourced by up.sh, down.sh and friends: paths and helpers shared by the cluster scripts.
# shellcheck shell=bash disable=SC2034
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/versions.sh"

# Git-ignored state: pki, kubeconfigs, component configs, logs, pids.
STATE="${BUILDR_CLUSTER_STATE:-$HERE/.state}"
PKI="$STATE/pki"
LOGS="$STATE/logs"
PIDS="$STATE/pids"
KUBECONFIG_ADMIN="$STATE/admin.kubeconfig"
# Everything the components write at run time lives under these two (wiped by down.sh).
DATA_ROOT=/var/lib/buildr-cluster
RUN_ROOT=/run/buildr-cluster
CONTAINERD_SOCK="$RUN_ROOT/containerd/containerd.sock"
CNI_CONF_DIR=/etc/cni/net.d
CNI_CONF="$CNI_CONF_DIR/10-buildr-cluster.conflist"
POD_CIDR=10.88.0.0/16
SERVICE_CIDR=10.0.0.0/24
SERVICE_IP=10.0.0.1
API_PORT=6443
FW_CHAIN=BUILDR-CLUSTER
PAUSE_IMAGE=buildr.local/pause:1
BASE_IMAGE=buildr.local/base:1
# Paths up.sh may create outside DATA_ROOT/RUN_ROOT; down.sh removes those that did not exist
# before the first up.sh (recorded in $STATE/preexisting).
OUTSIDE_PATHS=(/etc/cni/net.d /etc/cni /var/lib/cni /run/containerd /run/netns /var/log/containers
  /var/log/pods /var/lib/kubelet /etc/kubernetes)
COMPONENTS_START=(etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet)

NODE_NAME="$(hostname | tr '[:upper:]' '[:lower:]')"

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

host_ip() { # the address of the default route's interface, else the first global IPv4 address
  local dev ip
  dev="$(ip -4 route show default | awk '{for (i = 1; i < NF; i++) if ($i == "dev") print $(i + 1)}' | head -1)"
  [[ -n "$dev" ]] && ip="$(ip -4 -o addr show dev "$dev" scope global | awk '{print $4}' | cut -d/ -f1 | head -1)"
  [[ -n "${ip:-}" ]] || ip="$(ip -4 -o addr show scope global | awk '{print $4}' | cut -d/ -f1 | head -1)"
  echo "${ip:-}"
}

# A recorded pid is "ours" only if the process still has the start time recorded with it.
proc_start() { awk '{print $22}' "/proc/$1/stat" 2>/dev/null; }
# Alive and not a zombie (PID 1 on these machines reaps exited orphans only after a second or two).
alive() { [[ -d "/proc/$1" ]] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }
pid_of() { # name -> pid if the recorded process is alive, else nothing
  local f="$PIDS/$1.pid" pid st
  [[ -f "$f" ]] || return 1
  read -r pid st < "$f" || return 1
  [[ -n "$pid" ]] && alive "$pid" && [[ "$(proc_start "$pid")" == "$st" ]] || return 1
  echo "$pid"
}

ctr_() { ctr --address "$CONTAINERD_SOCK" -n k8s.io "$@"; }
kc() { kubectl --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }

# --- process helpers ---------------------------------------------------------------------
start() { # NAME CMD...: run detached, log to $LOGS/NAME.log, record "pid starttime"
  local name="$1"; shift
  setsid "$@" > "$LOGS/$name.log" 2>&1 < /dev/null &
  local pid=$!
  echo "$pid $(proc_start "$pid")" > "$PIDS/$name.pid"
  log "started $name (pid $pid, log $LOGS/$name.log)"
}
wait_for() { # NAME TIMEOUT DESCRIPTION CMD...: poll CMD until it succeeds, fail if NAME died
  local name="$1" timeout="$2" what="$3"; shift 3
  local end=$(( $(date +%s) + timeout ))
  until "$@" >/dev/null 2>&1; do
    if ! pid_of "$name" >/dev/null; then
      tail -n 40 "$LOGS/$name.log" >&2 || true
      die "$name exited while waiting for: $what (log: $LOGS/$name.log)"
    fi
    if (( $(date +%s) >= end )); then
      tail -n 40 "$LOGS/$name.log" >&2 || true
      die "timed out after ${timeout}s waiting for: $what (log: $LOGS/$name.log)"
    fi
    sleep 0.3
  done
}

# start_apiserver HOST_IP: kube-apiserver, as up.sh starts it (restart-apiserver.sh too).
start_apiserver() {
  local HOST_IP="$1"
  start kube-apiserver "$BIN_DIR/kube-apiserver" \
    --bind-address=127.0.0.1 --advertise-address="$HOST_IP" --secure-port="$API_PORT" \
    --etcd-servers=http://127.0.0.1:2379 \
    --client-ca-file="$PKI/ca.crt" \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$PKI/ca.crt" \
    --kubelet-preferred-address-types=InternalIP,Hostname \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" \
    --service-account-signing-key-file="$PKI/sa.key" \
    --api-audiences=https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --authorization-mode=Node,RBAC \
    --enable-admission-plugins=NodeRestriction \
    --allow-privileged=true \
    --profiling=false \
    --v=1
}
