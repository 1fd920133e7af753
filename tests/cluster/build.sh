#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and etcd from the
# Go module proxy into $BUILDR_CLUSTER_CACHE/<k8s version>/bin (outside the repository).
# Does nothing if the binaries are already there (delete the folder to force a rebuild).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/versions.sh"

BINS=(etcd kube-apiserver kube-controller-manager kube-scheduler kubelet)
PKGS=(k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager
  k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet)
# kubectl is built only on a machine that has none (the scripts then find it in $BIN_DIR).
if ! command -v kubectl >/dev/null 2>&1 || [[ -x "$BIN_DIR/kubectl" ]]; then
  BINS+=(kubectl); PKGS+=(k8s.io/kubernetes/cmd/kubectl)
fi
# The cache is keyed by the Kubernetes version (folder) and by what the build depends on (stamp).
stamp="$(cat "$HERE/go.mod" "$HERE/go.sum" "$HERE/build.sh" | sha256sum | cut -d' ' -f1)"
have_all() {
  [[ -f "$BIN_DIR/.stamp" && "$(cat "$BIN_DIR/.stamp")" == "$stamp" ]] || return 1
  for b in "${BINS[@]}"; do [[ -x "$BIN_DIR/$b" ]] || return 1; done
}
if have_all && [[ "${1:-}" != "--force" ]]; then
  echo "build: binaries for $K8S_VERSION already in $BIN_DIR"
  exit 0
fi

command -v go >/dev/null || { echo "build: no 'go' on PATH (need Go >= 1.25)" >&2; exit 1; }
export GOTOOLCHAIN=local GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED="${CGO_ENABLED:-1}"
mkdir -p "$CACHE_DIR"
tmp="$(mktemp -d "$CACHE_DIR/bin.tmp.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
build_date="$(date -u -d "@${SOURCE_DATE_EPOCH:-$(date +%s)}" +%Y-%m-%dT%H:%M:%SZ)"
ld="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ld+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ld+=" -X $pkg.gitCommit=go-module-proxy -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done

echo "build: building Kubernetes $K8S_VERSION and etcd $ETCD_VERSION into $BIN_DIR (this takes a while)"
start=$(date +%s)
cd "$HERE"
go build -p "${BUILD_JOBS:-2}" -trimpath -tags selinux,notest -ldflags "$ld" -o "$tmp/" "${PKGS[@]}"
# etcd's main package is the module root; go build names it after the last path element (v3).
go build -p "${BUILD_JOBS:-2}" -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3
mkdir -p "$BIN_DIR"
for b in "${BINS[@]}"; do mv -f "$tmp/$b" "$BIN_DIR/$b"; done
echo "$stamp" > "$BIN_DIR/.stamp"
echo "build: done in $(( $(date +%s) - start )) s"
