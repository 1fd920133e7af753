# Sourced by the cluster scripts: the pinned versions (keep in step with go.mod).
K8S_VERSION=v1.34.12
ETCD_VERSION=v3.6.4
BUILDR_CLUSTER_CACHE="${BUILDR_CLUSTER_CACHE:-/var/cache/buildr-cluster}"
CACHE_DIR="$BUILDR_CLUSTER_CACHE/$K8S_VERSION"
BIN_DIR="$CACHE_DIR/bin"
