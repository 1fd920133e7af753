#!/usr/bin/env bash
# Builds the tools the cluster tests need besides Kubernetes itself, each from its own Go module
# under tools/ (so that their Kubernetes libraries never move the cluster's), into the same
# cache folder as the cluster's binaries ($BUILDR_CLUSTER_CACHE/<k8s version>/bin):
#
#   helm         Helm v4, for charts/buildr (tools/helm)
#   kube-router  kube-router's NetworkPolicy firewall controller (tools/kube-router); only the
#                firewall runs here (see netpol.sh)
#   registry     the CNCF Distribution registry (tools/registry), which tests/cache_registry.rs
#                starts on 127.0.0.1 for the shared action cache
#
# Each is rebuilt only when its go.mod, go.sum or its own build recipe (package, flags) change:
# a stamp per tool, so that adding or changing one tool does not rebuild the others.
# Usage: build-tools.sh [--force] [--tests | TOOL...]   (default: all; --tests: those the Rust
# tests run, as test-tools.txt lists them)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/versions.sh"

force=0
if [[ "${1:-}" == --force ]]; then force=1; shift; fi
if [[ "${1:-}" == --tests ]]; then
  shift
  mapfile -t tools < <(awk '!/^#/ && $2 == "build" {print $1}' "$HERE/test-tools.txt")
else
  tools=("$@")
fi
(( ${#tools[@]} )) || tools=(helm kube-router registry)

mod_version() { # TOOL MODULE: the version go.mod requires
  awk -v m="$2" '$1 == m {print $2; exit} $1 == "require" && $2 == m {print $3; exit}' "$HERE/tools/$1/go.mod"
}

build_tool() { # NAME
  local name="$1" dir="$HERE/tools/$1" pkg ld version
  [[ -f "$dir/go.mod" ]] || { echo "build-tools: unknown tool '$name' (no $dir/go.mod)" >&2; return 1; }
  case "$name" in
    helm)
      version="$(mod_version helm helm.sh/helm/v4)"
      pkg=helm.sh/helm/v4/cmd/helm
      ld="-s -w -X helm.sh/helm/v4/internal/version.version=$version -X helm.sh/helm/v4/internal/version.gitTreeState=clean"
      ;;
    kube-router)
      version="$(mod_version kube-router github.com/cloudnativelabs/kube-router/v2)"
      pkg=github.com/cloudnativelabs/kube-router/v2/cmd/kube-router
      ld="-s -w -X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=$version"
      ;;
    registry)
      version="$(mod_version registry github.com/distribution/distribution/v3)"
      pkg=github.com/distribution/distribution/v3/cmd/registry
      ld="-s -w -X github.com/distribution/distribution/v3/version.version=$version"
      ;;
    *) echo "build-tools: no build recipe for '$name'" >&2; return 1 ;;
  esac
  # The build command below is the same for every tool; what differs is in the stamp.
  local stamp_file="$BIN_DIR/.stamp-$name" stamp
  stamp="$( (cat "$dir/go.mod" "$dir/go.sum"; echo "$pkg $ld") | sha256sum | cut -d' ' -f1)"
  if (( !force )) && [[ -x "$BIN_DIR/$name" && -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp" ]]; then
    echo "build-tools: $name already in $BIN_DIR"
    return 0
  fi
  command -v go >/dev/null || { echo "build-tools: no 'go' on PATH (need Go >= 1.26 for Helm 4)" >&2; return 1; }
  mkdir -p "$BIN_DIR"
  local tmp; tmp="$(mktemp -d "$CACHE_DIR/tool.tmp.XXXXXX")"
  echo "build-tools: building $name $version into $BIN_DIR"
  local start; start=$(date +%s)
  # Static (no cgo): none needs C (they exec ipset/iptables, talk to the API server or serve
  # HTTP).
  if ! (cd "$dir" && GOTOOLCHAIN=local GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0 \
        go build -p "${BUILD_JOBS:-2}" -trimpath -ldflags "$ld" -o "$tmp/$name" "$pkg"); then
    rm -rf "$tmp"
    echo "build-tools: building $name failed" >&2
    return 1
  fi
  mv -f "$tmp/$name" "$BIN_DIR/$name"
  rm -rf "$tmp"
  echo "$stamp" > "$stamp_file"
  echo "build-tools: $name done in $(( $(date +%s) - start )) s"
}

for t in "${tools[@]}"; do build_tool "$t"; done
