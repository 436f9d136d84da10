#!/usr/bin/env bash
# Build the Unikraft test guests, offline, from the pinned source archives.
#
#   bash guests/unikraft/build.sh SOURCES OUT
#
# SOURCES holds unikraft/ with the three archives named below (the layout of
# /work/shared/unikernels); OUT is an existing directory, normally empty. The
# result, in OUT:
#
#   log.kernel   log.dbg     src/umonitor/guest/demo/demo_app.c
#   crash.kernel crash.dbg   src/umonitor/guest/demo/crash_app.c
#   spin.kernel  spin.dbg    tests/c/spin_guest.c
#   trace.kernel trace.dbg   src/umonitor/guest/demo/trace_app.c, built with
#                            -finstrument-functions (the application only)
#   build.log
#
# Each image is Unikraft 0.17 for QEMU x86_64 (KVM platform, multiboot;
# boot with -kernel), with virtio-net, lwIP and the umonitor library, which it
# links as a Unikraft library (UK_LIBS = lib-lwip and src/umonitor/guest/c).
# The .dbg files carry the symbols and DWARF for symbolizing crash traces.
#
# How this works: the archives are checked against their SHA-256, unpacked into
# OUT/work, and lib-lwip is adapted to core 0.17 (adapt_lwip.py, three checked edits: it
# still asks for uk/swrand, which 0.17 replaced by ukrandom, and ukrandom stops
# the boot under QEMU TCG). lib-lwip would download the lwIP sources; the zip
# placed where its Makefile.uk looks (BUILD/liblwip/UNIKRAFT-2_1_x.zip) keeps it
# from trying. One application directory (app/) builds every image, the C
# source chosen by UMON_APP_SRC, each in its own build directory. OUT/work is
# deleted at the end, so only the artifacts stay.
#
# Needs (Debian): make gcc flex bison unzip patch xz-utils.
set -euo pipefail

UNIKRAFT_TAR=unikraft-0.17.0-484ff209.tar.xz
UNIKRAFT_SHA256=bbca183981fb4e190e9699f6567309dfc56039cd3b0cb15062d68eed3b32c0b9
LWIP_TAR=lib-lwip-7c1859a7.tar.xz
LWIP_SHA256=3bab0aa84be4473785baafde415ad6d3d69e1dc9e5844022e37ebdc955ac7dfc
LWIP_ZIP=fork-lwip-UNIKRAFT-2_1_x-bef26c44.zip
LWIP_ZIP_SHA256=c2b3b7685e82d3d4b5e61cf3e6ea54aa0b60c0b12139b76873a790a45e2b759b
LWIP_ZIP_AS=UNIKRAFT-2_1_x.zip # the name lib-lwip's Makefile.uk downloads to

# image name -> application source, relative to the repository [-> extra C flags
# for the application's own sources]. Function tracing instruments the
# application only: Unikraft's boot, scheduler and interrupt paths would call the
# hooks before the library is set up, and from contexts it does not guard.
GUESTS=(
    "log src/umonitor/guest/demo/demo_app.c"
    "crash src/umonitor/guest/demo/crash_app.c"
    "spin tests/c/spin_guest.c"
    "trace src/umonitor/guest/demo/trace_app.c -finstrument-functions"
)

die() {
    echo "build.sh: $*" >&2
    exit 1
}

[ $# -eq 2 ] || die "usage: bash guests/unikraft/build.sh SOURCES OUT"
[ -d "$1/unikraft" ] || die "$1/unikraft: no such directory"
[ -d "$2" ] || die "$2: no such directory (create it first)"
SOURCES=$(cd "$1/unikraft" && pwd)
OUT=$(cd "$2" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
WORK=$OUT/work
LOG=$OUT/build.log

for tool in make gcc flex bison unzip patch xz sha256sum; do
    command -v "$tool" >/dev/null ||
        die "$tool is missing (Debian: apt-get install make gcc flex bison unzip patch xz-utils)"
done

# On any failure: the end of the build log, then a non-zero exit. The work tree
# goes too (hundreds of MB); the log tells what happened.
failed() {
    echo "build.sh: failed; the last 30 lines of $LOG:" >&2
    tail -n 30 "$LOG" >&2
    rm -rf "$WORK"
    exit 1
}
trap failed ERR

started=$(date +%s)
rm -rf "$WORK"
mkdir -p "$WORK"
: >"$LOG"

echo "$UNIKRAFT_SHA256  $SOURCES/$UNIKRAFT_TAR
$LWIP_SHA256  $SOURCES/$LWIP_TAR
$LWIP_ZIP_SHA256  $SOURCES/$LWIP_ZIP" | sha256sum --check >>"$LOG" 2>&1

tar -xJf "$SOURCES/$UNIKRAFT_TAR" -C "$WORK" # -> unikraft/
tar -xJf "$SOURCES/$LWIP_TAR" -C "$WORK"     # -> lwip/
python3 "$HERE/adapt_lwip.py" "$WORK/lwip" >>"$LOG" 2>&1 || die "lib-lwip could not be adapted to core 0.17 (see $LOG)"

for guest in "${GUESTS[@]}"; do
    read -r name source cflags <<<"$guest"
    build=$WORK/build-$name
    # Variables for app/Makefile; O and C keep this image apart from the others.
    vars=(
        UK_ROOT="$WORK/unikraft"
        UK_LIBS="$WORK/lwip:$REPO/src/umonitor/guest/c"
        UMON_APP_SRC="$REPO/$source"
        UMON_APP_CFLAGS="$cflags"
        O="$build"
        C="$build/.config"
    )
    image_started=$(date +%s)
    mkdir -p "$build/liblwip"
    cp "$SOURCES/$LWIP_ZIP" "$build/liblwip/$LWIP_ZIP_AS"
    {
        echo "=== $name: $source $cflags"
        make -C "$HERE/app" "${vars[@]}" UK_DEFCONFIG="$HERE/app/defconfig" defconfig
        make -C "$HERE/app" "${vars[@]}" -j2
    } >>"$LOG" 2>&1
    # The library and the applications must build without a single warning.
    if grep -E "(src/umonitor/guest|tests/c)/[^:]*:[0-9]+:[0-9]+: warning" "$LOG" >&2; then
        rm -rf "$WORK"
        die "warnings in umonitor sources (above; full log in $LOG)"
    fi
    cp "$build/app_qemu-x86_64" "$OUT/$name.kernel"
    cp "$build/app_qemu-x86_64.dbg" "$OUT/$name.dbg"
    echo "built $name.kernel ($(stat -c %s "$OUT/$name.kernel") bytes) in $(($(date +%s) - image_started)) s"
done

rm -rf "$WORK"
echo "built unikraft guests in $(($(date +%s) - started)) s"
