#!/usr/bin/env bash
# Stops the cluster up.sh started and removes what it made: pods and containers, mounts,
# network namespaces, the cni0 bridge and veths, iptables chains (CNI-*, KUBE-*, BUILDR-*),
# cgroups, data under /var/lib/buildr-cluster and /run/buildr-cluster, the CNI config, and
# restores net.ipv4.ip_forward. Safe to run twice, and after a failed or partial up.sh.
# Keeps: the binary/image cache, $STATE/pki and the kubeconfigs (reused by the next up.sh),
# and the logs (for debugging; up.sh truncates them).
set -uo pipefail
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

[[ $EUID -eq 0 ]] || die "down.sh must run as root"

stop() { # NAME [GRACE_SECONDS]: TERM, wait, KILL the recorded process
  local name="$1" grace="${2:-10}" pid
  if pid="$(pid_of "$name")"; then
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < grace * 10; i++)); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then
      log "$name (pid $pid) did not stop in ${grace}s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null
      for ((i = 0; i < 50; i++)); do alive "$pid" || break; sleep 0.1; done
    fi
    log "stopped $name (pid $pid)"
  fi
  rm -f "$PIDS/$name.pid"
}

# 1. Let the kubelet tear pods down properly (CNI DEL, unmounts) while everything still runs.
if pid_of kube-apiserver >/dev/null && pid_of kubelet >/dev/null && [[ -f "$KUBECONFIG_ADMIN" ]]; then
  if [[ -n "$(kc get pods -A -o name --request-timeout=5s 2>/dev/null | head -1)" ]]; then
    log "deleting all pods"
    kc delete pods --all -A --grace-period=1 --wait=true --timeout=45s >/dev/null 2>&1 \
      || log "some pods did not go away in time; removing their containers directly"
  fi
fi

# kube-router (NetworkPolicy) and the API server VIP; their leftover chains go in step 5.
"$HERE/addons.sh" stop

# 2. Stop the node, then kill whatever containers remain, then the runtime.
stop kubelet 15
if pid_of containerd >/dev/null && [[ -S "$CONTAINERD_SOCK" ]]; then
  for t in $(ctr_ tasks ls -q 2>/dev/null); do
    ctr_ tasks kill -a -s SIGKILL "$t" >/dev/null 2>&1
  done
  sleep 0.5
  for t in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks delete -f "$t" >/dev/null 2>&1; done
  for c in $(ctr_ containers ls -q 2>/dev/null); do ctr_ containers delete "$c" >/dev/null 2>&1; done
fi
stop containerd 10

