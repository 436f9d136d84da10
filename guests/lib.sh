# Sourced by guests/*/build.sh after they set `out` (the artifact directory): the
# build's log and progress. It sets `repo`, `work` (OUT/work, for the unpacked
# sources), `log` (OUT/build.log) and `started`, sends everything the build prints
# to the log, gives `step TEXT` to print a progress line on the terminal (fd 3), and
# on failure deletes OUT/work (unless KEEP_WORK=1), prints the log's last 30 lines
# on stderr (fd 4) and exits 1.
# shellcheck shell=bash

repo=$(realpath "$(dirname "${BASH_SOURCE[0]}")/..")
work=$out/work
log=$out/build.log
started=$SECONDS

exec 3>&1 4>&2 >"$log" 2>&1

step() {
    echo ">>> $*"
    echo "$*" >&3
}

on_exit() {
    local rc=$?
    if [[ $rc -ne 0 ]]; then
        [[ ${KEEP_WORK:-0} == 1 ]] || rm -rf "$work"
        {
            echo "build.sh: failed (exit $rc); last 30 lines of $log:"
            tail -n 30 "$log"
        } >&4
        exit 1
    fi
}
trap on_exit EXIT
