"""The store's slow file-system calls, in one thread, in order, off the event loop.

An fsync of a second's writes, replacing a small state file while the journal commits
a few hundred megabytes (ext4 flushes a file renamed over another), unlinking a big
file whose pages are still under writeback: each can take hundreds of milliseconds,
and on the collector's event loop it would hold every guest's ACK that long. The
store hands such calls to this worker instead. Jobs run one at a time in the order
given (a later state file is never replaced by an earlier one); an ``OSError`` a job
raises is kept for the next commit, which reports it like any disk failure.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable

Job = Callable[[], object]


class DiskWorker:
    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._queued = 0
        self._idle = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._error: OSError | None = None
        self.failures = 0  # jobs that raised, ever (take_error does not reset it)

    @property
    def busy(self) -> bool:
        """Whether any job is queued or running."""
        return self._queued > 0

    def submit(self, job: Job) -> None:
        with self._lock:
            self._queued += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="umonitor-disk", daemon=True)
                self._thread.start()
        self._jobs.put(job)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                job()
            except OSError as exc:
                self._error = exc
                self.failures += 1
            finally:
                with self._lock:
                    self._queued -= 1
                    if not self._queued:
                        self._idle.notify_all()

    def wait(self) -> None:
        """Until every job submitted so far has run."""
        with self._lock:
            while self._queued:
                self._idle.wait()

    def take_error(self) -> OSError | None:
        error, self._error = self._error, None
        return error

    def fsync(self, fds: list[int]) -> None:
        """fsync these files (duplicates are taken now: the originals may close)."""
        if fds:
            self.submit(_FsyncJob([os.dup(fd) for fd in fds]))


class _FsyncJob:
    def __init__(self, fds: list[int]) -> None:
        self.fds = fds

    def __call__(self) -> None:
        try:
            for fd in self.fds:
                os.fsync(fd)
        finally:
            for fd in self.fds:
                os.close(fd)
