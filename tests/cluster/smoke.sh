#!/usr/bin/env bash
# Smoke test that the cluster is a real one: pods from the local image run and exit, exec with
# stdin, port-forward, logs -f, NetworkPolicy, RBAC denial, garbage collection.
# Needs KUBECONFIG (or tests/cluster/.state/admin.kubeconfig) and kubectl.
# Ends with "smoke: N passed, M failed"; exits non-zero if anything failed.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/versions.sh" # PATH: kubectl from the cache if the machine has none
export KUBECONFIG="${KUBECONFIG:-$HERE/.state/admin.kubeconfig}"
IMAGE="${BUILDR_BASE_IMAGE:-buildr.local/base:1}"
NS="buildr-smoke-$$-$RANDOM"
PASSED=0 FAILED=0
WORK="$(mktemp -d)"
BG_PIDS=()

cleanup() {
  for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null; done
  kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1
  rm -rf "$WORK"
}
trap cleanup EXIT

pass() { PASSED=$((PASSED + 1)); echo "ok   - $1"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL - $1" >&2; [[ -n "${2:-}" ]] && sed 's/^/       /' <<< "$2" >&2; return 0; }
k() { kubectl -n "$NS" "$@"; }

pod() { # NAME COMMAND [POD-SPEC-LINES [CONTAINER-LINES]]: a pod from the local image
  local name="$1" cmd="$2" extra="${3:-}" cextra="${4:-}"
  k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $name
  labels: {app: $name}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
$extra
  containers:
  - name: main
    image: $IMAGE
    imagePullPolicy: Never
    command: ["/bin/sh", "-c", $(printf '%s' "$cmd" | sed 's/\\/\\\\/g; s/"/\\"/g; s/^/"/; s/$/"/')]
$cextra
EOF
}
wait_running() { k wait --for=condition=Ready "pod/$1" --timeout="${2:-90}s" >/dev/null 2>&1; }
describe() { k describe pod "$1" 2>&1 | tail -n 25; }

echo "smoke: namespace $NS, image $IMAGE, KUBECONFIG=$KUBECONFIG"

# --- 0. the API server answers, the node is Ready ----------------------------------------
if out="$(kubectl get nodes --no-headers 2>&1)" && grep -qw Ready <<< "$out"; then
  pass "node Ready: $(awk '{print $1, $5}' <<< "$out" | head -1)"
else
  fail "no Ready node" "$out"
  echo "smoke: $PASSED passed, $FAILED failed"; exit 1
fi
kubectl create namespace "$NS" >/dev/null || { echo "smoke: cannot create namespace $NS" >&2; exit 1; }
# The namespace's default service account is created by the controller-manager.
for _ in $(seq 1 60); do k get serviceaccount default >/dev/null 2>&1 && break; sleep 0.5; done

# --- 1. a pod from the local image runs to completion (least-privilege settings) ---------
pod exits 'echo "hello from $(hostname)"; id -u; exit 0' '  automountServiceAccountToken: false
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    seccompProfile: {type: RuntimeDefault}' '    securityContext:
      allowPrivilegeEscalation: false
      capabilities: {drop: [ALL]}
      readOnlyRootFilesystem: true'
if k wait --for=jsonpath='{.status.phase}'=Succeeded pod/exits --timeout=90s >/dev/null 2>&1; then
  code="$(k get pod exits -o jsonpath='{.status.containerStatuses[0].state.terminated.exitCode}')"
  logs="$(k logs exits 2>&1)"
  if [[ "$code" == 0 && "$logs" == *"hello from exits"* && "$logs" == *65532* ]]; then
    pass "pod from $IMAGE ran as uid 65532, RuntimeDefault seccomp, no capabilities, read-only root: phase Succeeded, exit code 0"
  else
    fail "pod exits: exit code '$code', logs: $logs"
  fi
else
  fail "pod exits did not reach phase Succeeded" "$(describe exits)"
fi
pod fails 'exit 3'
if k wait --for=jsonpath='{.status.phase}'=Failed pod/fails --timeout=90s >/dev/null 2>&1 \
   && [[ "$(k get pod fails -o jsonpath='{.status.containerStatuses[0].state.terminated.exitCode}')" == 3 ]]; then
  pass "a pod exiting with 3: phase Failed, exit code 3"
else
  fail "pod fails did not end Failed with exit code 3" "$(describe fails)"
fi

# --- 2. exec -i with stdin -----------------------------------------------------------------
pod box 'exec sleep infinity'
if wait_running box; then
  got="$(printf 'line one\nline two\n' | k exec -i box -- cat 2>&1)"
  if [[ "$got" == $'line one\nline two' ]]; then pass "exec -i: stdin piped through cat"; else fail "exec -i cat returned: $got"; fi

  mkdir -p "$WORK/in/sub"
  head -c 3000000 /dev/urandom > "$WORK/in/big.bin"
  echo small > "$WORK/in/sub/small.txt"
  if tar -C "$WORK/in" -cf - . | k exec -i box -- sh -c 'mkdir -p /tmp/x && tar -xf - -C /tmp/x' 2>"$WORK/err" \
     && mkdir -p "$WORK/out" && k exec box -- tar -cf - -C /tmp/x . 2>>"$WORK/err" | tar -xf - -C "$WORK/out" \
     && cmp -s "$WORK/in/big.bin" "$WORK/out/big.bin" && cmp -s "$WORK/in/sub/small.txt" "$WORK/out/sub/small.txt"; then
    pass "exec -i: a 3 MB tar went in through stdin and came back out identical"
  else
    fail "tar round trip through exec failed" "$(cat "$WORK/err")"
  fi
  # The buildr binary built on this host runs in the base image (if one has been built).
  bin="${BUILDR_BIN:-}"
  for b in "$HERE/../../target/release/buildr" "$HERE/../../target/debug/buildr"; do
    [[ -z "$bin" && -x "$b" ]] && bin="$b"
  done
  if [[ -n "$bin" ]]; then
    if tar -C "$(dirname "$bin")" -cf - "$(basename "$bin")" | k exec -i box -- tar -xf - -C /tmp 2>"$WORK/err" \
       && out="$(k exec box -- "/tmp/$(basename "$bin")" --help 2>&1)"; then
      pass "the buildr binary built on this host ($(realpath --relative-to="$PWD" "$bin")) runs in $IMAGE"
    else
      fail "buildr binary $bin does not run in $IMAGE" "$(cat "$WORK/err")"$'\n'"${out:-}"
    fi
  else
    echo "skip - no buildr binary in target/ (set BUILDR_BIN to check one)"
  fi
  code=0; k exec box -- sh -c 'exit 7' >/dev/null 2>&1 || code=$?
  if [[ $code == 7 ]]; then pass "exec: exit code 7 propagated"; else fail "exec exit code: got $code, want 7"; fi
else
  fail "pod box not Running" "$(describe box)"
fi

# --- 3. port-forward reaches a server in a pod -----------------------------------------------
pod web 'exec echoserver -listen 127.0.0.1:8080'
if wait_running web; then
  k port-forward pod/web :8080 > "$WORK/pf.out" 2>&1 &
  BG_PIDS+=("$!")
  port=""
  for _ in $(seq 1 50); do
    port="$(sed -n 's/^Forwarding from 127.0.0.1:\([0-9]*\) .*/\1/p' "$WORK/pf.out" | head -1)"
    [[ -n "$port" ]] && break; sleep 0.2
  done
  got="" echo_got=""
  if [[ -n "$port" ]]; then
    for _ in $(seq 1 20); do
      got="$(curl -fsS --max-time 5 "http://127.0.0.1:$port/smoke" 2>&1)" && break; sleep 0.5
    done
    echo_got="$(head -c 200000 /dev/urandom | base64 -w0 | tee "$WORK/body" | curl -fsS --max-time 10 --data-binary @- "http://127.0.0.1:$port/echo" 2>&1)"
  fi
  if [[ "$got" == "hello from web /smoke" && "$echo_got" == "$(cat "$WORK/body")" ]]; then
    pass "port-forward: HTTP to a server on 127.0.0.1:8080 in the pod (GET and a 266 KB echo)"
  else
    fail "port-forward to pod web: port '$port', GET returned '$got'" "$(cat "$WORK/pf.out")"
  fi
else
  fail "pod web not Running" "$(describe web)"
fi

# --- 4. logs -f streams while the container runs -------------------------------------------
pod ticker 'for i in 1 2 3 4 5 6; do echo "tick $i"; sleep 1; done; echo done'
if wait_running ticker 60; then
  k logs -f ticker > "$WORK/ticks" 2>&1 &
  lpid=$!; BG_PIDS+=("$lpid")
  streamed=no
  for _ in $(seq 1 25); do
    if grep -q "tick" "$WORK/ticks" && [[ "$(k get pod ticker -o jsonpath='{.status.phase}')" == Running ]]; then
      streamed=yes; break
    fi
    sleep 0.2
  done
  ended=no
  for _ in $(seq 1 100); do [[ -d /proc/$lpid ]] || { ended=yes; break; }; sleep 0.2; done
  if [[ $streamed == yes && $ended == yes ]] && grep -q "tick 6" "$WORK/ticks" && grep -qx "done" "$WORK/ticks"; then
    pass "logs -f: lines arrived while the pod ran, and the stream ended with the container"
  else
    fail "logs -f: streamed=$streamed ended=$ended" "$(cat "$WORK/ticks")"
  fi
else
  fail "pod ticker not Running" "$(describe ticker)"
fi

# --- 5. a NetworkPolicy is accepted (enforcement: tests/netpol.rs, kube-router via addons.sh) ---
if k apply -f - >/dev/null 2>"$WORK/err" <<EOF
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-ingress}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress, Egress]
  ingress: []
  egress: []
