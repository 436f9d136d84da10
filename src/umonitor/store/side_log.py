"""A log of what the collector turned away (refused guests, rejected syslog frames).

Lines are appended by the store's disk worker, never on the event loop: a flood of bad
frames on a slow disk must not hold every guest's ACK. What waits for the worker is
bounded (``PENDING_LIMIT``); past it lines are only counted (``lost``): the counters
that ``umonitor ls`` shows still say it happened. The file is cut at ``limit`` bytes
(the previous one kept as ``NAME.old``).
"""

from __future__ import annotations

import threading
from pathlib import Path

from umonitor.store.worker import DiskWorker

PENDING_LIMIT = 1 << 20  # bytes of lines waiting for the worker


class SideLog:
    def __init__(self, path: Path, limit: int, worker: DiskWorker) -> None:
        self.path = path
        self.limit = limit
        self.worker = worker
        self.lost = 0  # lines not written because too many were waiting
        self._lines: list[str] = []  # waiting for the worker, which takes them all at once
        self._pending = 0  # their bytes
        self._lock = threading.Lock()

    def write(self, line: str) -> None:
        """Append ``line`` (one line, with its newline) soon, off the event loop."""
        with self._lock:
            if self._pending + len(line) > PENDING_LIMIT:
                self.lost += 1
                return
            self._pending += len(line)
            self._lines.append(line)
            if len(self._lines) > 1:
                return  # a job is queued already and will take this line too
        self.worker.submit(self._append)

    def _append(self) -> None:
        """In the worker: everything waiting, with one open of the file."""
        with self._lock:
            lines, self._lines = self._lines, []
            self._pending = 0
        try:
            self.path.parent.mkdir(exist_ok=True)
            if self.path.exists() and self.path.stat().st_size > self.limit:
                self.path.replace(self.path.with_name(self.path.name + ".old"))
            with open(self.path, "a") as out:
                out.write("".join(lines))
        except OSError:
            pass  # the count still says it happened; the disk's state is the store's news
