#!/usr/bin/env bash
# Everything `make test` needs beyond the machine image (Rust, Go, Python, make).
set -euo pipefail
need=()
command -v script >/dev/null || need+=(bsdutils)
# prometheus + promtool: alert rule unit tests and the Prometheus e2e test.
command -v promtool >/dev/null && command -v prometheus >/dev/null || need+=(prometheus)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
  else
    echo "install-deps: missing ${need[*]}; install them (needs root)" >&2
    exit 1
  fi
fi
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
