#!/usr/bin/env bash
# Make sure `prometheus` and `promtool` are on PATH, installing Debian's package if not.
# Used by CI and by tests/test_prometheus.py (which starts its own server on loopback), so
# the distribution's service is stopped again: nothing should listen on :9090 afterwards.
# Needs root (CI runs as root); prints the directory holding both binaries.
set -euo pipefail

have() { command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; }

if ! have; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-prometheus.sh: prometheus/promtool missing and not root" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  # The package's maintainer scripts try to start the service; keep them from doing so.
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    created_policy=1
  fi
  trap '[ "$created_policy" = 1 ] && rm -f "$policy"' EXIT
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends prometheus >&2
fi

have || { echo "install-prometheus.sh: prometheus still not on PATH" >&2; exit 1; }
dirname "$(command -v prometheus)"
