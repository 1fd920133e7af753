#!/usr/bin/env bash
# Prints the resident memory (RSS) of each cluster component started by up.sh, of the
# containerd shims, and the total.
set -euo pipefail
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
total=0
for c in "${COMPONENTS_START[@]}"; do
  if pid="$(pid_of "$c")"; then
    kb=$(rss "$pid"); total=$((total + kb)); printf '%-26s %8d KiB\n' "$c" "$kb"
  else
    printf '%-26s %8s\n' "$c" "not running"
  fi
done
shims=0 n=0
for p in /proc/[0-9]*; do
  if tr '\0' ' ' < "$p/cmdline" 2>/dev/null | grep -q -- "containerd-shim.* -address $CONTAINERD_SOCK"; then
    kb=$(rss "${p#/proc/}"); shims=$((shims + kb)); n=$((n + 1))
  fi
done
total=$((total + shims))
printf '%-26s %8d KiB\n' "containerd shims ($n)" "$shims"
printf '%-26s %8d KiB (%d MiB)\n' total "$total" $((total / 1024))
