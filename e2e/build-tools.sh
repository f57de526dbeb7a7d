#!/usr/bin/env bash
# Builds the pinned test tools into .dev/bin, each group only when its own pins change:
#   kube: kube-apiserver, kube-controller-manager, kube-scheduler, kubectl
#         (e2e/tools/<KUBE_VERSION>: one pinned module per supported version)
#   etcd: etcd (e2e/etcd)
#   helm: helm (go install at a version)
#   crds: controller-gen (e2e/crds) and the Prometheus Operator CRDs it generates from the
#         Operator's own API module (.dev/crds), for the chart's install test
#   kwok: kwok (e2e/kwok) and its stages (kwok-stages.yaml, from the same module), which
#         simulate the nodes of `make scale`
#
# Built binaries are also kept in a per-user cache keyed by each group's pins, so a
# fresh clone on the same machine (CI) copies them instead of compiling Kubernetes
# again, and bumping etcd does not rebuild Kubernetes.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/.dev/bin"
crds="$root/.dev/crds"
# The control plane's version: KUBE_VERSION selects one of e2e/tools/*/ (the newest by
# default; the oldest supported one is what `make test-compat` runs).
k8s_version=${KUBE_VERSION:-v1.37.2}
kube_dir="$root/e2e/tools/$k8s_version"
if [ ! -f "$kube_dir/go.mod" ]; then
  echo "build-tools: no pins for KUBE_VERSION=$k8s_version (have: $(cd "$root/e2e/tools" && echo v*))" >&2
  exit 2
fi
helm_version=v3.19.5
# The commit that tag names: Helm's Makefile stamps it from git, and `go install` has no git.
helm_commit=4a19a5b6fb912c5c28a779e73f2e0880d9e239a4
cache_root="${SESSIONGUARD_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sessionguard-tools}"
gover=$(go version)

declare -A tools=(
  [kube]="kube-apiserver kube-controller-manager kube-scheduler kubectl"
  [etcd]="etcd"
  [helm]="helm"
  [kwok]="kwok kwok-stages.yaml"
  [crds]="controller-gen monitoring.coreos.com_servicemonitors.yaml monitoring.coreos.com_podmonitors.yaml monitoring.coreos.com_prometheusrules.yaml"
)
# Where a group's file lives under .dev: binaries in bin/, generated manifests in crds/.
dest_of() {
  case $1 in kwok-stages.yaml) echo "$bin/$1" ;; *.yaml) echo "$crds/$1" ;; *) echo "$bin/$1" ;; esac
}
key_of() {
  case $1 in
    kube) { cat "$kube_dir"/go.mod "$kube_dir"/go.sum; echo "$k8s_version $gover"; } ;;
    etcd) { cat "$root"/e2e/etcd/go.mod "$root"/e2e/etcd/go.sum; echo "$gover"; } ;;
    # The recipe is part of the key: a cached helm built with other flags is not reused.
    helm) { echo "$helm_version $helm_commit $gover"; declare -f build_helm; } ;;
    kwok) { cat "$root"/e2e/kwok/go.mod "$root"/e2e/kwok/go.sum; echo "$gover"; declare -f build_kwok; } ;;
    crds) { cat "$root"/e2e/crds/go.mod "$root"/e2e/crds/go.sum; echo "$gover"; declare -f build_crds; } ;;
  esac | sha256sum | cut -c1-16
}
# have_all DIR GROUP: every file of GROUP in DIR (flat, as in the cache); have_dev GROUP: in .dev.
have_all() { local d=$1 t; for t in ${tools[$2]}; do [ -s "$d/$t" ] || return 1; done; }
have_dev() { local t; for t in ${tools[$1]}; do [ -s "$(dest_of "$t")" ] || return 1; done; }

