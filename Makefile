# sessionguard developer entry points. `make demo` and `make test` are the
# README's first two commands and must work on a fresh machine.
SHELL := /bin/bash
CARGO ?= cargo
export SESSIONGUARD_BIN_DIR := $(CURDIR)/.dev/bin

.PHONY: all build tools fmt fmt-check clippy unit e2e test bench demo dev-up dev-down clean

all: build

build:
	$(CARGO) build --workspace --all-targets

## Pinned Kubernetes control plane, etcd and helm, built from Go modules into .dev/bin.
tools:
	bash e2e/build-tools.sh

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Unit, property and fake-/proc tests: no control plane needed.
unit:
	$(CARGO) test --workspace --lib --bins --benches

## Everything, including e2e tests against the real API server and real processes.
test: fmt-check clippy tools
	$(CARGO) test --workspace --no-fail-fast

bench:
	$(CARGO) bench -p sessionguard-agent

dev-up: tools
	bash e2e/dev.sh up

dev-down:
	bash e2e/dev.sh down

demo: tools
	bash e2e/demo.sh

clean: dev-down
	$(CARGO) clean
