#!/usr/bin/env bash
# make demo: login-protector's demo, replayed on the local cluster (e2e/dev.sh up):
# the seed's StatefulSet runs on the simulated node, someone logs in (a real pty in the
# container's cgroup), the pod is evicted while logged in, then after logging out.
# The cluster stays up afterwards for poking around; `make dev-down` stops it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
t0=$(date +%s)
since() { echo "$(( $(date +%s) - t0 ))s"; }
# The Rust build runs beside the Go builds of the pinned tools: while Go fetches
# modules (network) the cores are Rust's, and a warm tool cache leaves them all to it.
mkdir -p .dev
echo "demo: building the Rust binaries in the background (log: .dev/rust-build.log)"
cargo build --quiet -p sessionguard-e2e --bin sg-cluster -p sessionguard-agent \
  -p sessionguard-controller >.dev/rust-build.log 2>&1 &
rust_pid=$!
bash e2e/build-tools.sh kube etcd helm
echo "demo: pinned tools ready after $(since); waiting for the Rust build"
if ! wait "$rust_pid"; then
  cat .dev/rust-build.log >&2
  echo "demo: the Rust build failed (above)" >&2
  exit 1
fi
echo "demo: Rust binaries ready after $(since); starting the cluster"
bash e2e/dev.sh up
echo "demo: cluster, agent and controller up after $(since)"
export KUBECONFIG="$root/.dev/kubeconfig"
k="$root/.dev/bin/kubectl"
sg="${CARGO_TARGET_DIR:-$root/target}/debug/sg-cluster"
ns=sessionguard-demo
pod=target-sts-0
node=${SG_NODES:-sim-dev}; node=${node%%,*}
agent_addr=${SG_DEV_AGENT_ADDR:-127.0.0.1:19102}   # as in e2e/dev.sh
work=$(mktemp -d)
session_pid=
cleanup() {
  [ -n "$session_pid" ] && kill "$session_pid" 2>/dev/null && wait "$session_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
step() { printf '\n\033[1m== %s\033[0m (at %s)\n' "$*" "$(since)"; }

evict() {
  # The eviction API, as `kubectl drain` and kubectl-evict use it.
  if out=$("$k" create --raw "/api/v1/namespaces/$ns/pods/$pod/eviction" -f - 2>&1 <<JSON
{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":"$pod","namespace":"$ns"}}
JSON
  ); then
    echo "eviction accepted"
  else
    echo "eviction refused: $out"
  fi
}

step "0. a fresh namespace pinned to node $node, and the seed's StatefulSet, unchanged"
"$k" delete namespace "$ns" --ignore-not-found --wait=true
"$k" create namespace "$ns"
"$k" annotate namespace "$ns" "scheduler.alpha.kubernetes.io/node-selector=sessionguard.io/sim-node=$node"
"$k" -n "$ns" apply -f e2e/fixtures/target-sts.yaml
"$k" -n "$ns" wait --for=create "pod/$pod" --timeout=60s >/dev/null
"$k" -n "$ns" wait --for=condition=Ready "pod/$pod" --timeout=60s
"$k" -n "$ns" get pod "$pod" -o wide

step "1. log in to the pod (sg-cluster exec: our kubectl exec -it)"
mkfifo "$work/stdin"
"$sg" exec -n "$ns" -c main "$pod" -- sh <"$work/stdin" >"$work/session.log" 2>&1 &
session_pid=$!
exec 3>"$work/stdin"   # the session lasts while this stays open
for _ in $(seq 50); do grep -q '^session pid=' "$work/session.log" && break; sleep 0.1; done
grep '^session pid=' "$work/session.log" || { cat "$work/session.log"; exit 1; }
pty_pid=$(sed -n 's/^session pid=\([0-9]*\).*/\1/p' "$work/session.log")
echo "its /proc/$pty_pid/cgroup: $(grep '^0::' "/proc/$pty_pid/cgroup")"

if [ "${SG_DEV_COMPONENTS:-1}" = 1 ]; then
  step "1b. the agent reports the session; the controller protects the pod"
  for _ in $(seq 100); do curl -fs http://$agent_addr/sessions | grep -q "\"$pod\"" && break; sleep 0.1; done
  echo "agent's /sessions:"
  curl -fs http://$agent_addr/sessions | grep -E '"(pod_uid|container_id|tty|command|uid)"' | sed 's/^ */  /'
  "$k" -n "$ns" wait --for=create "pdb/sessionguard-$pod" --timeout=30s >/dev/null
  "$k" -n "$ns" get pdb "sessionguard-$pod" -o wide
  echo "pod labels and annotations set by sessionguard:"
  "$k" -n "$ns" get pod "$pod" -o yaml | grep -E '^    (sessionguard\.io|cluster-autoscaler|karpenter)' || true
  "$k" -n "$ns" get events --field-selector "involvedObject.name=$pod" -o custom-columns=REASON:.reason,MESSAGE:.message | tail -n 4
fi

step "2. evict the pod while logged in"
evict
"$k" -n "$ns" get pod "$pod" -o custom-columns=NAME:.metadata.name,UID:.metadata.uid,PHASE:.status.phase

step "3. log out"
exec 3>&-
wait "$session_pid" || true
session_pid=
tail -n 1 "$work/session.log"

if [ "${SG_DEV_COMPONENTS:-1}" = 1 ]; then
  step "3b. the last session ended: the controller releases the pod"
  "$k" -n "$ns" wait --for=delete "pdb/sessionguard-$pod" --timeout=60s
fi

step "4. evict the pod after logging out"
uid=$("$k" -n "$ns" get pod "$pod" -o jsonpath='{.metadata.uid}')
evict
# kubectl wait has no "not equal": poll until the StatefulSet's replacement exists.
for _ in $(seq 300); do
  now=$("$k" -n "$ns" get pod "$pod" -o jsonpath='{.metadata.uid}' 2>/dev/null || true)
  [ -n "$now" ] && [ "$now" != "$uid" ] && break
  sleep 0.2
done
[ -n "$now" ] && [ "$now" != "$uid" ] || { echo "demo: $pod was not replaced after the eviction" >&2; exit 1; }
"$k" -n "$ns" wait --for=condition=Ready "pod/$pod" --timeout=60s
"$k" -n "$ns" get pod "$pod" -o custom-columns=NAME:.metadata.name,UID:.metadata.uid,PHASE:.status.phase
echo "(was $uid)"

step "done: the cluster is still up (KUBECONFIG=$KUBECONFIG); make dev-down stops it"
