#!/usr/bin/env bash
# Builds the cluster's container images without any registry or Docker engine, as hand-written
# docker-archive tarballs (manifest.json + config + one layer tar), into $CACHE_DIR/images/:
#
#   buildr.local/pause:1  the pod sandbox image (a static pause binary built with gcc -static)
#   buildr.local/base:1   a small image with the host's glibc, bash, sh, coreutils, tar, gzip,
#                         grep, sed, findutils and a static HTTP echo server (/usr/bin/echoserver),
#                         so that a binary built on this host (buildr) runs in it
#   buildr.local/busybox:1  Debian's static BusyBox and nothing else: a shell and tar, no libc
#                         (what a statically linked buildr must run in)
#   buildr.local/notar:1  BusyBox with a shell but no tar (an image buildr must refuse clearly)
#
# Rebuilds only when these sources change. Import with: ctr -n k8s.io images import FILE.
# BUILDR_BASE_EXTRA_BINS="/usr/bin/foo /usr/bin/bar" adds host binaries (and their libraries).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/versions.sh"

IMG_DIR="$CACHE_DIR/images"
PAUSE_IMAGE=buildr.local/pause:1
BASE_IMAGE=buildr.local/base:1
stamp_want="$(cat "$HERE/build-images.sh" "$HERE/images/pause.c" "$HERE/images/echoserver/main.go" \
  <(echo "${BUILDR_BASE_EXTRA_BINS:-}") | sha256sum | cut -d' ' -f1)"
if [[ -f "$IMG_DIR/stamp" && "$(cat "$IMG_DIR/stamp")" == "$stamp_want" \
      && -f "$IMG_DIR/pause.tar" && -f "$IMG_DIR/base.tar" && -f "$IMG_DIR/busybox.tar" \
      && -f "$IMG_DIR/notar.tar" ]]; then
  echo "images: up to date in $IMG_DIR"
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$IMG_DIR"

# write_image NAME ROOTFS OUT CONFIG_JSON_FRAGMENT: one-layer docker-archive tarball.
write_image() {
  local name="$1" rootfs="$2" out="$3" cfg="$4" d
  d="$(mktemp -d "$work/img.XXXXXX")"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$rootfs" -cf "$d/layer.tar" .
  local diff; diff="$(sha256sum "$d/layer.tar" | cut -d' ' -f1)"
  mkdir "$d/$diff"; mv "$d/layer.tar" "$d/$diff/layer.tar"
  printf '{"architecture":"amd64","os":"linux","created":"1970-01-01T00:00:00Z","config":%s,"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created":"1970-01-01T00:00:00Z","created_by":"buildr tests/cluster/build-images.sh"}]}' \
    "$cfg" "$diff" > "$d/config.json"
  local cid; cid="$(sha256sum "$d/config.json" | cut -d' ' -f1)"
  mv "$d/config.json" "$d/$cid.json"
  printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]' "$cid" "$name" "$diff" > "$d/manifest.json"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$d" -cf "$out.tmp" manifest.json "$cid.json" "$diff"
  mv -f "$out.tmp" "$out"
  echo "images: wrote $name -> $out ($(du -h "$out" | cut -f1))"
}

# --- pause -------------------------------------------------------------------------------
mkdir -p "$work/pause"
gcc -static -Os -s -o "$work/pause/pause" "$HERE/images/pause.c"
write_image "$PAUSE_IMAGE" "$work/pause" "$IMG_DIR/pause.tar" \
  '{"Entrypoint":["/pause"],"User":"65535:65535","Env":["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]}'

# --- base --------------------------------------------------------------------------------
r="$work/base"
mkdir -p "$r"/usr/{bin,sbin,lib/x86_64-linux-gnu,lib64} "$r"/{etc,root,home/nonroot,proc,sys,dev,run,var/tmp,tmp,workspace}
ln -s usr/bin "$r/bin"; ln -s usr/sbin "$r/sbin"; ln -s usr/lib "$r/lib"; ln -s usr/lib64 "$r/lib64"
chmod 1777 "$r/tmp" "$r/var/tmp"; chmod 700 "$r/root"; chown 65532:65532 "$r/home/nonroot"