build_kube() {
  local pkg=k8s.io/component-base/version cpkg=k8s.io/client-go/pkg/version p
  local minor ld="-s -w"
  minor=$(echo "$k8s_version" | cut -d. -f2)
  for p in $pkg $cpkg; do
    ld+=" -X $p.gitVersion=$k8s_version -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
    ld+=" -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  (cd "$kube_dir" && go build -trimpath -ldflags "$ld" -o "$bin/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
}
build_etcd() {
  (cd "$root/e2e/etcd" && go build -trimpath -ldflags "-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3)
}
build_helm() {
  # The flags Helm's own Makefile sets. Without the k8sVersion pair, `helm template` and
  # `helm lint` assume Kubernetes v1.20 and refuse the chart's kubeVersion; the Makefile
  # derives it from the client-go that Helm's go.mod requires (v0.N.x is Kubernetes 1.N).
  local gomod client_go minor ld="-s -w" p
  gomod=$(go mod download -json "helm.sh/helm/v3@$helm_version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
  client_go=$(awk '$1 == "k8s.io/client-go" { print $2 }' "$gomod")
  minor=$(echo "$client_go" | cut -d. -f2)
  case $client_go in
    v0.*) ;;
    *) echo "build-tools: helm: cannot read client-go's version from $gomod" >&2; return 1 ;;
  esac
  p=helm.sh/helm/v3/internal/version
  ld+=" -X $p.version=$helm_version -X $p.metadata= -X $p.gitCommit=$helm_commit -X $p.gitTreeState=clean"
  for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ld+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$minor"
  done
  CGO_ENABLED=0 GOBIN="$bin" GOFLAGS="${GOFLAGS:-} -buildvcs=false" go install -trimpath -ldflags "$ld" \
    "helm.sh/helm/v3/cmd/helm@$helm_version"
  # What `helm template` assumes without --kube-version: a wrong one fails here, not later.
  local probe want got
  probe=$(mktemp -d)
  mkdir "$probe/templates"
  printf 'apiVersion: v2\nname: probe\nversion: 0.0.0\n' >"$probe/Chart.yaml"
  printf 'kubeVersion: {{ .Capabilities.KubeVersion.Version }}\n' >"$probe/templates/kube.yaml"
  want="v1.$minor.0"
  got=$("$bin/helm" template "$probe" --show-only templates/kube.yaml | sed -n 's/^kubeVersion: //p')
  rm -rf "$probe"
  if [ "$got" != "$want" ]; then
    echo "build-tools: helm assumes Kubernetes '$got', not $want" >&2
    return 1
  fi
  echo "build-tools: helm $("$bin/helm" version --short) (default Kubernetes $want)"
}
build_kwok() {
  # The stages kwokctl itself configures: nodes become Ready and renew their Lease, pods
  # become Running at once and go when deleted.
  local dir
  (cd "$root/e2e/kwok" && go build -trimpath -ldflags "-s -w" -o "$bin/kwok" sigs.k8s.io/kwok/cmd/kwok)
  dir=$(cd "$root/e2e/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
  local f out="$bin/kwok-stages.yaml"
  : >"$out"
  for f in node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease \
    pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete; do
    { echo "---"; cat "$dir/kustomize/stage/$f.yaml"; } >>"$out"
  done
}
build_crds() {
  # The Operator's own types, through the same generator its Makefile runs: a field or
  # value the Operator refuses is refused by these CRDs too. Only the three kinds the
  # chart renders are kept.
  local api=github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1 out t
  (cd "$root/e2e/crds" && go build -trimpath -ldflags "-s -w" -o "$bin/controller-gen" \
    sigs.k8s.io/controller-tools/cmd/controller-gen)
  out=$(mktemp -d)
  (cd "$root/e2e/crds" && "$bin/controller-gen" crd:crdVersions=v1 "paths=$api" "output:crd:dir=$out")
  mkdir -p "$crds"
  for t in ${tools[crds]}; do
    case $t in *.yaml) cp -f "$out/$t" "$crds/$t" ;; esac
  done
  rm -rf "$out"
}

# Groups to build: the arguments (e.g. `kube etcd helm` for make demo, which needs
# neither kwok nor the Operator CRDs), or all of them.
all_groups="kube etcd helm kwok crds"
groups="${*:-$all_groups}"
for group in $groups; do
  [ -n "${tools[$group]:-}" ] || { echo "build-tools: no tool group '$group' (groups: $all_groups)" >&2; exit 2; }
done
# What a cold build of each group costs on 2 cores (measured), for the progress lines.
declare -A cold_secs=([kube]=480 [etcd]=30 [helm]=130 [kwok]=160 [crds]=40)

mkdir -p "$bin"
gotmp=
todo=()
for group in $groups; do
  key=$(key_of "$group")
  if [ "$(cat "$bin/.pins-$group" 2>/dev/null)" = "$key" ] && have_dev "$group"; then
    continue
  fi
  have_all "$cache_root/$group-$key" "$group" && continue
  todo+=("$group")
done
for group in $groups; do
  key=$(key_of "$group")
  if [ "$(cat "$bin/.pins-$group" 2>/dev/null)" = "$key" ] && have_dev "$group"; then
    continue
  fi
  cache="$cache_root/$group-$key"
  if have_all "$cache" "$group"; then
    mkdir -p "$crds"
    for t in ${tools[$group]}; do cp -f "$cache/$t" "$(dest_of "$t")"; done
    echo "$key" > "$bin/.pins-$group"
    echo "build-tools: $group: reused cached build $key"
    continue
  fi
  # In CI the Go build and module caches (about 3.6 GB and 1 GB for Kubernetes) are
  # only needed for this one build: keep them in a temp dir and remove them at exit,
  # so the Rust build that follows has the disk. Developers keep Go's default caches.
  if [ -n "${CI:-}" ] && [ -z "$gotmp" ]; then
    gotmp=$(mktemp -d "${TMPDIR:-/tmp}/sessionguard-go.XXXXXX")
    export GOCACHE="$gotmp/cache" GOMODCACHE="$gotmp/mod" GOFLAGS="${GOFLAGS:-} -modcacherw"
    trap 'rm -rf "$gotmp"' EXIT
  fi
  start=$(date +%s)
  left=0
  for g in "${todo[@]}"; do left=$((left + cold_secs[$g])); done
  note=; [ "$group" = kube ] && note=" (Kubernetes $k8s_version)"
  echo "build-tools: $group: building ${tools[$group]}$note; about $(( (${cold_secs[$group]} + 59) / 60 )) min, $(( (left + 59) / 60 )) min left for ${todo[*]}"
  "build_$group"
  rest=()
  for g in "${todo[@]}"; do [ "$g" = "$group" ] || rest+=("$g"); done
  todo=("${rest[@]}")
  mkdir -p "$cache"
  for t in ${tools[$group]}; do cp -f "$(dest_of "$t")" "$cache/$t"; done
  echo "$key" > "$bin/.pins-$group"
  echo "build-tools: $group: built in $(( $(date +%s) - start ))s"
done
# What the e2e harness reads to know the control plane's version (simulated kubelets
# report it, helm template renders for it).
case " $groups " in *" kube "*) echo "$k8s_version" >"$bin/kube-version" ;; esac
