"""The SQLite index over the log files: opening it, and following the files into it.

How this works: the files are the truth; the index follows them. ``catch_up`` reads
each instance's log files from the offset it reached last time, up to the last
complete line, and inserts what it parses in the same transaction that moves the
offset, so every line is indexed exactly once whoever runs it (the collector's
indexer process, or a CLI command run with no collector). Deleting the database and
calling ``catch_up`` rebuilds it. WAL mode lets readers query while it writes.

Positions are kept per segment key (store/segments.py), not per file name: a rotated
file keeps its key, so it is finished under its new name and the new ``app.log`` is
read from its start. Each record row says which segment it came from (``log_id``);
when retention deletes a file, the next ``catch_up`` deletes its rows too, so the
index shows what is on disk. An index of another schema version is dropped and
rebuilt from the files.

The tables are in store/index_schema.py; the queries ``logs`` and ``ls`` make, in
store/index_query.py.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from umonitor.errors import LineError, UsageError
from umonitor.store import layout
from umonitor.store.index_schema import I64_END, prepare, record_row
from umonitor.store.logfile import BootLine, DroppedLine, RecordLine, parse_line
from umonitor.store.names import is_instance_name
from umonitor.store.segments import Segment, list_segments, open_segment

CHUNK = 4 << 20

ParseRecordLines = Callable[[bytes, int, int], tuple[int, list[tuple[Any, ...]]]]
parse_record_lines: ParseRecordLines | None
try:
    from umonitor._speedups import parse_record_lines
except ImportError:  # optional C accelerator; parse_line is the reference
    parse_record_lines = None
if os.environ.get("UMONITOR_PURE_PYTHON"):
    parse_record_lines = None


def connect(root: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """The index database of data directory ``root``, created if needed."""
    path = root / layout.INDEX
    try:
        conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        if not readonly:
            prepare(conn)
    except sqlite3.Error as exc:
        raise UsageError(f"cannot open the index {path}: {exc}") from exc
    return conn


def connect_as_it_is(root: Path) -> sqlite3.Connection:
    """The index read as the file is, for when ``connect`` fails (a full disk, say).

    No locks and no ``-shm`` (SQLite cannot create one on a full disk); what is
    still only in the ``-wal`` file is not seen.
    """
    path = root / layout.INDEX
    if not path.exists():
        raise UsageError(f"no index at {path}")
    try:
        conn = sqlite3.connect(
            f"{path.absolute().as_uri()}?immutable=1", uri=True, check_same_thread=False
        )
        conn.execute("SELECT count(*) FROM instances").fetchone()
    except sqlite3.Error as exc:
        raise UsageError(f"cannot read the index {path}: {exc}") from exc
    return conn


def _instance_id(conn: sqlite3.Connection, name: str) -> int:
    row = conn.execute("SELECT id FROM instances WHERE name = ?", (name,)).fetchone()
    if row is not None:
        return int(row[0])
    cur = conn.execute("INSERT INTO instances(name) VALUES (?)", (name,))
    return int(cur.lastrowid or 0)


def _boot_id(conn: sqlite3.Connection, instance_id: int, boot: str, cache: dict[str, int]) -> int:
    found = cache.get(boot)
    if found is not None:
        return found
    conn.execute(
        "INSERT OR IGNORE INTO boots(instance_id, boot) VALUES (?, ?)", (instance_id, boot)
    )
    row = conn.execute(
        "SELECT id FROM boots WHERE instance_id = ? AND boot = ?", (instance_id, boot)
    ).fetchone()
    cache[boot] = int(row[0])
    return cache[boot]


@dataclass(frozen=True, slots=True)
class _Position:
    id: int
    offset: int
    context: str


def _position(conn: sqlite3.Connection, instance_id: int, seg: Segment) -> _Position:
    """The position row of ``seg``; a row left by another file of that key is forgotten."""
    row = conn.execute(
        "SELECT id, head, offset, context FROM positions WHERE instance_id = ? AND file = ?",
        (instance_id, seg.key),
    ).fetchone()
    if row is not None and bytes(row[1]) != seg.head:
        forget_file(conn, instance_id, int(row[0]))
        row = None
    if row is None:
        cur = conn.execute(
            "INSERT INTO positions(instance_id, file, head, offset) VALUES (?, ?, ?, 0)",
            (instance_id, seg.key, seg.head),
        )
        return _Position(int(cur.lastrowid or 0), 0, "")
    return _Position(int(row[0]), int(row[2]), str(row[3]))


def _catch_up_file(
    conn: sqlite3.Connection, name: str, instance_id: int, seg: Segment, until: int | None
) -> tuple[int, int, int]:
    """Index what segment ``seg`` gained, up to offset ``until`` (None: its end).

    Returns (records added, bytes consumed, the file's size). Does nothing if
    ``name`` is no longer ``instance_id`` (``reindex`` dropped or rebuilt it since
    the listing): the next round lists it again.
    """
    row = conn.execute("SELECT id FROM instances WHERE name = ?", (name,)).fetchone()
    if row is None or int(row[0]) != instance_id:
        return 0, 0, 0
    src = open_segment(seg)
    if src is None:
        return 0, 0, 0  # deleted meanwhile: forgotten on the next round
    with src:
        size = os.fstat(src.fileno()).st_size
        pos_row = _position(conn, instance_id, seg)
        offset, context = pos_row.offset, pos_row.context
        stop = size if until is None else min(size, until)
        if stop <= offset:
            return 0, 0, size
        src.seek(offset)
        data = src.read(min(CHUNK, stop - offset))
    end = data.rfind(b"\n") + 1
    if end == 0:
        return 0, 0, size
    log_id = pos_row.id
    rows: list[tuple[object, ...]] = []
    boots: dict[str, int] = {}
    counts = [0] * 8
    bad = 0
    pos = 0
    while pos < end:
        if parse_record_lines is not None:
            # The C fast path takes plain record lines; it stops at every other line.
            pos, fast = parse_record_lines(data, pos, end)
            if fast:
                boot_id = _boot_id(conn, instance_id, context, boots) if context else None
                rows.extend([(instance_id, boot_id, *r, log_id) for r in fast])
                for r in fast:
                    counts[r[3]] += 1
            if pos >= end:
                break
        newline = data.index(b"\n", pos)
        raw = data[pos:newline]
        pos = newline + 1
        try:
            parsed = parse_line(raw.decode("utf-8", "replace"))
        except LineError:
            bad += 1
            continue
        if isinstance(parsed, RecordLine):
            boot_id = _boot_id(conn, instance_id, context, boots) if context else None
            rows.append((instance_id, boot_id, *record_row(parsed), log_id))
            counts[parsed.record.severity] += 1
        elif isinstance(parsed, BootLine):
            context = parsed.boot
            boot_id = _boot_id(conn, instance_id, context, boots)
            if parsed.peer or parsed.library:
                conn.execute(
                    "UPDATE boots SET peer = ?, library = ? WHERE id = ?",
                    (parsed.peer, parsed.library, boot_id),
                )
                if seg.family == layout.APP_LOG:  # the guest library's own connection
                    conn.execute(
                        "UPDATE instances SET peer = ?, library = ? WHERE id = ?",
                        (parsed.peer, parsed.library, instance_id),
                    )
        elif isinstance(parsed, DroppedLine):
            boot_id = _boot_id(conn, instance_id, parsed.boot, boots)
            conn.execute(
                "UPDATE boots SET dropped = max(dropped, ?) WHERE id = ?",
                (min(parsed.count, I64_END - 1), boot_id),  # a count no guest can reach
            )
    if rows:
        first_id = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM records").fetchone()[0]
        conn.executemany(
            "INSERT INTO records(instance_id, boot_id, seq, time_ns, mono_ns, severity, "
            "origin, kind, file, line, func, message, fields, log_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        first_id, last_id = conn.execute(
            "SELECT min(id), max(id) FROM records WHERE id >= ?", (first_id,)
        ).fetchone()
        conn.execute(
            "INSERT INTO records_fts(rowid, message) SELECT id, message FROM records WHERE id >= ?",
            (first_id,),
        )
        conn.executemany(
            "INSERT INTO counts(instance_id, severity, n) VALUES (?, ?, ?) "
            "ON CONFLICT(instance_id, severity) DO UPDATE SET n = n + excluded.n",
            [(instance_id, sev, n) for sev, n in enumerate(counts) if n],
        )
        conn.execute(
            "UPDATE boots SET max_seq = max(max_seq, (SELECT max(seq) FROM records r "
            "WHERE r.boot_id = boots.id AND r.id >= ?)) WHERE instance_id = ? AND id IN "
            "(SELECT DISTINCT boot_id FROM records WHERE id >= ?)",
            (first_id, instance_id, first_id),
        )
        conn.execute(
            "UPDATE instances SET first_ns = coalesce(first_ns, ?), "
            "last_ns = max(coalesce(last_ns, 0), ?) WHERE id = ?",
            (rows[0][3], rows[-1][3], instance_id),
        )
        conn.execute(
            "UPDATE positions SET first_id = coalesce(first_id, ?), last_id = ? WHERE id = ?",
            (first_id, last_id, log_id),
        )
    conn.execute(
        "UPDATE positions SET offset = ?, context = ?, bad_lines = bad_lines + ? WHERE id = ?",
        (offset + end, context, bad, log_id),
    )
    return len(rows), end, size


def forget_file(conn: sqlite3.Connection, instance_id: int, log_id: int) -> int:
    """Delete the rows of one log file (a deleted segment) from the index; returns records."""
    row = conn.execute("SELECT first_id, last_id FROM positions WHERE id = ?", (log_id,)).fetchone()
    removed = 0
    if row is not None and row[0] is not None:
        where = "instance_id = ? AND id BETWEEN ? AND ? AND log_id = ?"
        args = (instance_id, row[0], row[1], log_id)
        for severity, n in conn.execute(
            f"SELECT severity, count(*) FROM records WHERE {where} GROUP BY severity", args
        ).fetchall():
            removed += int(n)
            conn.execute(
                "UPDATE counts SET n = n - ? WHERE instance_id = ? AND severity = ?",
                (n, instance_id, severity),
            )
        conn.execute(
            "INSERT INTO records_fts(records_fts, rowid, message) "
            f"SELECT 'delete', id, message FROM records WHERE {where}",
            args,
        )
        conn.execute(f"DELETE FROM records WHERE {where}", args)
    conn.execute("DELETE FROM positions WHERE id = ?", (log_id,))
    return removed


def forget_instance(conn: sqlite3.Connection, name: str) -> None:
    """Delete everything the index holds of instance ``name`` (inside a transaction)."""
    row = conn.execute("SELECT id FROM instances WHERE name = ?", (name,)).fetchone()
    if row is None:
        return
    instance_id = int(row[0])
    conn.execute(
        "INSERT INTO records_fts(records_fts, rowid, message) "
        "SELECT 'delete', id, message FROM records WHERE instance_id = ?",
        (instance_id,),
    )
    for table in ("records", "counts", "positions", "boots"):
        conn.execute(f"DELETE FROM {table} WHERE instance_id = ?", (instance_id,))
    conn.execute("DELETE FROM instances WHERE id = ?", (instance_id,))


def instance_names(root: Path) -> list[str]:
    try:
        entries = sorted(p.name for p in (root / layout.INSTANCES).iterdir() if p.is_dir())
    except FileNotFoundError:
        return []
    return [name for name in entries if is_instance_name(name)]


@dataclass(frozen=True, slots=True)
class _Listing:
    instance_id: int
    segments: list[Segment]
    indexed: dict[str, tuple[bytes, int]]  # key -> (first line, offset indexed)


def _positions(conn: sqlite3.Connection, instance_id: int) -> dict[str, tuple[bytes, int]]:
    return {
        str(key): (bytes(head), int(offset))
        for key, head, offset in conn.execute(
            "SELECT file, head, offset FROM positions WHERE instance_id = ?", (instance_id,)
        )
    }


def _segments(conn: sqlite3.Connection, root: Path, name: str) -> _Listing | None:
    """The instance's log files and how far each is indexed; forgets the files gone.

    Forgetting lists the files again inside the write transaction: no other indexer
    can add a position between that listing and the deletions.
    """
    directory = layout.instance_dir(root, name)
    found = list_segments(directory)
    row = conn.execute("SELECT id FROM instances WHERE name = ?", (name,)).fetchone()
    if row is None and not found:
        return None
    indexed = _positions(conn, int(row[0])) if row is not None else {}
    if row is not None and all(key in {s.key for s in found} for key in indexed):
        return _Listing(int(row[0]), found, indexed)
    conn.execute("BEGIN IMMEDIATE")
    try:
        instance_id = _instance_id(conn, name)
        found = list_segments(directory)
        keys = {seg.key for seg in found}
        for log_id, key in conn.execute(
            "SELECT id, file FROM positions WHERE instance_id = ?", (instance_id,)
        ).fetchall():
            if key not in keys:
                forget_file(conn, instance_id, int(log_id))
        indexed = _positions(conn, instance_id)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return _Listing(instance_id, found, indexed)


def _indexed_to_end(seg: Segment, indexed: dict[str, tuple[bytes, int]]) -> bool:
    """Whether ``seg`` held nothing past its position when it was listed (no open, no lock)."""
    known = indexed.get(seg.key)
    return known is not None and known[0] == seg.head and seg.size <= known[1]


def catch_up(conn: sqlite3.Connection, root: Path, names: Sequence[str] | None = None) -> int:
    """Index what the log files gained since the last call; returns records added.

    Per instance and log file, rotated files are finished first, oldest first, then
    the live file. It stops at the size each file had when it got to it, so it ends
    even while a busy collector keeps appending.
    """
    added = 0
    for name in instance_names(root) if names is None else names:
        listing = _segments(conn, root, name)
        if listing is None:
            continue
        for seg in listing.segments:
            if _indexed_to_end(seg, listing.indexed):
                continue
            until = None
            while True:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    gained, consumed, size = _catch_up_file(
                        conn, name, listing.instance_id, seg, until
                    )
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                added += gained
                until = size if until is None else until
                if not consumed:
                    break
    return added
