#!/usr/bin/env bash
# Run N sessionrec workers side by side on this machine (default 2), as one consumer group:
#   deploy/run-workers.sh [N]
# Starts the local broker first when nothing listens on SESSIONREC_BROKER (127.0.0.1:9092 by
# default). Worker i (1..N) serves http://127.0.0.1:$((6065 + i)) (/metrics, /livez, /readyz),
# keeps its state in ./data/worker-i and logs to ./data/worker-i.log. Ctrl-C or SIGTERM stops
# every worker, and the broker if this script started it. Other SESSIONREC_* variables are
# passed on to the workers. BASE_PORT changes the first port.
set -euo pipefail
cd "$(dirname "$0")/.."

N="${1:-${WORKERS:-2}}"
BASE_PORT="${BASE_PORT:-6066}"
DATA=./data
if ! [[ "$N" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: deploy/run-workers.sh [N]   (N >= 1 workers, default 2)" >&2
  exit 2
fi
if [ -x .venv/bin/sessionrec ]; then
  BIN=.venv/bin/sessionrec
elif command -v sessionrec >/dev/null 2>&1; then
  BIN=$(command -v sessionrec)
else
  echo "run-workers: no .venv/bin/sessionrec and no sessionrec on PATH (try: deploy/run.sh demo once)" >&2
  exit 1
fi

broker="${SESSIONREC_BROKER:-kafka://127.0.0.1:9092}"
broker="${broker#*://}"
broker="${broker%%;*}"
broker_host="${broker%:*}"
broker_port="${broker##*:}"

listening() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

mkdir -p "$DATA"
pids=()
broker_pid=""
stopping=0

stop_all() {
  [ "$stopping" = 1 ] && return
  stopping=1
  trap - INT TERM
  echo "stopping ${#pids[@]} worker(s)..."
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  # Faust leaves the group and commits on SIGTERM; give it time, then insist.
  for _ in $(seq 1 60); do
    alive=0
    for pid in "${pids[@]}"; do
      kill -0 "$pid" 2>/dev/null && alive=1
    done
    [ "$alive" = 0 ] && break
    sleep 0.5
  done
  for pid in "${pids[@]}"; do
    kill -KILL "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  if [ -n "$broker_pid" ]; then
    echo "stopping the broker (pid $broker_pid)"
    kill -TERM "$broker_pid" 2>/dev/null || true
  fi
}
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM

if listening "$broker_host" "$broker_port"; then
  echo "broker: already listening on $broker"
else
  SESSIONREC_DATA_DIR="$DATA" "$BIN" broker
  broker_pid=$(cat "$DATA/broker.pid")
fi

for i in $(seq 1 "$N"); do
  port=$((BASE_PORT + i - 1))
  dir="$DATA/worker-$i"
  log="$DATA/worker-$i.log"
  if listening 127.0.0.1 "$port"; then
    echo "run-workers: port $port is taken; set BASE_PORT" >&2
    stop_all
    exit 1
  fi
  mkdir -p "$dir"
  SESSIONREC_WEB_PORT="$port" SESSIONREC_DATA_DIR="$dir" "$BIN" worker >"$log" 2>&1 &
  pids+=("$!")
  echo "worker-$i: pid $! http://127.0.0.1:$port/metrics /livez /readyz  log $log"
done
echo "Ctrl-C stops them. The group settles in about a minute; http://127.0.0.1:$BASE_PORT/readyz says 200 then."

# Return when a worker exits on its own: report it and stop the others.
set +e
wait -n "${pids[@]}"
rc=$?
set -e
if [ "$stopping" = 0 ]; then
  echo "run-workers: a worker exited (status $rc); see $DATA/worker-*.log" >&2
  stop_all
  exit 1
fi
