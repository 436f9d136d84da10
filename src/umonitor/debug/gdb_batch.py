"""Run INSIDE gdb (``umonitor debug NAME --batch FILE``): source FILE, then detach.

gdb's batch mode exits with the status of its last command, so an error in FILE would
end in status 0 behind a successful detach: here FILE's error is printed and the exit
status is 1. Whatever FILE leaves attached is detached (the guest runs on); a FILE that
detached itself is fine.
"""

from __future__ import annotations

import contextlib
import os
import sys

import gdb  # type: ignore[import-untyped, import-not-found, unused-ignore]


def main() -> None:
    script = os.environ.get("UMONITOR_GDB_SCRIPT", "")
    status = 0
    try:
        gdb.execute(f"source {script}")
    except gdb.error as exc:
        print(f"umonitor: {script}: {exc}", file=sys.stderr)
        status = 1
    finally:
        if gdb.selected_inferior().pid:
            with contextlib.suppress(gdb.error):
                gdb.execute("detach")
    sys.stdout.flush()
    gdb.execute(f"quit {status}")


main()
