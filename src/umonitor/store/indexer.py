"""The index follower the collector starts: ``python -m umonitor.store.indexer DATA``.

It runs in its own process so that indexing (SQLite, FTS5) uses another core than
the collector's event loop; it catches up every 200 ms and once more on SIGTERM, and
exits when its collector is gone (even one killed with SIGKILL). It runs at a lower
CPU priority (nice 10): under load, storing and acknowledging records comes first and
the index catches up when the CPUs have time.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from pathlib import Path

from umonitor.store.index import catch_up, connect

INTERVAL = 0.2
NICE = 10


def main(argv: list[str]) -> int:
    root = Path(argv[1])
    with contextlib.suppress(OSError):
        os.nice(NICE)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    conn = connect(root)
    parent = os.getppid()
    while not stop.is_set() and os.getppid() == parent:  # ends with its collector, however
        if not catch_up(conn, root):
            stop.wait(INTERVAL)
    catch_up(conn, root)
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
