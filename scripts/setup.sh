#!/usr/bin/env bash
# Install what umonitor's demo and tests need: Debian packages (as root), then a
# virtual environment in .venv with the package (and its C accelerator) and dev tools.
set -euo pipefail
cd "$(dirname "$0")/.."

# rsyslog(-relp), bsdutils (logger) and openssl are peers the tests talk to.
# build-essential … zlib1g-dev build the Unikraft, Nanos and rumprun test guests (guests/).
# gdb and binutils (addr2line) read crashed guests and symbolize them (docs/debugging.md).
# g++ (with its static libstdc++) builds C++ guest programs and the C++ tracing tests.
# chromium and chromium-driver: the dashboard's tests drive the page in a real browser.
debs=(gcc g++ libc6-dev clang make qemu-system-x86 iproute2 procps cpio rsyslog rsyslog-relp rsyslog-openssl bsdutils openssl
  build-essential nasm flex bison unzip patch xz-utils zlib1g-dev gdb binutils chromium chromium-driver)
missing=()
for pkg in "${debs[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing Debian packages: ${missing[*]}; run 'sudo apt-get install ${missing[*]}' first" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The image builder fetches Debian's kernel with apt-get download: it needs package lists.
if [ "$(id -u)" -eq 0 ] && ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
  apt-get update -qq
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'

# syslog-ng's loggen (load generator for tests and benchmarks): extracted, not installed.
if [ "$(id -u)" -eq 0 ] && [ ! -x build/peers/loggen ]; then
  sh bench/peers.sh >/dev/null
fi