EOF
then
  if [[ "$(k get networkpolicy deny-ingress -o jsonpath='{.spec.policyTypes}')" == *Ingress* ]]; then
    pass "NetworkPolicy accepted by the API"
  else fail "NetworkPolicy not readable after create"; fi
else
  fail "NetworkPolicy rejected" "$(cat "$WORK/err")"
fi

# --- 6. RBAC denies a service account what its Role does not grant ---------------------------
SA="system:serviceaccount:$NS:limited"
k create serviceaccount limited >/dev/null
k create role pod-reader --verb=get,list,watch --resource=pods >/dev/null
k create rolebinding limited-pod-reader --role=pod-reader --serviceaccount="$NS:limited" >/dev/null
can_list="$(k auth can-i list pods --as="$SA" 2>&1)"
can_secrets="$(k auth can-i get secrets --as="$SA" 2>&1)"
can_delete="$(k auth can-i delete pods --as="$SA" 2>&1)"
if [[ "$can_list" == yes && "$can_secrets" == no && "$can_delete" == no ]]; then
  pass "auth can-i --as=$SA: list pods yes, get secrets no, delete pods no"
else
  fail "auth can-i: list pods=$can_list get secrets=$can_secrets delete pods=$can_delete"
fi
token="$(k create token limited --duration=10m 2>&1)"
server="$(kubectl config view --minify --raw -o jsonpath='{.clusters[0].cluster.server}')"
kubectl config view --minify --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' | base64 -d > "$WORK/ca.crt"
as_sa() { kubectl --kubeconfig=/dev/null --server="$server" --certificate-authority="$WORK/ca.crt" --token="$token" -n "$NS" "$@"; }
ok_list="$(as_sa get pods -o name 2>&1)"; ok_rc=$?
denied="$(as_sa get secrets 2>&1)"; denied_rc=$?
imp="$(k get secrets --as="$SA" 2>&1)"; imp_rc=$?
if [[ $ok_rc == 0 && $denied_rc != 0 && "$denied" == *Forbidden* && $imp_rc != 0 && "$imp" == *Forbidden* ]]; then
  pass "RBAC: the service account's own token lists pods, and gets Forbidden on secrets (token and impersonation)"
else
  fail "RBAC with the service account token: list pods rc=$ok_rc, get secrets rc=$denied_rc, impersonated rc=$imp_rc" \
    "$ok_list"$'\n'"$denied"$'\n'"$imp"
fi

# --- 7. deleting a pod garbage-collects what it owns ----------------------------------------
pod owner 'exec sleep infinity'
uid="$(k get pod owner -o jsonpath='{.metadata.uid}')"
k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: ConfigMap
metadata:
  name: owned-by-pod
  ownerReferences:
  - {apiVersion: v1, kind: Pod, name: owner, uid: "$uid"}
data: {k: v}
EOF
k delete pod owner --wait=true --timeout=60s >/dev/null 2>&1
gone=no
for _ in $(seq 1 120); do
  k get configmap owned-by-pod >/dev/null 2>&1 || { gone=yes; break; }
  sleep 0.5
done
if [[ $gone == yes ]]; then pass "garbage collection: the ConfigMap owned by the deleted pod is gone"
else fail "ConfigMap owned-by-pod still exists 60 s after its owner pod was deleted"; fi

echo "smoke: $PASSED passed, $FAILED failed"
[[ $FAILED == 0 ]]