# Shims of our containerd (identified by our socket path on their command line) and any
# process left in the pods' cgroups.
leftover() {
  local p
  for p in /proc/[0-9]*; do
    if tr '\0' ' ' < "$p/cmdline" 2>/dev/null | grep -q -- "containerd-shim.* -address $CONTAINERD_SOCK"; then
      echo "${p#/proc/}"
    fi
  done
  cat /sys/fs/cgroup/*/kubepods/cgroup.procs /sys/fs/cgroup/*/kubepods/*/cgroup.procs \
      /sys/fs/cgroup/*/kubepods/*/*/cgroup.procs /sys/fs/cgroup/*/kubepods/*/*/*/cgroup.procs 2>/dev/null
}
pids="$(leftover | sort -un | tr '\n' ' ')"
if [[ -n "${pids// /}" ]]; then
  log "killing leftover container processes and shims: $pids"
  kill -KILL $pids 2>/dev/null
  sleep 0.5
fi

# 3. The control plane.
stop kube-scheduler 5
stop kube-controller-manager 5
stop kube-apiserver 10
stop etcd 10

# 4. Mounts: pod volumes, container rootfs, sandbox shm, network namespaces.
# In /proc/self/mounts, spaces in paths appear as \040.
roots=("$DATA_ROOT" "$RUN_ROOT")
grep -q '^path /run/containerd$' "$STATE/preexisting" 2>/dev/null || roots+=(/run/containerd)
grep -q '^path /var/lib/kubelet$' "$STATE/preexisting" 2>/dev/null || roots+=(/var/lib/kubelet)
for _ in 1 2 3; do
  mapfile -t mnts < <(awk '{print $2}' /proc/self/mounts | while read -r m; do
    for r in "${roots[@]}"; do [[ "$m" == "$r" || "$m" == "$r"/* ]] && echo "$m"; done
    [[ "$m" == /run/netns/cni-* || "$m" == /var/run/netns/cni-* ]] && echo "$m"
  done | sort -r -u)
  (( ${#mnts[@]} )) || break
  for m in "${mnts[@]}"; do
    m="$(printf '%b' "$m")"
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "could not unmount $m"
  done
done
rm -f /run/netns/cni-* 2>/dev/null

# 5. Network: veths on cni0, the bridge, iptables chains, forwarding.
if ip link show cni0 >/dev/null 2>&1; then
  for v in $(ip -o link show master cni0 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
    ip link del "$v" 2>/dev/null
  done
  ip link del cni0 2>/dev/null && log "removed cni0"
fi
clean_iptables() { # BINARY: drop our chains and every rule that jumps to them
  local ipt="$1" table chains
  command -v "$ipt" >/dev/null || return 0
  local dump; dump="$("$ipt-save" 2>/dev/null)" || return 0
  for table in $(sed -n 's/^\*//p' <<< "$dump"); do
    chains="$(awk -v t="$table" '/^\*/{cur=substr($0,2)} cur==t && /^:(CNI-|KUBE-|BUILDR-)/{print substr($1,2)}' <<< "$dump" \
      | while read -r c; do grep -qx "chain $ipt $table $c" "$STATE/preexisting" 2>/dev/null || echo "$c"; done)"
    [[ -n "$chains" ]] || continue
    local re; re="($(tr '\n' '|' <<< "$chains" | sed 's/|$//'))"
    {
      echo "*$table"
      awk -v t="$table" '/^\*/{cur=substr($0,2)} cur==t && /^-A /' <<< "$dump" \
        | grep -E -- "-j $re( |\$)" | grep -vE "^-A $re " | sed 's/^-A /-D /'
      for c in $chains; do echo "-F $c"; done
      for c in $chains; do echo "-X $c"; done
      echo COMMIT
    } | "$ipt-restore" --noflush || log "could not clean all $ipt chains in table $table"
  done
}
for ipt in iptables ip6tables iptables-legacy ip6tables-legacy; do clean_iptables "$ipt"; done
# kube-router's ipsets, now that no rule refers to them.
"$HERE/addons.sh" ipsets-clean
# iptables-nft creates the nftables tables (ip filter, ip6 nat, ...) on first use: remove those
# that did not exist before and hold no rules now.
if command -v nft >/dev/null && [[ -f "$STATE/preexisting" ]]; then
  nft list tables 2>/dev/null | while read -r _ fam name; do
    grep -qx "nft $fam $name" "$STATE/preexisting" && continue
    if ! nft list table "$fam" "$name" 2>/dev/null | grep -vqE '^\s*(table |chain |type |policy |\}|$)'; then
      nft delete table "$fam" "$name" 2>/dev/null || log "could not delete nftables table $fam $name"
    fi
  done
fi
fwd="$(awk '$1=="sysctl" && $2=="net.ipv4.ip_forward" {print $3}' "$STATE/preexisting" 2>/dev/null)"
[[ -n "$fwd" ]] && sysctl -qw net.ipv4.ip_forward="$fwd"

# 6. cgroups the kubelet and runc created (deepest first).
for d in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
  [[ -d "$d" ]] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
  [[ -d "$d" ]] && log "could not remove cgroup $d (processes left in it?)"
done

# 7. Files and folders.
rm -rf "$DATA_ROOT" "$RUN_ROOT"
rm -f "$CNI_CONF"
if [[ -f "$STATE/preexisting" ]]; then
  for p in "${OUTSIDE_PATHS[@]}"; do
    grep -qx "path $p" "$STATE/preexisting" || rm -rf "$p"
  done
  rm -f "$STATE/preexisting"
fi
rm -rf "$PIDS"
log "cluster down"
