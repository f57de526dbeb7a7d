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

case "${1:-}" in
  up)
    "$sg" up
    export KUBECONFIG="$root/.dev/kubeconfig"
    # --- hook: sessionguard controller and agent -------------------------------------
    # Start them here once they exist, e.g.:
    #   cargo build --quiet -p sessionguard-controller -p sessionguard-agent
    #   start_bg controller "$root/target/debug/sessionguard-controller" ...
    #   start_bg agent-sim-dev "$root/target/debug/sessionguard-agent" run --node-name sim-dev ...
    # and wait for them to be ready before returning.
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
