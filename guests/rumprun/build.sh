#!/usr/bin/env bash
# Build the rumprun guests of umonitor's tests, offline, from plain source exports.
#
#   bash guests/rumprun/build.sh SOURCES OUT
#
# SOURCES holds rumprun/ with rumprun-b04d422.tar.gz, buildrump.sh-9c9b022.tar.gz and
# src-netbsd-b8b951e.tar.xz (shared/unikernels/rumprun); OUT is an existing, empty
# directory. Builds rumprun's hw toolchain in OUT/work (about 250 s on 2 cores), then
# compiles and bakes for virtio (QEMU):
#
#   log.bin       src/umonitor/guest/demo/demo_app.c + the guest library
#   crash.bin     src/umonitor/guest/demo/crash_app.c + the guest library
#   seed2018.bin  tests/c/seed_guest.c + umonitor_compat.c, 2018 wire format
#   spin.bin      tests/c/spin_guest.c + the guest library, when that file exists
#
# Each .bin is stripped (2.9 MB instead of 17.5 MB); NAME.dbg keeps its symbols and
# DWARF (addr2line -e NAME.dbg ADDRESS) for the address in a crashed guest's
# "FATAL TRAP: page fault at RIP (CR2)" line. OUT/work, the toolchain included
# (136 MB), is deleted at the end, even after a failure, unless KEEP_WORK=1. What the
# tools print goes to OUT/build.log; on failure its last 30 lines are shown and the
# exit code is 1.
#
# Needs (Debian): build-essential (gcc, make, binutils), zlib1g-dev, xz-utils.
# How the guests are configured and booted: guests/rumprun/README.md.
set -euo pipefail

RUMPRUN=rumprun-b04d422
BUILDRUMP=buildrump.sh-9c9b022
SRC_NETBSD=src-netbsd-b8b951e
# Flags for the guest programs: the library's own warnings set, with DWARF for .dbg.
# No -Werror: the library is kept clean against glibc and Unikraft, not NetBSD 7.99's
# headers, and a warning there must not throw away a 4-minute toolchain build; it is
# shown instead. The macro prefix map makes __FILE__ in records repo-relative
# (src/umonitor/guest/demo/demo_app.c), whatever directory the repo is in. Frame
# pointers: the library's error records carry a frame-pointer walk of the call stack.
GUEST_CFLAGS=(-std=c99 -O2 -g -fno-omit-frame-pointer -Wall -Wextra -pedantic)

usage() {
    echo "usage: bash guests/rumprun/build.sh SOURCES OUT" >&2
    echo "  SOURCES: directory with rumprun/{$RUMPRUN.tar.gz,$BUILDRUMP.tar.gz,$SRC_NETBSD.tar.xz}" >&2
    echo "  OUT: an existing empty directory for the images" >&2
    exit 2
}

