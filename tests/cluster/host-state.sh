#!/usr/bin/env bash
# Prints what up.sh may change on this machine, for comparing before up.sh and after down.sh:
#   tests/cluster/host-state.sh > /tmp/before; up.sh; ...; down.sh
#   tests/cluster/host-state.sh | diff /tmp/before - && echo "machine as before"
# Links, iptables (nft and legacy, without counters), nftables tables, ipsets, mounts, the
# sysctls the cluster touches, and cluster processes.
set -euo pipefail
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"
echo "## ip link"; ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | sort
for ipt in iptables ip6tables iptables-legacy ip6tables-legacy; do
  command -v "$ipt-save" >/dev/null || continue
  echo "## $ipt-save"; { "$ipt-save" 2>/dev/null || true; } | sed -e '/^#/d' -e 's/ \[[0-9]*:[0-9]*\]$//'
done
echo "## nft tables"; nft list tables 2>/dev/null || true
echo "## ipsets"; if command -v ipset >/dev/null; then ipset list -n 2>/dev/null | sort; fi
echo "## mounts"; awk '{print $2, $3}' /proc/self/mounts | sort
echo "## sysctls"
for s in net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables net.ipv4.conf.all.route_localnet \
         net.ipv4.conf.default.route_localnet; do
  printf '%s = %s\n' "$s" "$(sysctl -n "$s" 2>/dev/null || echo absent)"
done
echo "## processes"
ps -eo comm= | grep -E '^(etcd|kube-|kubelet|containerd|runc)' | sort || true
