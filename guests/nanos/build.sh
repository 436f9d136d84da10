#!/usr/bin/env bash
# Build Nanos and umonitor's Nanos test programs, offline, from plain source exports.
#
#   bash guests/nanos/build.sh SOURCES OUT
#
# SOURCES holds nanos/ with the four exports of shared/unikernels/nanos:
# nanos-*.tar.gz, lwip-*.tar.gz, mbedtls-*.tar.gz, acpica-*.tar.gz. OUT is an existing,
# empty directory. The build (150-210 s on 2 cores) leaves in OUT what
# src/umonitor/image/nanos.py takes as its `nanos_dir` (kernel.img, boot.img and klibs/
# where an `ops` release directory, ~/.ops/VERSION, has them, plus mkfs):
#
#   kernel.img        the Nanos kernel
#   boot.img          the BIOS boot loader (stage 1 and 2) that mkfs puts first
#   mkfs, dump        the host tools that write and read Nanos disk images
#   klibs/NAME        the kernel libraries (syslog among them); an image loads those
#                     copied into its boot filesystem's klib/ directory
#   log               src/umonitor/guest/demo/demo_app.c + the guest library
#   crash             src/umonitor/guest/demo/crash_app.c + the guest library
#   spin              tests/c/spin_guest.c + the guest library, when that file exists
#   NAME.dbg          symbols and DWARF of each program (the programs are stripped)
#   kernel.dbg        the kernel's symbols (kernel.elf), for addresses in a kernel trace
#
# The programs are static Linux x86-64 executables built with the host's gcc: Nanos
# runs them as they are. Everything the tools print goes to OUT/build.log; on failure
# its last 30 lines are shown and the exit code is 1. OUT/work is deleted at the end
# (after a failure too, unless KEEP_WORK=1).
#
# Nanos' Makefile would `git clone` lwip, mbedtls and acpica into vendor/ and generate
# gitversion.c with `git rev-parse HEAD`. Here the exports are unpacked into vendor/
# with the marker files its rule checks (vendor/NAME/.vendored), acpica gets
# patches/acpica.patch as that rule would apply it, and `git` is a stand-in that
# answers `rev-parse HEAD` with the commit recorded in the export and refuses anything
# else, so no clone can be attempted.
#
# Needs (Debian): build-essential (gcc, make, patch, libc6-dev for -static), nasm.
set -euo pipefail

usage() {
    echo "usage: bash guests/nanos/build.sh SOURCES OUT" >&2
    echo "  SOURCES: directory with nanos/{nanos,lwip,mbedtls,acpica}-*.tar.gz" >&2
    echo "  OUT: an existing empty directory for the artifacts" >&2
    exit 2
}

