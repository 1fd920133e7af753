# Sourced by the cluster scripts: the pinned versions come from go.mod (the one place to change
# them; then run `GOTOOLCHAIN=local GOFLAGS=-mod=mod go mod tidy` and commit go.mod and go.sum).
# shellcheck shell=bash disable=SC2034
_cluster_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
K8S_VERSION="$(awk '$1 == "k8s.io/kubernetes" {print $2; exit}' "$_cluster_dir/go.mod")"
ETCD_VERSION="$(awk '$1 == "go.etcd.io/etcd/server/v3" {print $2; exit}' "$_cluster_dir/go.mod")"
BUILDR_CLUSTER_CACHE="${BUILDR_CLUSTER_CACHE:-/var/cache/buildr-cluster}"
CACHE_DIR="$BUILDR_CLUSTER_CACHE/$K8S_VERSION"
BIN_DIR="$CACHE_DIR/bin"
# Go: the one on PATH, else the usual install location.
command -v go >/dev/null 2>&1 || { [[ -x /usr/local/go/bin/go ]] && PATH="$PATH:/usr/local/go/bin"; }
# kubectl: the one on PATH (any recent version), else the one build.sh builds when none is found.
command -v kubectl >/dev/null 2>&1 || PATH="$PATH:$BIN_DIR"
export PATH
