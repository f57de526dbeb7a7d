# sessionguard developer entry points. `make demo` and `make test` are the
# README's first two commands and must work on a fresh machine.
SHELL := /bin/bash
CARGO ?= cargo
export SESSIONGUARD_BIN_DIR := $(CURDIR)/.dev/bin

.PHONY: all build deps tools tools-cluster test-compat fmt fmt-check clippy unit e2e test bench scale demo dev-up dev-down clean static manifests

all: build

build:
	$(CARGO) build --workspace --all-targets

## What make test needs beyond Rust and Go (promtool, prometheus, setpriv): installed with
## apt when run as root, otherwise named with the command to install them, and make stops.
deps:
	bash .ci/install-deps.sh

## Pinned Kubernetes control plane, etcd and helm (and for tests and scale: kwok and the
## Prometheus Operator CRDs), built from Go modules into .dev/bin, each once per pin.
tools:
	bash e2e/build-tools.sh
## What make demo and make dev-up need: no kwok, no controller-gen.
tools-cluster:
	bash e2e/build-tools.sh kube etcd helm

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Unit, property and fake-/proc tests: no control plane needed.
unit:
	$(CARGO) test --workspace --lib --bins --benches

## Static release binaries, built exactly as the Dockerfile builds them (static-pie,
## glibc crt-static: no musl target is installable offline), then checked to be static.
## The target is the build host's (x86_64 here; aarch64 in an arm64 docker build).
STATIC_TARGET ?= $(shell rustc -vV | sed -n 's/^host: //p')
STATIC_BINS := sessionguard-agent sessionguard-controller
STATIC_OUT ?= $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)/static
static:
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build --release --locked \
	  --target $(STATIC_TARGET) $(addprefix --bin ,$(STATIC_BINS)) \
	  -p sessionguard-agent -p sessionguard-controller
	bash .ci/check-static.sh "$(STATIC_OUT)" \
	  $(addprefix $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)/$(STATIC_TARGET)/release/,$(STATIC_BINS))

## Regenerate everything generated, the one way: the chart's SessionReport CRD from its
## Rust type (api/), the chart's webhook configurations from face/admission/manifests.rs,
## then deploy/sessionguard.yaml and deploy/prometheus/sessionguard-alerts.yaml from the
## chart (tests fail while any of them is out of date).
CRD_FILE := charts/sessionguard/crds/sessionreports.yaml
manifests:
	bash e2e/build-tools.sh helm
	$(CARGO) run --quiet -p sessionguard-api --bin crdgen > $(CRD_FILE).tmp || { rm -f $(CRD_FILE).tmp; exit 1; }
	mv $(CRD_FILE).tmp $(CRD_FILE)
	SESSIONGUARD_UPDATE_MANIFESTS=1 $(CARGO) test -p sessionguard-controller --lib chart_file_is_current
	SESSIONGUARD_UPDATE_MANIFESTS=1 $(CARGO) test -p sessionguard-e2e --test chart_manifest

## Everything, including e2e tests against the real API server and real processes.
test: deps fmt-check clippy tools static
	$(CARGO) test --workspace --no-fail-fast
	$(CARGO) test -p sessionguard-controller --bench pod_cache

## The oldest supported Kubernetes (not part of make test; README "Kubernetes versions"):
## the demo's flow, a drain that waits on a login, the exec webhook and the security e2e.
## The next make test switches .dev/bin back to the default version (cached by pin).
COMPAT_KUBE_VERSION ?= v1.34.4
COMPAT_TESTS := controller_login_protector plugin_sessions webhook_exec webhook_eviction security
test-compat: static
	KUBE_VERSION=$(COMPAT_KUBE_VERSION) bash e2e/build-tools.sh kube etcd helm
	$(CARGO) test -p sessionguard-e2e --no-fail-fast $(addprefix --test ,$(COMPAT_TESTS))

## Figures for the README and closing notes (not run by make test).
bench:
	$(CARGO) bench -p sessionguard-agent
	$(CARGO) bench -p sessionguard-controller --bench webhook
	$(CARGO) bench -p sessionguard-controller --bench pod_cache

## sessionguard at cluster size (kwok nodes, played agents, the real controller), measured:
## progress, a table, then one JSON line. SCALE_NODES, SCALE_PODS, SCALE_MINUTES and
## SCALE_LOGIN_RATE override 1000 / 30000 / 10 / 1. Release build: the figures are the
## product's. Not part of make test (its small smoke, e2e/tests/scale_smoke.rs, is).
## The controller is built first and sg-scale told not to build it again: its first start
## comes half an hour into a full run, and a source edited meanwhile would otherwise be
## compiled then, in the middle of the measurement.
scale: tools
	$(CARGO) build --release -p sessionguard-controller --bin sessionguard-controller
	SESSIONGUARD_NO_BUILD=1 $(CARGO) run --release -p sessionguard-e2e --bin sg-scale

dev-up: tools-cluster
	bash e2e/dev.sh up

dev-down:
	bash e2e/dev.sh down

## Builds what it needs itself (the cluster's tools and the Rust binaries side by side).
demo:
	bash e2e/demo.sh

clean: dev-down
	$(CARGO) clean