[[ $# -eq 2 ]] || usage
[[ -d $1/nanos ]] || { echo "build.sh: $1/nanos: no such directory" >&2; usage; }
[[ -d $2 ]] || { echo "build.sh: $2: no such directory" >&2; usage; }
[[ -z $(ls -A "$2") ]] || { echo "build.sh: $2 is not empty" >&2; exit 2; }

# export NAME: the one SOURCES/nanos/NAME-*.tar.gz.
export_of() {
    local matches=("$sources/$1"-*.tar.gz)
    if [[ ${#matches[@]} -ne 1 || ! -f ${matches[0]} ]]; then
        echo "build.sh: need exactly one $sources/$1-*.tar.gz" >&2
        exit 2
    fi
    echo "${matches[0]}"
}

sources=$(realpath "$1/nanos")
declare -A tgz
for part in nanos lwip mbedtls acpica; do
    tgz[$part]=$(export_of $part)
done
for tool in gcc make patch nasm; do
    command -v "$tool" >/dev/null || {
        echo "build.sh: $tool is missing (Debian: apt-get install build-essential nasm)" >&2
        exit 2
    }
done

out=$(realpath "$2")
# shellcheck source=../lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

# commit_of TARBALL: the commit `git archive` recorded in the pax global header (the
# "comment" record of the second 512-byte block), or the short one in the file name.
commit_of() {
    local commit
    commit=$(gzip -dc "$1" | head -c 1024 | tail -c 512 | tr '\0' '\n' |
        sed -n 's/^[0-9]* comment=\([0-9a-f]\{40\}\)$/\1/p' | head -n 1) || true
    if [[ -z $commit ]]; then
        commit=${1##*-}
        commit=${commit%.tar.gz}
    fi
    echo "$commit"
}

# unpack TARBALL DIR: the export's one top directory becomes DIR.
unpack() {
    mkdir -p "$2"
    tar -xzf "$1" -C "$2" --strip-components=1
}

step "unpacking sources into $work"
tree=$work/nanos
unpack "${tgz[nanos]}" "$tree"
for part in lwip mbedtls acpica; do
    unpack "${tgz[$part]}" "$tree/vendor/$part"
    # The marker Nanos' `%/.vendored` rule makes after a clone; with it, no clone.
    touch "$tree/vendor/$part/.vendored"
done
# What that rule does after cloning acpica (patches/NAME.patch, when there is one).
patch -p1 -d "$tree/vendor/acpica" <"$tree/patches/acpica.patch"

# gitversion.c is made from `$(GIT) rev-parse HEAD` and depends on .git/index and
# .git/HEAD: give it those two files (older than anything it makes) and a stand-in git.
commit=$(commit_of "${tgz[nanos]}")
mkdir -p "$work/bin" "$tree/.git"
echo "$commit" >"$tree/.git/HEAD"
: >"$tree/.git/index"
touch -d @0 "$tree/.git/HEAD" "$tree/.git/index"
cat >"$work/bin/git" <<EOF
#!/bin/sh
# Stand-in for git in an offline build of an export (guests/nanos/build.sh).
if [ "\$*" = "rev-parse HEAD" ]; then echo $commit; exit 0; fi
echo "git \$*: not available in this offline build" >&2
exit 1
EOF
chmod +x "$work/bin/git"
step "Nanos commit $commit"

# No git may find a repository that OUT sits in, whatever runs it.
export GIT_CEILING_DIRECTORIES=$work
unset GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE GIT_COMMON_DIR

step "building the Nanos kernel, boot loader and klibs (make kernel)"
make -C "$tree" -j2 GIT="$work/bin/git" kernel
step "building mkfs and dump (make tools)"
make -C "$tree" -j2 GIT="$work/bin/git" tools

built=$tree/output/platform/pc
cp "$built/bin/kernel.img" "$built/boot/boot.img" "$out/"
cp "$built/bin/kernel.elf" "$out/kernel.dbg"
cp "$tree/output/tools/bin/mkfs" "$tree/output/tools/bin/dump" "$out/"
# The klibs as Nanos' `make release` collects them: every program in bin/ but the
# kernel, its .dbg files and the in-kernel tests.
mkdir "$out/klibs"
for klib in "$built/bin"/*; do
    name=${klib##*/}
    [[ -f $klib && $name != kernel.* && $name != *.dbg ]] || continue
    cp "$klib" "$out/klibs/"
done
[[ -f $out/klibs/syslog ]] || { echo "build.sh: the build made no syslog klib"; exit 1; }

lib=$repo/src/umonitor/guest/c
demo=$repo/src/umonitor/guest/demo
spin_src=$repo/tests/c/spin_guest.c
# The library's own warning set; records name their source file without this
# checkout's path (-fmacro-prefix-map), the .dbg files keep full paths. Frame
# pointers for the call stacks of the library's error records. The library's
# fatal-signal handler is left out (UMON_CRASH_HANDLER=0): it works on Nanos, but
# the signal it raises again makes Nanos print the handler's context ("Process
# abort: Unhandled SIGSEGV") instead of the faulting thread's, which the crash
# capture hands to gdb (docs/debugging.md).
prog_cflags=(-std=c99 -O2 -g -static -fno-omit-frame-pointer -DUMON_CRASH_HANDLER=0
    -Wall -Wextra -pedantic
    "-fmacro-prefix-map=$lib/=" "-fmacro-prefix-map=$demo/=" "-fmacro-prefix-map=$repo/tests/c/=")

# program NAME SOURCES...: OUT/NAME (stripped, static) and OUT/NAME.dbg. What the
# compiler says goes to the log and, since a warning here is news, to the terminal.
program() {
    local name=$1
    shift
    step "compiling $name (static, host gcc)"
    gcc "${prog_cflags[@]}" -I"$lib" -I"$demo" -o "$work/$name" "$@" "$lib/umonitor.c" \
        2>"$work/$name.cc" || { cat "$work/$name.cc"; return 1; }
    cat "$work/$name.cc"
    [[ ! -s $work/$name.cc ]] || cat "$work/$name.cc" >&3
    objcopy --only-keep-debug "$work/$name" "$out/$name.dbg"
    strip -o "$out/$name" "$work/$name"
}

program log "$demo/demo_app.c"
program crash "$demo/crash_app.c"
if [[ -f $spin_src ]]; then
    program spin "$spin_src"
else
    step "NOTE: tests/c/spin_guest.c does not exist: spin not built"
fi

step "removing $work"
rm -rf "$work"
ls -l "$out" "$out/klibs" >&3
step "built nanos in $((SECONDS - started)) s"
