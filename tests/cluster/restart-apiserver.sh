#!/usr/bin/env bash
# Usage: tests/cluster/restart-apiserver.sh [DOWNTIME_SECONDS]
# Kills the cluster's kube-apiserver (SIGKILL, as a crash or a lost control-plane node would:
# a graceful stop lets long-running streams drain and finish), keeps it down for
# DOWNTIME_SECONDS (default 3), starts it again as up.sh does, and waits until it is ready.
# Every exec, watch and port-forward through it breaks: what the tests of buildr's reconnection
# need. With no API server running, it only starts one.
set -euo pipefail
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"
downtime="${1:-3}"

if pid="$(pid_of kube-apiserver)"; then
  kill -KILL "$pid"
  for _ in $(seq 100); do alive "$pid" || break; sleep 0.1; done
  log "kube-apiserver killed; down for ${downtime}s"
  sleep "$downtime"
fi
start_apiserver "$(host_ip)"
wait_for kube-apiserver 120 "kube-apiserver /readyz" kc get --raw /readyz
log "kube-apiserver is back"
