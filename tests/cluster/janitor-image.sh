#!/usr/bin/env bash
# The janitor image of charts/buildr, built without a registry or Docker engine: the same
# content as charts/buildr/image/Containerfile (the static buildr binary at /usr/local/bin/buildr,
# and buildr-executor beside it when it is beside BUILDR_BINARY: what the pool controller sends
# into warm pods; /etc/passwd and /etc/group for uid 65532, USER 65532, ENTRYPOINT buildr) as a hand-written
# docker-archive tarball, like build-images.sh writes the others.
#
# Usage: janitor-image.sh [--import] [BUILDR_BINARY]
#   BUILDR_BINARY  default: $BUILDR_STATIC_BIN, else target/x86_64-unknown-linux-gnu/dist/buildr
#                  (`cargo dist`, the alias in .cargo/config.toml: glibc linked statically)
#   --import       also import it into the running tests/cluster containerd
# Writes $CACHE_DIR/images/janitor.tar and prints the image name (buildr.local/janitor:<hash>,
# the hash of the binary, so that a new build is never mistaken for an old one) as its last line.
set -euo pipefail
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

import=0
if [[ "${1:-}" == --import ]]; then import=1; shift; fi
root="$(cd "$HERE/../.." && pwd)"
bin="${1:-${BUILDR_STATIC_BIN:-$root/target/x86_64-unknown-linux-gnu/dist/buildr}}"
[[ -x "$bin" ]] || die "no static buildr at $bin; build it with: cargo dist"
if ldd "$bin" >/dev/null 2>&1 && ! ldd "$bin" 2>&1 | grep -q 'statically linked'; then
  die "$bin is dynamically linked; the janitor image has no libc (build it with crt-static)"
fi

lean="$(dirname "$bin")/buildr-executor"
[[ -x "$lean" ]] || lean=""
hash="$(cat "$bin" ${lean:+"$lean"} | sha256sum | cut -c1-12)"
image="buildr.local/janitor:$hash"
out_dir="$CACHE_DIR/images"
out="$out_dir/janitor.tar"
mkdir -p "$out_dir"

if [[ ! -f "$out" || "$(cat "$out_dir/janitor.image" 2>/dev/null)" != "$image" ]]; then
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  r="$work/rootfs"
  mkdir -p "$r/usr/local/bin" "$r/etc" "$r/tmp"
  chmod 1777 "$r/tmp"
  install -m 0755 "$bin" "$r/usr/local/bin/buildr"
  strip "$r/usr/local/bin/buildr" 2>/dev/null || true
  if [[ -n "$lean" ]]; then install -m 0755 "$lean" "$r/usr/local/bin/buildr-executor"; fi
  printf 'nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin\n' > "$r/etc/passwd"
  printf 'nonroot:x:65532:\n' > "$r/etc/group"
  d="$work/img"; mkdir -p "$d"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$r" -cf "$d/layer.tar" .
  diff_id="$(sha256sum "$d/layer.tar" | cut -d' ' -f1)"
  mkdir "$d/$diff_id"; mv "$d/layer.tar" "$d/$diff_id/layer.tar"
  printf '{"architecture":"amd64","os":"linux","created":"1970-01-01T00:00:00Z","config":{"User":"65532:65532","Entrypoint":["/usr/local/bin/buildr"],"Cmd":["k8s","gc"],"Env":["PATH=/usr/local/bin"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created":"1970-01-01T00:00:00Z","created_by":"buildr tests/cluster/janitor-image.sh"}]}' \
    "$diff_id" > "$d/config.json"
  cid="$(sha256sum "$d/config.json" | cut -d' ' -f1)"
  mv "$d/config.json" "$d/$cid.json"
  printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]' "$cid" "$image" "$diff_id" > "$d/manifest.json"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$d" -cf "$out.tmp" manifest.json "$cid.json" "$diff_id"
  mv -f "$out.tmp" "$out"
  echo "$image" > "$out_dir/janitor.image"
  log "janitor image $image -> $out ($(du -h "$out" | cut -f1))"
fi
if (( import )); then
  [[ -S "$CONTAINERD_SOCK" ]] || die "tests/cluster's containerd is not running (no $CONTAINERD_SOCK)"
  ctr_ images import "$out" >/dev/null
  log "imported $image into containerd (namespace k8s.io)"
fi
echo "$image"
