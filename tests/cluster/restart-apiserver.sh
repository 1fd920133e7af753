#!/usr/bin/env bash
# Usage: tests/cluster/restart-apiserver.sh [DOWNTIME_SECONDS]
# Stops the cluster's kube-apiserver (SIGTERM, as a rolling upgrade would), keeps it down for
# DOWNTIME_SECONDS (default 3), starts it again with the same command line, and waits until it
# is ready. Every exec, watch and port-forward through it breaks meanwhile: what the tests of
# buildr's reconnection need.
set -euo pipefail
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"
downtime="${1:-3}"

pid="$(pid_of kube-apiserver)" || die "kube-apiserver is not running (is the cluster up?)"
mapfile -d '' args < "/proc/$pid/cmdline"
kill -TERM "$pid"
for _ in $(seq 100); do alive "$pid" || break; sleep 0.1; done
alive "$pid" && die "kube-apiserver (pid $pid) did not stop"
log "kube-apiserver stopped; down for ${downtime}s"
sleep "$downtime"
start kube-apiserver "${args[@]}"
wait_for kube-apiserver 120 "kube-apiserver /readyz" kc get --raw /readyz
log "kube-apiserver is back"
