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
# Where the controller and the agent serve /metrics and /readyz (the agent also /sessions).
# Fixed defaults so the README's URLs work; two dev clusters on one machine need others.
ctl_addr=${SG_DEV_CONTROLLER_ADDR:-127.0.0.1:18080}
agent_addr=${SG_DEV_AGENT_ADDR:-127.0.0.1:19102}
# Where the controller serves the admission webhooks (HTTPS); the API server calls it there.
webhook_addr=${SG_DEV_WEBHOOK_ADDR:-127.0.0.1:18443}
# How long each may take to be ready: a controller that finds another identity in the
# Lease (a re-run after its pod was replaced) waits the Lease out (15 s) first.
ready_timeout=${SG_DEV_READY_TIMEOUT:-60}
cargo build --quiet -p sessionguard-e2e --bin sg-cluster
sg="$root/target/debug/sg-cluster"
[ -n "${CARGO_TARGET_DIR:-}" ] && sg="$CARGO_TARGET_DIR/debug/sg-cluster"

# Field 22 of /proc/<pid>/stat (start time) for a live process; nothing for a zombie.
start_time() {
  cut -d')' -f2- "/proc/$1/stat" 2>/dev/null | awk '$1 != "Z" && $1 != "X" { print $20 }'
}

# Whether the process a pidfile names ("<pid> <start time>") still runs: a recycled pid
# does not count, so a stale pidfile never stops dev-up from starting its process.
alive() {
  local pid start
  read -r pid start 2>/dev/null <"$1" || return 1
  [ -n "$start" ] && [ "$(start_time "$pid")" = "$start" ]
}

# Fails, naming the holder, when something already listens on <addr>: another dev
# cluster's controller there would answer our readiness checks instead of ours.
ensure_free() {
  local addr=$1 what=$2 holder
  (exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}") 2>/dev/null || return 0
  holder=$(ss -Hltnp "sport = :${addr##*:}" 2>/dev/null | grep -o 'users:.*' | head -n 1)
  echo "dev-up: $addr (for the $what) is already in use${holder:+ by $holder}; stop it, or choose" \
    "another address with SG_DEV_CONTROLLER_ADDR / SG_DEV_AGENT_ADDR" >&2
  exit 1
}

# Starts "$@" in the background with its output in logs/<name>.log and a pidfile in
# pids/<name>.pid; `sg-cluster down` stops every pidfile it finds there.
start_bg() {
  local name=$1; shift
  local pidfile="$SG_CLUSTER_DIR/pids/$name.pid"
  alive "$pidfile" && return 0
  echo "$start_mark $name $(date -u +%FT%TZ)" >>"$SG_CLUSTER_DIR/logs/$name.log"
  setsid "$@" >>"$SG_CLUSTER_DIR/logs/$name.log" 2>&1 < /dev/null &
  local pid=$!
  # "<pid> <start time>": down checks both, so a recycled pid is never signalled.
  echo "$pid $(start_time "$pid")" > "$pidfile"
}

# Waits until http://<addr>/readyz answers 200 with body <want> three times in a row,
# while the process in pids/<name>.pid runs. Any other answer, a 200 "standby" included,
# is not ready: dev-up promises a controller that protects pods. Every distinct answer
# is kept, with when it came, and printed if the wait fails.
await_ready() {
  local name=$1 addr=$2 want=$3
  local pidfile="$SG_CLUSTER_DIR/pids/$name.pid" log="$SG_CLUSTER_DIR/logs/$name.log"
  local begin=$EPOCHREALTIME out code body answer last= seen= good=0
  local deadline=$(( ${begin%.*} + ready_timeout ))
  while [ "$good" -lt 3 ]; do
    if ! alive "$pidfile"; then
      echo "dev-up: the $name exited before it was ready; the end of $log:" >&2
      log_end "$log" >&2
      exit 1
    fi
    if [ "${EPOCHREALTIME%.*}" -ge "$deadline" ]; then
      echo "dev-up: the $name at $addr is not ready after ${ready_timeout}s; its /readyz answered:" >&2
      printf '%s' "$seen" >&2
      echo "the end of $log:" >&2
      log_end "$log" >&2
      exit 1
    fi
    out=$(curl -s -m 2 -w '\n%{http_code}' "http://$addr/readyz" 2>/dev/null) || true
    code=${out##*$'\n'}
    body=${out%$'\n'*}
    [ "$body" = "$out" ] && body=
    body=${body%$'\n'}
    answer="$code ${body:-(no answer)}"
    if [ "$answer" != "$last" ]; then
      seen+=$(printf '  +%.2fs %s' "$(elapsed "$begin")" "$answer")$'\n'
      last=$answer
    fi
    if [ "$code" = 200 ] && [ "$body" = "$want" ]; then good=$((good + 1)); else good=0; fi
    [ "$good" -lt 3 ] && sleep 0.2
  done
  printf 'dev-up: %s ready (%s) in %.1fs\n' "$name" "$want" "$(elapsed "$begin")"
}

# The end of what the last start wrote to a log: from its last "Error:" line when the
# process died with one.
start_mark="--- dev.sh: starting"
log_end() {
  awk -v m="$start_mark" 'index($0, m) == 1 { n = 0 } { l[++n] = $0 } END { for (i = 2; i <= n; i++) print l[i] }' "$1" \
    | awk '{ l[++n] = $0 } /^Error: / { e = n } END { s = e ? e : (n > 20 ? n - 19 : 1); for (i = s; i <= n && i < s + 20; i++) print l[i] }'
}

elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }'; }

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

