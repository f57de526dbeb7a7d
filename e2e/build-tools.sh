#!/usr/bin/env bash
# Builds the pinned test tools (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, helm) into .dev/bin, only when the pins change.
#
# Built binaries are also kept in a per-user cache keyed by the pins, so a fresh
# clone on the same machine (CI) links them instead of compiling Kubernetes again.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/.dev/bin"
k8s_version=v1.34.4
helm_version=v3.19.5
tools=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl helm)

key=$( { cat "$root"/e2e/tools/go.mod "$root"/e2e/tools/go.sum "$root"/e2e/etcd/go.mod "$root"/e2e/etcd/go.sum
         echo "$k8s_version $helm_version"; go version; } | sha256sum | cut -c1-16)
cache="${SESSIONGUARD_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sessionguard-tools}/$key"

have_all() { local d=$1; for t in "${tools[@]}"; do [ -x "$d/$t" ] || return 1; done; }

if [ "$(cat "$bin/.pins" 2>/dev/null)" = "$key" ] && have_all "$bin"; then
  exit 0
fi
mkdir -p "$bin"
if have_all "$cache"; then
  for t in "${tools[@]}"; do cp -f "$cache/$t" "$bin/$t"; done
  echo "$key" > "$bin/.pins"
  echo "build-tools: reused cached tools $key"
  exit 0
fi

# In CI the Go build and module caches (about 3.6 GB and 1 GB for these pins) are only
# needed for this one build: keep them in a temp dir and remove them afterwards, so the
# Rust build that follows has the disk. Developers keep Go's default caches.
if [ -n "${CI:-}" ]; then
  gotmp=$(mktemp -d "${TMPDIR:-/tmp}/sessionguard-go.XXXXXX")
  export GOCACHE="$gotmp/cache" GOMODCACHE="$gotmp/mod" GOFLAGS="${GOFLAGS:-} -modcacherw"
  trap 'rm -rf "$gotmp"' EXIT
fi

start=$(date +%s)
echo "build-tools: building Kubernetes $k8s_version tools, etcd and helm $helm_version (cold build takes a while)"
pkg=k8s.io/component-base/version
cpkg=k8s.io/client-go/pkg/version
minor=$(echo "$k8s_version" | cut -d. -f2)
ld="-s -w"
for p in $pkg $cpkg; do
  ld+=" -X $p.gitVersion=$k8s_version -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  ld+=" -X $p.buildDate=1970-01-01T00:00:00Z"
done
(cd "$root/e2e/tools" && go build -trimpath -ldflags "$ld" -o "$bin/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
(cd "$root/e2e/etcd" && go build -trimpath -ldflags "-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3)
GOBIN="$bin" GOFLAGS="${GOFLAGS:-} -buildvcs=false" go install -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version" \
  "helm.sh/helm/v3/cmd/helm@$helm_version"

mkdir -p "$cache"
for t in "${tools[@]}"; do cp -f "$bin/$t" "$cache/$t"; done
echo "$key" > "$bin/.pins"
echo "build-tools: built in $(( $(date +%s) - start ))s"
