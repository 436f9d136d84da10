#!/usr/bin/env bash
# The demo: a collector and three demo guests (two in C, one in Python) logging at
# every level; their logs are followed live until Ctrl-C, which stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

port=${UMONITOR_DEMO_PORT:-2333}
data=${UMONITOR_DEMO_DATA:-$PWD/build/demo-data}
bin=build/demo
mkdir -p "$bin"
rm -rf "$data"

cc=${CC:-gcc}
"$cc" -std=c99 -O2 -Wall -Wextra -Werror -pedantic -Isrc/umonitor/guest/c \
  -o "$bin/demo_app" src/umonitor/guest/demo/demo_app.c src/umonitor/guest/c/umonitor.c

pids=()
cleanup() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo
  echo "demo: stopped; the logs stay in $data (umonitor ls --data $data)" >&2
}
trap cleanup INT TERM EXIT

.venv/bin/umonitor serve --data "$data" --listen "127.0.0.1:$port" 2>"$bin/collector.err" &
pids+=($!)
for _ in $(seq 50); do
  grep -q listening "$bin/collector.err" 2>/dev/null && break
  if ! kill -0 "${pids[0]}" 2>/dev/null; then cat "$bin/collector.err" >&2; exit 1; fi
  sleep 0.1
done
cat "$bin/collector.err" >&2

"$bin/demo_app" "umon.collector=127.0.0.1:$port umon.name=demo-c-1 umon.rate=3" >/dev/null &
pids+=($!)
"$bin/demo_app" "umon.collector=127.0.0.1:$port umon.name=demo-c-2 umon.rate=2" >/dev/null &
pids+=($!)
.venv/bin/python -m umonitor.guest.demo.demo_guest "127.0.0.1:$port" demo-py --rate 2 &
pids+=($!)

sleep 1
.venv/bin/umonitor ls --data "$data"
echo "demo: following the logs of all three guests; Ctrl-C stops" >&2
.venv/bin/umonitor logs --data "$data" -f -n 20
