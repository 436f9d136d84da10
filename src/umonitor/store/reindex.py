"""``umonitor reindex``: rebuild the index from the log files, with a collector running.

How this works. Every instance: the new index is built in a file of its own next to
the live one (``index.sqlite.rebuild-PID``), from the files as they are, while the
collector goes on writing and its indexer goes on indexing into the live index.
Then SQLite's online backup copies the new index over the live one in a single
write transaction: readers in WAL mode see the old index or the new one, never a
mix, and the indexer (which keeps no state between transactions besides the
positions in the database) goes on from the new index's positions, so what arrived
after the build is indexed once. The file is not renamed over the live one: open
connections and the ``-wal``/``-shm`` files belong to the live file, and replacing it
under them corrupts it. A running ``logs -f`` follows the files, not the index: it
goes on unaware.

Named instances: their rows are deleted from the live index in one transaction (the
lock the indexer takes for each of its steps), then their files are indexed again in
steps like the indexer's; a query meanwhile sees those instances partly indexed.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from umonitor.errors import UsageError
from umonitor.procs import process_running
from umonitor.store import index, index_schema, layout

REBUILD = f"{layout.INDEX}.rebuild-"


@dataclass(frozen=True, slots=True)
class Reindexed:
    instances: int
    files: int
    records: int
    seconds: float


def reindex(root: Path, names: Sequence[str] = ()) -> Reindexed:
    """Rebuild the index of ``root`` (or of the instances ``names``) from the log files."""
    if not (root / layout.INSTANCES).is_dir():
        raise UsageError(f"no umonitor data in {root}; pass --data DIR")
    started = time.monotonic()
    if names:
        known = set(index.instance_names(root))
        unknown = [n for n in names if n not in known]
        if unknown:
            raise UsageError(
                f"no instance named {', '.join(unknown)} in {root}; 'umonitor ls' lists them"
            )
        instances, files, records = _reindex_named(root, list(dict.fromkeys(names)))
    else:
        instances, files, records = _reindex_all(root)
    return Reindexed(instances, files, records, time.monotonic() - started)


def _remove_leftovers(root: Path) -> None:
    """Delete the scratch files of rebuilds that died (their process is gone)."""
    for path in root.glob(f"{REBUILD}*"):
        pid = path.name[len(REBUILD) :]
        if pid.isdigit() and not process_running(int(pid)):
            path.unlink(missing_ok=True)


def _reindex_all(root: Path) -> tuple[int, int, int]:
    _remove_leftovers(root)
    live = index.connect(root)
    tmp = root / f"{REBUILD}{os.getpid()}"  # two rebuilds at once each have their own
    try:
        page_size = int(live.execute("PRAGMA page_size").fetchone()[0])
        new = sqlite3.connect(tmp, isolation_level=None)
        try:
            # A scratch file: no journal, no fsync; if this dies, it is deleted next time.
            new.execute(f"PRAGMA page_size = {page_size}")
            new.execute("PRAGMA journal_mode = OFF")
            new.execute("PRAGMA synchronous = OFF")
            new.execute("PRAGMA cache_size = -65536")  # 64 MiB: the indexes stay in memory
            index_schema.prepare(new)
            index.catch_up(new, root)
            index.catch_up(new, root)  # what arrived during the first pass
            instances = int(new.execute("SELECT count(*) FROM instances").fetchone()[0])
            files = int(new.execute("SELECT count(*) FROM positions").fetchone()[0])
            records = int(new.execute("SELECT coalesce(sum(records), 0) FROM blocks").fetchone()[0])
            new.backup(live)  # the swap: one write transaction on the live index
        finally:
            new.close()
    finally:
        live.close()
        with contextlib.suppress(OSError):
            tmp.unlink()
    return instances, files, records


def _reindex_named(root: Path, names: list[str]) -> tuple[int, int, int]:
    conn = index.connect(root)
    try:
        for name in names:
            conn.execute("BEGIN IMMEDIATE")
            try:
                index.forget_instance(conn, name)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        index.catch_up(conn, root, names)
        among = f"(SELECT id FROM instances WHERE name IN ({', '.join('?' * len(names))}))"
        files = int(
            conn.execute(
                f"SELECT count(*) FROM positions WHERE instance_id IN {among}", names
            ).fetchone()[0]
        )
        records = int(
            conn.execute(
                f"SELECT coalesce(sum(records), 0) FROM blocks WHERE instance_id IN {among}", names
            ).fetchone()[0]
        )
    finally:
        conn.close()
    return len(names), files, records
