"""The side logs (refusals, rejected frames): written by the disk worker, in order,
many lines to one append, and bounded while the worker is busy."""

from __future__ import annotations

import threading
from pathlib import Path

from umonitor.store.side_log import PENDING_LIMIT, SideLog
from umonitor.store.worker import DiskWorker


def test_lines_wait_for_the_worker_in_order_and_past_the_bound_are_only_counted(
    tmp_path: Path,
) -> None:
    worker = DiskWorker()
    busy = threading.Event()
    worker.submit(lambda: busy.wait(30))  # a slow disk: the worker is held
    log = SideLog(tmp_path / "rejects" / "x.log", 10 << 20, worker)
    line = "r" * 99 + "\n"
    fits = PENDING_LIMIT // len(line)
    for n in range(fits + 5):
        log.write(f"{n:06d}" + line[6:])
    assert log.lost == 5  # memory stays bounded while nothing can be written
    busy.set()
    worker.wait()
    written = (tmp_path / "rejects" / "x.log").read_text().splitlines()
    assert [int(w[:6]) for w in written] == list(range(fits))
    log.write("after\n")  # the bound is free again once written
    worker.wait()
    assert (tmp_path / "rejects" / "x.log").read_text().endswith("after\n")
    assert log.lost == 5
