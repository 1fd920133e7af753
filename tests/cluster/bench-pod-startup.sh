#!/usr/bin/env bash
# Measures the time from `kubectl create` of a pod with the local base image to Running
# (container started), N times (default 10), one pod at a time, and prints each and the median.
# Usage: tests/cluster/bench-pod-startup.sh [N]   (needs a running cluster: up.sh)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/versions.sh" # PATH: kubectl from the cache if the machine has none
export KUBECONFIG="${KUBECONFIG:-$HERE/.state/admin.kubeconfig}"
N="${1:-10}"
IMAGE="${BUILDR_BASE_IMAGE:-buildr.local/base:1}"
NS="buildr-bench-$$"
kubectl create namespace "$NS" >/dev/null
trap 'kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1' EXIT
for _ in $(seq 1 60); do kubectl -n "$NS" get serviceaccount default >/dev/null 2>&1 && break; sleep 0.5; done

times=()
for i in $(seq 1 "$N"); do
  manifest="apiVersion: v1
kind: Pod
metadata: {name: p$i}
spec:
  terminationGracePeriodSeconds: 0
  automountServiceAccountToken: false
  containers:
  - {name: main, image: $IMAGE, imagePullPolicy: Never, command: [sleep, infinity]}"
  t0=$(date +%s%N)
  kubectl -n "$NS" create -f - >/dev/null <<< "$manifest"
  # Poll the phase rather than `kubectl wait` (which adds its own watch set-up latency).
  until [[ "$(kubectl -n "$NS" get pod "p$i" -o jsonpath='{.status.phase}')" == Running ]]; do sleep 0.05; done
  t1=$(date +%s%N)
  ms=$(( (t1 - t0) / 1000000 ))
  times+=("$ms")
  echo "pod $i: ${ms} ms"
  kubectl -n "$NS" delete pod "p$i" --grace-period=0 --wait=true >/dev/null 2>&1 || true
done
mapfile -t sorted < <(printf '%s\n' "${times[@]}" | sort -n)
n=${#sorted[@]}
if (( n % 2 )); then median=${sorted[n/2]}; else median=$(( (sorted[n/2-1] + sorted[n/2]) / 2 )); fi
echo "pod create -> Running: median ${median} ms over $n pods (min ${sorted[0]} ms, max ${sorted[n-1]} ms)"