[[ $# -eq 2 ]] || usage
[[ -d $1/rumprun ]] || { echo "build.sh: $1/rumprun: no such directory" >&2; usage; }
[[ -d $2 ]] || { echo "build.sh: $2: no such directory" >&2; usage; }
[[ -z $(ls -A "$2") ]] || { echo "build.sh: $2 is not empty" >&2; exit 2; }
for tarball in "$RUMPRUN.tar.gz" "$BUILDRUMP.tar.gz" "$SRC_NETBSD.tar.xz"; do
    [[ -f $1/rumprun/$tarball ]] || { echo "build.sh: $1/rumprun/$tarball is missing" >&2; exit 2; }
done

sources=$(realpath "$1/rumprun")
out=$(realpath "$2")
# shellcheck source=../lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

step "unpacking sources into $work"
mkdir "$work"
tar -xzf "$sources/$RUMPRUN.tar.gz" -C "$work"
tree=$work/$RUMPRUN
# The export's two submodule directories are empty; the other two exports fill them.
rmdir "$tree/buildrump.sh" "$tree/src-netbsd"
tar -xzf "$sources/$BUILDRUMP.tar.gz" -C "$work"
mv "$work/$BUILDRUMP" "$tree/buildrump.sh"
tar -xJf "$sources/$SRC_NETBSD.tar.xz" -C "$work"
mv "$work/$SRC_NETBSD" "$tree/src-netbsd"

step "building the rumprun hw toolchain (about 250 s on 2 cores)"
toolchain=$work/toolchain
(
    cd "$tree"
    # build-rr.sh runs `$GIT rev-parse` under `set -e` whenever `type $GIT` succeeds,
    # and aborts outside a git checkout: name a command that does not exist. Its
    # submodule check calls git itself; the ceiling keeps that git from finding a
    # repository that OUT may sit in. Variables that point git elsewhere are dropped.
    unset GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE GIT_COMMON_DIR
    export GIT=umonitor-no-git GIT_CEILING_DIRECTORIES=$work
    # gcc >= 10 defaults to -fno-common: NetBSD's host tools (nbmake: debug_file) and
    # the rumprun kernel (bmk_mainstackbase) define common symbols in several files.
    # -Wno-error: NetBSD builds with -Werror, and gcc 12 finds new warnings in its
    # headers (-Werror=cast-function-type in sys/conf.h).
    export HOST_CFLAGS="-O2 -fcommon"
    ./build-rr.sh -j2 -d "$toolchain" hw -- -F CFLAGS=-fcommon -F CPPFLAGS=-Wno-error
)
export PATH=$toolchain/bin:$PATH
export RUMPRUN_WARNING_STFU=please # rumprun-bake's "experimental" banner
cc=x86_64-rumprun-netbsd-gcc
command -v "$cc" >/dev/null || { echo "build.sh: the toolchain has no $cc"; exit 1; }

lib=$repo/src/umonitor/guest/c
demo=$repo/src/umonitor/guest/demo
spin_src=$repo/tests/c/spin_guest.c

# compile NAME CFLAGS... -- SOURCES...: the unbaked program work/NAME. What the
# compiler says goes to the log and, since a warning here is news, to the terminal.
compile() {
    local name=$1 flags=()
    shift
    while [[ $1 != -- ]]; do flags+=("$1"); shift; done
    shift
    step "compiling $name"
    "$cc" "${GUEST_CFLAGS[@]}" -fmacro-prefix-map="$repo/=" "${flags[@]}" -I"$lib" \
        -o "$work/$name" "$@" 2>"$work/$name.cc" || { cat "$work/$name.cc"; return 1; }
    cat "$work/$name.cc"
    # The host linker always notes that rumprun's objects want an executable stack;
    # that is rumprun's, not news about our sources.
    grep -v '^[^ ]*/ld: ' "$work/$name.cc" >&3 || true
}

# bake NAME: OUT/NAME.bin (stripped) and OUT/NAME.dbg (symbols and DWARF only).
bake() {
    local name=$1
    step "baking $name.bin (hw_virtio)"
    rumprun-bake hw_virtio "$work/$name.bin" "$work/$name"
    # Compressed DWARF halves the file (7.5 MB instead of 14.7 MB); addr2line and gdb
    # read it as it is.
    x86_64-rumprun-netbsd-objcopy --only-keep-debug --compress-debug-sections=zlib \
        "$work/$name.bin" "$out/$name.dbg"
    x86_64-rumprun-netbsd-strip -o "$out/$name.bin" "$work/$name.bin"
}

compile log -I"$demo" -- "$demo/demo_app.c" "$lib/umonitor.c"
bake log
compile crash -I"$demo" -- "$demo/crash_app.c" "$lib/umonitor.c"
bake crash
# As tests/integration/test_seed_guest.py builds it: the compat library alone (it
# shares nothing with umonitor.c), speaking the 2018 bytes exactly.
compile seed2018 -DUMON_COMPAT_WIRE_2018 -- "$repo/tests/c/seed_guest.c" "$lib/umonitor_compat.c"
bake seed2018
if [[ -f $spin_src ]]; then
    compile spin -- "$spin_src" "$lib/umonitor.c"
    bake spin
else
    step "tests/c/spin_guest.c does not exist: spin.bin not built"
fi

[[ ${KEEP_WORK:-0} == 1 ]] || rm -rf "$work"
ls -l "$out" >&3
step "built rumprun guests in $((SECONDS - started)) s"
