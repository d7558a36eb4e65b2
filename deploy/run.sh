#!/usr/bin/env bash
# One entry point for a fresh clone: `deploy/run.sh demo` or `deploy/run.sh test`.
# Creates ./.venv with the pinned dependencies on first use (Python 3.11 required).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
VENV="${SESSIONREC_VENV:-.venv}"

install() {
  if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
  fi
  local stamp="$VENV/.installed-$(cat pyproject.toml | sha1sum | cut -c1-12)-$1"
  if [ ! -f "$stamp" ]; then
    "$VENV/bin/python" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
    "$VENV/bin/python" -m pip install --quiet -e ".$2"
    touch "$stamp"
  fi
}

case "${1:-}" in
  demo)
    shift
    install run ""
    exec "$VENV/bin/sessionrec" demo "$@"
    ;;
  test)
    shift
    install dev "[dev]"
    "$VENV/bin/ruff" check models streams tests
    "$VENV/bin/mypy"
    exec "$VENV/bin/python" -m pytest -p no:cacheprovider "$@"
    ;;
  *)
    echo "usage: deploy/run.sh demo [--seconds N --rate R] | deploy/run.sh test [pytest args]" >&2
    exit 2
    ;;
esac
