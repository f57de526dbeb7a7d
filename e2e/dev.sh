#!/usr/bin/env bash
# make dev-up / dev-down: a local control plane, one simulated node (and, once they
# exist, the controller and the agent) running in the background.
#   up     start what is not running, wait until ready, write .dev/kubeconfig
#   down   stop everything started here, remove the simulated nodes' cgroups
#   status show what runs
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export SG_CLUSTER_DIR="${SG_CLUSTER_DIR:-$root/.dev/cluster}"
export SG_NODES="${SG_NODES:-sim-dev}"
cargo build --quiet -p sessionguard-e2e --bin sg-cluster
sg="$root/target/debug/sg-cluster"
[ -n "${CARGO_TARGET_DIR:-}" ] && sg="$CARGO_TARGET_DIR/debug/sg-cluster"

# Starts "$@" in the background with its output in logs/<name>.log and a pidfile in
# pids/<name>.pid; `sg-cluster down` stops every pidfile it finds there.
start_bg() {
  local name=$1; shift
  local pidfile="$SG_CLUSTER_DIR/pids/$name.pid"
  if [ -f "$pidfile" ] && kill -0 "$(cut -d' ' -f1 "$pidfile")" 2>/dev/null; then
    return 0
  fi
  setsid "$@" >>"$SG_CLUSTER_DIR/logs/$name.log" 2>&1 < /dev/null &
  local pid=$!
  # "<pid> <start time>": down checks both, so a recycled pid is never signalled.
  echo "$pid $(cut -d')' -f2- "/proc/$pid/stat" | awk '{print $20}')" > "$pidfile"
}

k() { "$root/.dev/bin/kubectl" "$@"; }
sgns=sessionguard-system

# A kubeconfig that authenticates with a token of <sa> bound to <pod>.
pod_kubeconfig() {
  local sa=$1 pod=$2 out=$3 token server ca
  token=$(k -n "$sgns" create token "$sa" --bound-object-kind Pod --bound-object-name "$pod" --duration 24h)
  server=$(k config view --raw --minify --flatten -o jsonpath='{.clusters[0].cluster.server}')
  ca=$(k config view --raw --minify --flatten -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
  cat >"$out" <<KC
apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: "$server", certificate-authority-data: "$ca"}}]
users: [{name: $sa, user: {token: "$token"}}]
contexts: [{name: $sa, context: {cluster: local, user: $sa}}]
current-context: $sa
KC
  chmod 600 "$out"
}

start_components() {
  cargo build --quiet -p sessionguard-agent -p sessionguard-controller
  local bin="${CARGO_TARGET_DIR:-$root/target}/debug"
  if ! "$root/.dev/bin/helm" status sessionguard -n "$sgns" >/dev/null 2>&1; then
    "$root/.dev/bin/helm" install sessionguard "$root/charts/sessionguard" -n "$sgns" --create-namespace \
      --set controller.replicas=1 --wait --timeout 120s >/dev/null
  fi
  k -n "$sgns" wait --for=condition=Ready pod -l app.kubernetes.io/component=agent --timeout=60s >/dev/null
  k -n "$sgns" wait --for=condition=Ready pod -l app.kubernetes.io/component=controller --timeout=60s >/dev/null
  local node agent_pod ctl_pod
  node=${SG_NODES%%,*}
  agent_pod=$(k -n "$sgns" get pod -l app.kubernetes.io/component=agent --field-selector "spec.nodeName=$node" -o jsonpath='{.items[0].metadata.name}')
  ctl_pod=$(k -n "$sgns" get pod -l app.kubernetes.io/component=controller -o jsonpath='{.items[0].metadata.name}')
  pod_kubeconfig sessionguard-agent "$agent_pod" "$SG_CLUSTER_DIR/agent.kubeconfig"
  pod_kubeconfig sessionguard-controller "$ctl_pod" "$SG_CLUSTER_DIR/controller.kubeconfig"
  KUBECONFIG="$SG_CLUSTER_DIR/controller.kubeconfig" start_bg controller "$bin/sessionguard-controller" \
    --listen-addr 127.0.0.1:18080 --lease-namespace "$sgns" --lease-name sessionguard-controller --identity "$ctl_pod"
  KUBECONFIG="$SG_CLUSTER_DIR/agent.kubeconfig" start_bg "agent-$node" "$bin/sessionguard-agent" run \
    --node-name "$node" --proc-root /proc --listen-addr 127.0.0.1:19102
  for what in 127.0.0.1:18080 127.0.0.1:19102; do
    for _ in $(seq 100); do curl -fs "http://$what/readyz" >/dev/null && break; sleep 0.2; done
    curl -fs "http://$what/readyz" >/dev/null || { echo "dev-up: $what not ready; logs in $SG_CLUSTER_DIR/logs" >&2; exit 1; }
  done
  echo "sessionguard: controller http://127.0.0.1:18080/metrics, agent http://127.0.0.1:19102/sessions"
}

case "${1:-}" in
  up)
    "$sg" up
    export KUBECONFIG="$root/.dev/kubeconfig"
    # --- sessionguard: the chart, then the real binaries under its identities ---------
    # The simulated node cannot pull images, so the chart's pods run stand-ins; the real
    # agent and controller run here as processes with service-account tokens bound to
    # those pods: exactly the identity (and node claim) the DaemonSet and Deployment
    # would give them, so RBAC and the SessionReport admission policy apply for real.
    if [ "${SG_DEV_COMPONENTS:-1}" = 1 ]; then
      start_components
    fi
    # ----------------------------------------------------------------------------------
    "$sg" status
    echo "dev cluster up: export KUBECONFIG=$KUBECONFIG"
    ;;
  down)
    "$sg" down
    rm -f "$root/.dev/kubeconfig"
    ;;
  status)
    "$sg" status
    ;;
  *)
    echo "usage: $0 up|down|status" >&2
    exit 2
    ;;
esac