# Executables of these Debian packages (those installed), plus extras.
bins=()
for pkg in bash dash coreutils tar gzip grep sed findutils diffutils debianutils procps hostname; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || continue
  while read -r f; do
    case "$f" in /bin/*|/usr/bin/*|/sbin/*|/usr/sbin/*) [[ -f "$f" && -x "$f" ]] && bins+=("$f") ;; esac
  done < <(dpkg -L "$pkg")
done
for f in ${BUILDR_BASE_EXTRA_BINS:-}; do bins+=("$f"); done
declare -A seen=()
libs=()
for f in "${bins[@]}"; do
  b="$(basename "$f")"
  [[ -n "${seen[$b]:-}" ]] && continue; seen[$b]=1
  case "$f" in */sbin/*) dest="$r/usr/sbin/$b" ;; *) dest="$r/usr/bin/$b" ;; esac
  cp -L "$f" "$dest"
  while read -r lib; do libs+=("$lib"); done < <(ldd "$f" 2>/dev/null | grep -oE '/[^ ]+' || true)
done
ln -sf dash "$r/usr/bin/sh"
# What a Rust binary built on this host may also link, besides what the tools above need.
for so in libc.so.6 libm.so.6 libdl.so.2 libpthread.so.0 librt.so.1 libutil.so.1 libresolv.so.2 \
          libgcc_s.so.1 libz.so.1 libssl.so.3 libcrypto.so.3 libzstd.so.1 liblzma.so.5 libbz2.so.1.0; do
  [[ -e "/usr/lib/x86_64-linux-gnu/$so" ]] && libs+=("/usr/lib/x86_64-linux-gnu/$so")
done
for lib in "${libs[@]}"; do
  [[ -e "$lib" ]] || continue
  dest="$r/usr/${lib#/usr/}"
  mkdir -p "$(dirname "$dest")"
  [[ -e "$dest" ]] || cp -L "$lib" "$dest"
done
CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS="-mod=mod -buildvcs=false" go -C "$HERE" build -trimpath -ldflags "-s -w" \
  -o "$r/usr/bin/echoserver" ./images/echoserver
cat > "$r/etc/passwd" <<'P'
root:x:0:0:root:/root:/bin/bash
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/bin/sh
P
cat > "$r/etc/group" <<'P'
root:x:0:
nogroup:x:65534:
nonroot:x:65532:
P
printf 'passwd: files\ngroup: files\nhosts: files dns\n' > "$r/etc/nsswitch.conf"
touch "$r/etc/hosts" "$r/etc/resolv.conf" "$r/etc/hostname"
cp /etc/os-release "$r/etc/os-release" 2>/dev/null || true
write_image "$BASE_IMAGE" "$r" "$IMG_DIR/base.tar" \
  '{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["/bin/sh"],"WorkingDir":"/"}'

# --- busybox and notar -------------------------------------------------------------------
# busybox_image NAME OUT APPLET...: the static BusyBox with links for the given applets (all
# of them when none are given).
busybox_image() {
  local name="$1" out="$2"; shift 2
  local b; b="$(mktemp -d "$work/busybox.XXXXXX")"
  mkdir -p "$b"/{bin,tmp,etc,workspace}
  chmod 1777 "$b/tmp"
  cp /bin/busybox "$b/bin/busybox"
  local applets=("$@")
  (( ${#applets[@]} )) || mapfile -t applets < <(/bin/busybox --list)
  for a in "${applets[@]}"; do [[ "$a" == busybox ]] || ln -s busybox "$b/bin/$a"; done
  printf 'root:x:0:0:root:/root:/bin/sh\nnonroot:x:65532:65532:nonroot:/tmp:/bin/sh\n' > "$b/etc/passwd"
  write_image "$name" "$b" "$out" '{"Env":["PATH=/bin"],"Cmd":["/bin/sh"],"WorkingDir":"/"}'
}
[[ -x /bin/busybox ]] || { echo "images: /bin/busybox is missing (apt-get install busybox-static)" >&2; exit 1; }
busybox_image buildr.local/busybox:1 "$IMG_DIR/busybox.tar"
busybox_image buildr.local/notar:1 "$IMG_DIR/notar.tar" sh sleep mkdir mv cat ls echo

echo "$stamp_want" > "$IMG_DIR/stamp"
