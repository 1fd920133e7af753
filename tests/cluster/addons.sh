#!/usr/bin/env bash
# Additions to the running cluster that up.sh starts at its end and down.sh stops:
#
#   API server VIP   pods reach the API server the standard way (in-cluster config:
#                    KUBERNETES_SERVICE_HOST=10.0.0.1, port 443), as kube-proxy would make it:
#                    a DNAT of 10.0.0.1:443 to the API server on 127.0.0.1:6443
#                    (route_localnet on cni0, and a guard that drops any other packet from a
#                    pod to 127.0.0.0/8). Nothing else of kube-proxy is here.
#   NetworkPolicy    kube-router's firewall controller alone (--run-firewall; no routing, no
#                    service proxy), built by build-tools.sh. iptables + ipset, FORWARD/INPUT/
#                    OUTPUT chains KUBE-ROUTER-*, per-pod chains KUBE-POD-FW-*, ipsets KUBE-SRC-*
#                    and KUBE-DST-*.
#
# Usage: addons.sh start   (idempotent: does only what is missing, waits until enforced)
#        addons.sh stop    (safe to run twice; down.sh calls it, then removes leftover chains)
#        addons.sh status
set -euo pipefail
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

VIP_CHAIN=BUILDR-APISERVER-VIP     # nat: PREROUTING -> DNAT
GUARD_CHAIN=BUILDR-LOCALNET-GUARD  # filter: INPUT -> drop pod packets to 127/8 that were not DNATed

[[ $EUID -eq 0 ]] || die "addons.sh must run as root"

vip_start() {
  # The bridge plugin reuses a bridge that exists, so create cni0 now (it may have no pod yet) to
  # set route_localnet on it; down.sh deletes it with the rest of the pod network.
  if ! ip link show cni0 >/dev/null 2>&1; then
    ip link add cni0 type bridge
    ip link set cni0 up
  fi
  sysctl -qw net.ipv4.conf.cni0.route_localnet=1
  iptables -t nat -N "$VIP_CHAIN" 2>/dev/null || iptables -t nat -F "$VIP_CHAIN"
  iptables -t nat -A "$VIP_CHAIN" -s "$POD_CIDR" -d "$SERVICE_IP" -p tcp --dport 443 \
    -j DNAT --to-destination "127.0.0.1:$API_PORT"
  iptables -t nat -C PREROUTING -j "$VIP_CHAIN" 2>/dev/null || iptables -t nat -I PREROUTING -j "$VIP_CHAIN"
  iptables -N "$GUARD_CHAIN" 2>/dev/null || iptables -F "$GUARD_CHAIN"
  iptables -A "$GUARD_CHAIN" -i cni0 -d 127.0.0.0/8 -m conntrack ! --ctstate DNAT,RELATED,ESTABLISHED -j DROP
  iptables -C INPUT -j "$GUARD_CHAIN" 2>/dev/null || iptables -I INPUT -j "$GUARD_CHAIN"
}

vip_stop() {
  local t c parent
  for t in nat filter; do
    if [[ $t == nat ]]; then c=$VIP_CHAIN parent=PREROUTING; else c=$GUARD_CHAIN parent=INPUT; fi
    while iptables -t "$t" -D "$parent" -j "$c" 2>/dev/null; do :; done
    iptables -t "$t" -F "$c" 2>/dev/null || true
    iptables -t "$t" -X "$c" 2>/dev/null || true
  done
}

enforcing() { # kube-router has hooked its chains into INPUT, FORWARD and OUTPUT
  local c
  for c in INPUT FORWARD OUTPUT; do
    iptables -S "$c" 2>/dev/null | grep -q -- "-j KUBE-ROUTER-$c" || return 1
  done
}

