"""DiskWorker: jobs run in order, off the caller's thread; errors wait for the caller."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from umonitor.store.worker import DiskWorker


def test_jobs_run_in_order_on_another_thread() -> None:
    worker = DiskWorker()
    seen: list[tuple[int, str]] = []
    for i in range(200):
        worker.submit(lambda i=i: seen.append((i, threading.current_thread().name)))
    worker.wait()
    assert [i for i, _ in seen] == list(range(200))
    assert {name for _, name in seen} == {"umonitor-disk"}
    assert not worker.busy and worker.take_error() is None


def test_an_error_is_kept_for_the_caller_and_later_jobs_still_run(tmp_path: Path) -> None:
    worker = DiskWorker()
    worker.submit(lambda: os.unlink(tmp_path / "missing"))
    done = threading.Event()
    worker.submit(done.set)
    worker.wait()
    assert done.is_set()
    error = worker.take_error()
    assert isinstance(error, FileNotFoundError)
    assert worker.take_error() is None  # handed over once


def test_fsync_works_on_a_duplicate_while_the_original_closes(tmp_path: Path) -> None:
    worker = DiskWorker()
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"data\n")
    worker.fsync([fd])
    os.close(fd)  # the store may close or rotate the file at once
    worker.wait()
    assert worker.take_error() is None
    assert (tmp_path / "f").read_bytes() == b"data\n"
