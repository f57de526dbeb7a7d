#!/usr/bin/env bash
# What `make test` needs beyond the machine image (Rust, Go, make): `make deps`, the first
# step of `make test` (and so of .ci/run). As root it installs the missing Debian packages
# with apt; otherwise it names them and fails, before an hour of building.
set -euo pipefail

# command -> Debian package that provides it.
declare -A package_of=(
  [promtool]=prometheus   # alert rule unit tests (prometheus_rules, chart_install)
  [prometheus]=prometheus # the scrape test runs a real server against the controller
  [setpriv]=util-linux    # chart_least_privilege logs in as a non-root user
)

missing_commands() {
  local c
  for c in "${!package_of[@]}"; do
    command -v "$c" >/dev/null || printf '%s ' "$c"
  done
}

missing=$(missing_commands)
if [ -n "$missing" ]; then
  declare -A wanted=()
  for c in $missing; do wanted[${package_of[$c]}]=1; done
  packages="${!wanted[*]}"
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "install-deps: missing ${missing% }; install the Debian packages: $packages" >&2
    echo "install-deps:   sudo apt-get install -y --no-install-recommends $packages" >&2
    exit 1
  fi
  echo "install-deps: installing $packages (for ${missing% })"
  apt-get update -qq
  # shellcheck disable=SC2086 # one word per package
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $packages
  still=$(missing_commands)
  if [ -n "$still" ]; then
    echo "install-deps: $packages installed, but ${still% } still not on PATH" >&2
    exit 1
  fi
fi

# The Go and Rust toolchains come with the machine; without them nothing below builds.
for c in go cargo; do
  command -v "$c" >/dev/null || { echo "install-deps: '$c' not found: install the Go and Rust toolchains first" >&2; exit 1; }
done
components=()
cargo fmt --version >/dev/null 2>&1 || components+=(rustfmt)
cargo clippy --version >/dev/null 2>&1 || components+=(clippy)
if [ ${#components[@]} -gt 0 ]; then
  command -v rustup >/dev/null || { echo "install-deps: cargo lacks ${components[*]}; install them with the Rust toolchain" >&2; exit 1; }
  rustup component add "${components[@]}"
fi
