"""The index over the log files: block summaries in SQLite, and following the files into it.

How this works: the files are the truth; the index follows them (docs/block-index.md).
``catch_up`` reads each instance's log files from where it stopped last time, up to
the last complete line, cuts what it read into blocks (store/blocks.py) and writes
their summaries in the same transaction that moves the position, so every line is
summarized exactly once whoever runs it (the collector's indexer process, or a CLI
command run with no collector). A file's last block is **open** while it is shorter
than ``BLOCK_BYTES``: the next round summarizes it again from its start with what the
file gained, and replaces its row. Deleting the database and calling ``catch_up``
rebuilds it. WAL mode lets readers query while it writes.

Positions are kept per segment key (store/segments.py), not per file name: a rotated
file keeps its key, so it is finished under its new name and the new ``app.log`` is
read from its start. Each block row says which segment it summarizes (``log_id``);
when retention deletes a file, the next ``catch_up`` deletes its blocks too, so the
index shows what is on disk. An index of another schema version is dropped and
rebuilt from the files.

The tables are in store/index_schema.py; the queries ``logs`` and ``ls`` make, in
store/index_query.py.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from umonitor.errors import UsageError
from umonitor.store import blocks, layout
from umonitor.store.index_schema import I64_END, prepare
from umonitor.store.logfile import BootLine
from umonitor.store.names import is_instance_name
from umonitor.store.segments import Segment, list_segments, open_segment, read_lines

CHUNK = 4 << 20


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


def _boot_id(conn: sqlite3.Connection, instance_id: int, boot: str) -> int:
    conn.execute(
        "INSERT OR IGNORE INTO boots(instance_id, boot) VALUES (?, ?)", (instance_id, boot)
    )
    row = conn.execute(
        "SELECT id FROM boots WHERE instance_id = ? AND boot = ?", (instance_id, boot)
    ).fetchone()
    return int(row[0])


@dataclass(frozen=True, slots=True)
class _Position:
    id: int
    offset: int  # where the open block starts (everything before is in closed blocks)
    boot: str  # the boot in force there (``context`` is the one where ``covered`` ends)


def _position(conn: sqlite3.Connection, instance_id: int, seg: Segment) -> _Position:
    """The position row of ``seg``; a row left by another file of that key is forgotten."""
    row = conn.execute(
        "SELECT id, head, offset, context FROM positions WHERE instance_id = ? AND file = ?",
        (instance_id, seg.key),
    ).fetchone()
    if row is not None and bytes(row[1]) != seg.head:
        forget_file(conn, int(row[0]))
        row = None
    if row is None:
        cur = conn.execute(
            "INSERT INTO positions(instance_id, file, head, offset) VALUES (?, ?, ?, 0)",
            (instance_id, seg.key, seg.head),
        )
        return _Position(int(cur.lastrowid or 0), 0, "")
    log_id, offset = int(row[0]), int(row[2])
    open_block = conn.execute(
        "SELECT boot FROM blocks WHERE log_id = ? AND offset = ?", (log_id, offset)
    ).fetchone()
    return _Position(log_id, offset, str(open_block[0] if open_block else row[3]))


def pack_grams(bits: bytes | bytearray) -> bytes:
    """A block's grams as kept: the list of those set (``blocks.gram_list``) when it is
    shorter than the bitmap, as for most blocks of ordinary logs; else the bitmap.
    Either is tested without unpacking it (``blocks.kept_holds``)."""
    listed = blocks.gram_list(bits)
    return listed if len(listed) < blocks.GRAM_BYTES else bytes(bits)


def _save_blocks(
    conn: sqlite3.Connection, instance_id: int, log_id: int, found: list[blocks.Block]
) -> None:
    for block in found:
        c = block.counters
        min_ns, max_ns = block.time_range
        cur = conn.execute(
            "INSERT INTO blocks(instance_id, log_id, offset, length, lines, records, min_ns, "
            "max_ns, severities, origins, boot, bad, c0, c1, c2, c3, c4, c5, c6, c7) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                instance_id,
                log_id,
                block.offset,
                block.length,
                c[blocks.LINES],
                c[blocks.RECORDS],
                min_ns,
                max_ns,
                c[blocks.SEVERITIES],
                c[blocks.ORIGINS],
                block.boot,
                block.bad,
                *c[blocks.COUNTS :],
            ),
        )
        conn.execute(
            "INSERT INTO grams(block_id, bits) VALUES (?, ?)",
            (cur.lastrowid, pack_grams(block.grams)),
        )


def _drop_blocks(conn: sqlite3.Connection, log_id: int, from_offset: int = 0) -> None:
    where = "log_id = ? AND offset >= ?"
    conn.execute(
        f"DELETE FROM grams WHERE block_id IN (SELECT id FROM blocks WHERE {where})",
        (log_id, from_offset),
    )
    conn.execute(f"DELETE FROM blocks WHERE {where}", (log_id, from_offset))


def _catch_up_file(
    conn: sqlite3.Connection, name: str, instance_id: int, seg: Segment, until: int | None
) -> tuple[int, int]:
    """Summarize what segment ``seg`` gained, up to offset ``until`` (None: its end).

    Returns (bytes newly covered, the file's size). Does nothing if ``name`` is no
    longer ``instance_id`` (``reindex`` dropped or rebuilt it since the listing): the
    next round lists it again.
    """
    row = conn.execute("SELECT id FROM instances WHERE name = ?", (name,)).fetchone()
    if row is None or int(row[0]) != instance_id:
        return 0, 0
    src = open_segment(seg)
    if src is None:
        return 0, 0  # deleted meanwhile: forgotten on the next round
    with src:
        size = os.fstat(src.fileno()).st_size
        pos = _position(conn, instance_id, seg)
        covered = int(
            conn.execute("SELECT covered FROM positions WHERE id = ?", (pos.id,)).fetchone()[0]
        )
        stop = size if until is None else min(size, until)
        if stop <= covered:
            return 0, size
        data = read_lines(src.fileno(), pos.offset, CHUNK, stop, covered - pos.offset)
    end = len(data)
    if not end:
        return 0, size  # no complete line past what is covered
    found = blocks.summarize(data, 0, end, pos.boot, blocks.BLOCK_BYTES)
    for block in found.blocks:
        block.offset += pos.offset
    last = found.blocks[-1]
    closed = last.length >= blocks.BLOCK_BYTES
    _drop_blocks(conn, pos.id, pos.offset)  # the open block, summarized again here
    _save_blocks(conn, instance_id, pos.id, found.blocks)
    for context in found.context:
        boot_id = _boot_id(conn, instance_id, context.boot)
        if isinstance(context, BootLine):
            if context.peer or context.library:
                conn.execute(
                    "UPDATE boots SET peer = ?, library = ? WHERE id = ?",
                    (context.peer, context.library, boot_id),
                )
                if seg.family == layout.APP_LOG:  # the guest library's own connection
                    conn.execute(
                        "UPDATE instances SET peer = ?, library = ? WHERE id = ?",
                        (context.peer, context.library, instance_id),
                    )
        else:
            conn.execute(
                "UPDATE boots SET dropped = max(dropped, ?) WHERE id = ?",
                (min(context.count, I64_END - 1), boot_id),  # a count no guest can reach
            )
    conn.execute(
        "UPDATE positions SET offset = ?, context = ?, covered = ? WHERE id = ?",
        (
            pos.offset + end if closed else last.offset,
            found.boot,  # in force where the covered bytes end
            pos.offset + end,
            pos.id,
        ),
    )
    return pos.offset + end - covered, size


def forget_file(conn: sqlite3.Connection, log_id: int) -> None:
    """Delete what the index holds of one log file (a deleted segment)."""
    _drop_blocks(conn, log_id)
    conn.execute("DELETE FROM positions WHERE id = ?", (log_id,))


def forget_instance(conn: sqlite3.Connection, name: str) -> None:
    """Delete everything the index holds of instance ``name`` (inside a transaction)."""
    row = conn.execute("SELECT id FROM instances WHERE name = ?", (name,)).fetchone()
    if row is None:
        return
    instance_id = int(row[0])
    conn.execute(
        "DELETE FROM grams WHERE block_id IN (SELECT id FROM blocks WHERE instance_id = ?)",
        (instance_id,),
    )
    for table in ("blocks", "positions", "boots"):
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
    indexed: dict[str, tuple[bytes, int]]  # key -> (first line, bytes covered)


def _positions(conn: sqlite3.Connection, instance_id: int) -> dict[str, tuple[bytes, int]]:
    return {
        str(key): (bytes(head), int(offset))
        for key, head, offset in conn.execute(
            "SELECT file, head, covered FROM positions WHERE instance_id = ?", (instance_id,)
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
                forget_file(conn, int(log_id))
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
    """Index what the log files gained since the last call; returns the bytes it covered.

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
                    consumed, size = _catch_up_file(conn, name, listing.instance_id, seg, until)
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                added += consumed
                until = size if until is None else until
                if not consumed:
                    break
    return added