netpol_start() {
  if pid_of kube-router >/dev/null; then
    log "kube-router already running"
  else
    # Usually done by up.sh already; here too for a cluster that older scripts started.
    "$HERE/build-tools.sh" kube-router >/dev/null
    if ! command -v ipset >/dev/null; then
      log "installing Debian package: ipset"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ipset >/dev/null \
        || die "cannot install ipset (apt-get install ipset)"
    fi
    # No listener at all: health and metrics servers off. The admin kubeconfig is fine in this
    # throw-away cluster (kube-router needs to watch pods, namespaces and policies cluster-wide).
    start kube-router "$BIN_DIR/kube-router" \
      --kubeconfig="$KUBECONFIG_ADMIN" \
      --hostname-override="$NODE_NAME" \
      --run-firewall=true --run-router=false --run-service-proxy=false \
      --enable-cni=false --enable-ipv4=true --enable-ipv6=false \
      --service-cluster-ip-range="$SERVICE_CIDR" \
      --health-port=0 --metrics-port=0 \
      --iptables-sync-period=1m \
      --v=1
  fi
  wait_for kube-router 60 "kube-router's chains in INPUT, FORWARD and OUTPUT" enforcing
}

netpol_stop() {
  local pid
  if pid="$(pid_of kube-router)"; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do alive "$pid" || break; sleep 0.1; done
    alive "$pid" && kill -KILL "$pid" 2>/dev/null
    log "stopped kube-router (pid $pid)"
  fi
  rm -f "$PIDS/kube-router.pid"
}

# kube-router's iptables chains (filter table) and every rule that jumps to them, so that a
# stopped enforcer leaves no stale policy behind on a cluster that keeps running.
netpol_chains_clean() {
  local dump chains re
  dump="$(iptables-save -t filter 2>/dev/null)" || return 0
  chains="$(awk '/^:(KUBE-ROUTER-|KUBE-POD-FW-|KUBE-NWPLCY-)/{print substr($1,2)}' <<< "$dump")"
  [[ -n "$chains" ]] || return 0
  re="($(tr '\n' '|' <<< "$chains" | sed 's/|$//'))"
  {
    echo "*filter"
    grep '^-A ' <<< "$dump" | grep -E -- "-j $re( |\$)" | grep -vE "^-A $re " | sed 's/^-A /-D /' || true
    for c in $chains; do echo "-F $c"; done
    for c in $chains; do echo "-X $c"; done
    echo COMMIT
  } | iptables-restore --noflush || log "could not remove all of kube-router's chains"
}

# Its ipsets, once no iptables rule refers to them any more (down.sh calls this after it has
# removed the KUBE-* chains). Sets that existed before the first up.sh are kept.
ipsets_clean() {
  command -v ipset >/dev/null || return 0
  local s left=0
  for _ in 1 2 3; do
    left=0
    while read -r s; do
      [[ "$s" =~ ^(inet6:)?(KUBE-SRC-|KUBE-DST-|TMP-) ]] || continue
      grep -qx "ipset $s" "$STATE/preexisting" 2>/dev/null && continue
      ipset destroy "$s" 2>/dev/null || left=$((left + 1))
    done < <(ipset list -n 2>/dev/null)
    (( left == 0 )) && return 0
    sleep 0.5
  done
  log "could not destroy $left kube-router ipsets (still referenced?)"
}

case "${1:-}" in
  start)
    pid_of kube-apiserver >/dev/null && kc get --raw /readyz >/dev/null 2>&1 \
      || die "the cluster is not running (start it with $HERE/up.sh)"
    vip_start
    netpol_start
    log "addons: API server at $SERVICE_IP:443 for pods; NetworkPolicy enforced by kube-router (log $LOGS/kube-router.log)"
    ;;
  stop)
    netpol_stop
    netpol_chains_clean
    ipsets_clean
    vip_stop
    ;;
  ipsets-clean)
    ipsets_clean
    ;;
  status)
    if pid_of kube-router >/dev/null && enforcing; then echo "kube-router: enforcing"; else echo "kube-router: not running"; fi
    if iptables -t nat -C PREROUTING -j "$VIP_CHAIN" 2>/dev/null; then echo "API server VIP: on"; else echo "API server VIP: off"; fi
    ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
