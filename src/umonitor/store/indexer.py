"""The index follower the collector starts: ``python -m umonitor.store.indexer DATA``.

It runs in its own process so that indexing (block summaries) uses another core than
the collector's event loop; it catches up every 200 ms and once more on SIGTERM, and
exits when its collector is gone (even one killed with SIGKILL). It runs at a lower
CPU priority (nice 10): under load, storing and acknowledging records comes first and
the index catches up when the CPUs have time.

It outlives what it cannot help: a full disk or an index locked for long (``umonitor
reindex``) make it try again a second later; an index file deleted or replaced under
it makes it open the one now at that path.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import sys
import threading
from pathlib import Path

from umonitor.errors import UsageError
from umonitor.store import layout
from umonitor.store.index import catch_up, connect

INTERVAL = 0.2
NICE = 10


RETRY = 1.0


def _inode(path: Path) -> int:
    try:
        return path.stat().st_ino
    except OSError:
        return 0


def main(argv: list[str]) -> int:
    root = Path(argv[1])
    with contextlib.suppress(OSError):
        os.nice(NICE)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    path = root / layout.INDEX
    conn: sqlite3.Connection | None = None
    inode = 0
    parent = os.getppid()
    while not stop.is_set() and os.getppid() == parent:  # ends with its collector, however
        try:
            if conn is None or _inode(path) != inode:
                if conn is not None:
                    conn.close()
                conn = None
                conn = connect(root)
                inode = _inode(path)
            if not catch_up(conn, root):
                stop.wait(INTERVAL)
        except (sqlite3.Error, UsageError, OSError):
            stop.wait(RETRY)  # disk full, locked for long: later
    with contextlib.suppress(sqlite3.Error, UsageError, OSError):
        if conn is None:
            conn = connect(root)
        catch_up(conn, root)
    if conn is not None:
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