# Prints the name of the chart's <component> pod (on <node> if given) once it is Ready.
await_pod() {
  local component=$1 node=${2:-} deadline=$((SECONDS + 60)) name= where=()
  [ -n "$node" ] && where=(--field-selector "spec.nodeName=$node")
  while [ -z "$name" ]; do
    name=$(k -n "$sgns" get pod -l "app.kubernetes.io/component=$component" "${where[@]}" \
      -o jsonpath='{.items[0].metadata.name}' 2>/dev/null) || true
    [ -n "$name" ] && break
    [ "$SECONDS" -lt "$deadline" ] || { echo "dev-up: no $component pod${node:+ on $node} after 60s" >&2; exit 1; }
    sleep 0.5
  done
  k -n "$sgns" wait --for=condition=Ready "pod/$name" --timeout="$(( deadline > SECONDS ? deadline - SECONDS : 1 ))s" >/dev/null
  echo "$name"
}

# The chart's webhook configurations name its Service, whose pod here is a stand-in:
# point them at the controller running on this host instead (url, same paths). The
# controller then adds its caBundle and the secret path token, as in a cluster.
point_webhooks_here() {
  local kind i path patch
  for kind in validatingwebhookconfiguration mutatingwebhookconfiguration; do
    patch= i=0
    for path in $(k get "$kind" sessionguard -o jsonpath='{range .webhooks[*]}{.clientConfig.service.path}{" "}{end}'); do
      patch+="${patch:+,}{\"op\":\"replace\",\"path\":\"/webhooks/$i/clientConfig\",\"value\":{\"url\":\"https://$webhook_addr$path\"}}"
      i=$((i + 1))
    done
    [ -n "$patch" ] && k patch "$kind" sessionguard --type json -p "[$patch]" >/dev/null
  done
  return 0
}

start_components() {
  command -v curl >/dev/null || { echo "dev-up: curl is needed for the readiness checks (apt-get install curl)" >&2; exit 1; }
  cargo build --quiet -p sessionguard-agent -p sessionguard-controller
  local bin="${CARGO_TARGET_DIR:-$root/target}/debug"
  # No `helm --wait`: it waits for the agent on every node, and a node an e2e test left
  # behind in this cluster (its process killed) never runs one. Only these two pods matter.
  # The webhook is on (the chart's default); e2e test namespaces (label
  # sessionguard.io/e2e, reusing this cluster) are left to the tests' own webhooks.
  if ! "$root/.dev/bin/helm" status sessionguard -n "$sgns" >/dev/null 2>&1; then
    "$root/.dev/bin/helm" install sessionguard "$root/charts/sessionguard" -n "$sgns" --create-namespace \
      --set controller.replicas=1 \
      --set-json 'webhook.namespaceSelector={"matchExpressions":[{"key":"sessionguard.io/e2e","operator":"DoesNotExist"}]}' \
      >/dev/null
  fi
  point_webhooks_here
  local node agent_pod ctl_pod
  node=${SG_NODES%%,*}
  agent_pod=$(await_pod agent "$node")
  ctl_pod=$(await_pod controller)
  pod_kubeconfig sessionguard-agent "$agent_pod" "$SG_CLUSTER_DIR/agent.kubeconfig"
  pod_kubeconfig sessionguard-controller "$ctl_pod" "$SG_CLUSTER_DIR/controller.kubeconfig"
  alive "$SG_CLUSTER_DIR/pids/controller.pid" || ensure_free "$ctl_addr" controller
  alive "$SG_CLUSTER_DIR/pids/agent-$node.pid" || ensure_free "$agent_addr" agent
  alive "$SG_CLUSTER_DIR/pids/controller.pid" || ensure_free "$webhook_addr" webhook
  KUBECONFIG="$SG_CLUSTER_DIR/controller.kubeconfig" start_bg controller "$bin/sessionguard-controller" \
    --listen-addr "$ctl_addr" --lease-namespace "$sgns" --lease-name sessionguard-controller --identity "$ctl_pod" \
    --webhook true --webhook-addr "$webhook_addr" --webhook-extra-sans "${webhook_addr%:*}" \
    --webhook-service sessionguard-controller --webhook-secret sessionguard-webhook-tls \
    --webhook-validating-config sessionguard --webhook-mutating-config sessionguard
  KUBECONFIG="$SG_CLUSTER_DIR/agent.kubeconfig" start_bg "agent-$node" "$bin/sessionguard-agent" run \
    --node-name "$node" --proc-root /proc --listen-addr "$agent_addr"
  # The agent is ready once its node's pods have listed and its first scan is done; the
  # only controller here must hold the Lease and have listed everything it watches.
  await_ready "agent-$node" "$agent_addr" ok
  await_ready controller "$ctl_addr" leader
  echo "sessionguard: controller http://$ctl_addr/metrics, agent http://$agent_addr/sessions"
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
