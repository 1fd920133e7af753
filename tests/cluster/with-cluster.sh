#!/usr/bin/env bash
# Usage: tests/cluster/with-cluster.sh CMD [ARGS...]
# Brings the cluster up (up.sh), runs CMD with KUBECONFIG exported, always brings the cluster
# down again (down.sh, also on failure or Ctrl-C), and exits with CMD's exit code.
# BUILDR_CLUSTER_KEEP=1 leaves the cluster running afterwards (for debugging).
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
[[ $# -gt 0 ]] || { echo "usage: $0 CMD [ARGS...]" >&2; exit 2; }

down() {
  if [[ "${BUILDR_CLUSTER_KEEP:-0}" == 1 ]]; then
    echo "with-cluster: BUILDR_CLUSTER_KEEP=1, leaving the cluster up (stop it with $HERE/down.sh)" >&2
  else
    "$HERE/down.sh" >&2 || echo "with-cluster: down.sh failed" >&2
  fi
}
trap down EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
child=""
forward() { # SIGNAL EXIT-CODE: pass a signal on to CMD, wait for it, then exit (runs down.sh)
  if [[ -n "$child" ]]; then kill -"$1" "$child" 2>/dev/null; wait "$child" 2>/dev/null; fi
  exit "$2"
}

if ! "$HERE/up.sh" >&2; then
  echo "with-cluster: up.sh failed; logs are in ${BUILDR_CLUSTER_STATE:-$HERE/.state}/logs" >&2
  exit 1
fi
export KUBECONFIG="${BUILDR_CLUSTER_STATE:-$HERE/.state}/admin.kubeconfig"
export BUILDR_CLUSTER_BASE_IMAGE=buildr.local/base:1 # for tests: pods need imagePullPolicy Never
# In the background (with stdin kept) so that a signal to this script is handled at once.
"$@" <&0 &
child=$!
trap 'forward INT 130' INT
trap 'forward TERM 143' TERM
wait "$child"
rc=$?
echo "with-cluster: '$*' exited with $rc" >&2
exit $rc
