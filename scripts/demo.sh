#!/usr/bin/env bash
# The demo: build the demo unikernel images, bring up the fleet of examples/umonitor.toml
# (two demo guests and one that crashes on purpose and is restarted) on a bridge with
# TAP devices, and follow every guest's logs live. Ctrl-C stops the guests and removes
# the network devices. Needs root (network devices).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "demo: the fleet creates a bridge and TAP devices; run 'sudo make demo'" >&2
  exit 1
fi
umon=.venv/bin/umonitor
data=${UMONITOR_DEMO_DATA:-$PWD/build/demo-data}
rm -rf "$data"

$umon image build src/umonitor/guest/demo/demo_app.c -o build/image/demo
$umon image build src/umonitor/guest/demo/crash_app.c -o build/image/crash

# With the unikernel sources beside the checkout, a real Unikraft guest joins the fleet.
config=examples/umonitor.toml
if unikraft=$(.venv/bin/python guests/build.py unikraft); then
  config=build/demo.toml
  sed 's#"\.\./build/#"#' examples/umonitor.toml >"$config"
  cat >>"$config" <<EOF

[[instance]]
name = "unikraft"
kernel = "$unikraft/log.kernel"
flavor = "unikraft"
memory = "64M"
app_args = "umon.rate=2"
restart = "on-failure"
EOF
else
  echo "demo: running the Linux guests only (no Unikraft guest: see above)" >&2
fi

cleanup() {
  trap - INT TERM EXIT
  echo >&2
  $umon down --data "$data" || true
  echo "demo: guests stopped, network removed; the logs stay in $data" >&2
}
trap cleanup INT TERM EXIT

$umon up -d -f "$config" --data "$data"
echo "demo: guests boot in about 10 s under software emulation; Ctrl-C stops everything" >&2
echo "demo: the dashboard is at http://127.0.0.1:8321/ (Prometheus metrics at /metrics)" >&2
sleep 2
$umon ps --data "$data"
$umon logs --data "$data" -f -n 20 || true
