#!/usr/bin/env bash
# Checks that each binary is statically linked and runs, then copies them to OUT.
# Used by `make static` (and so by CI and the Dockerfile's build stage).
set -euo pipefail
out=$1; shift
mkdir -p "$out"
for bin in "$@"; do
  [ -x "$bin" ] || { echo "check-static: $bin was not built" >&2; exit 1; }
  # readelf works without `file` installed; a dynamic binary has an INTERP segment
  # (the loader) and NEEDED entries (shared libraries).
  if readelf -lW "$bin" | grep -q 'INTERP'; then
    echo "check-static: $bin has a dynamic loader (PT_INTERP); it would not run on a distroless/static base" >&2
    readelf -dW "$bin" | grep NEEDED >&2 || true
    exit 1
  fi
  if readelf -dW "$bin" | grep -q 'NEEDED'; then
    echo "check-static: $bin needs shared libraries:" >&2
    readelf -dW "$bin" | grep NEEDED >&2
    exit 1
  fi
  "$bin" --version >/dev/null || { echo "check-static: $bin --version failed" >&2; exit 1; }
  cp -f "$bin" "$out/"
  echo "check-static: $(basename "$bin") static, $(du -h "$bin" | cut -f1)"
done
