"""Queries over the block index: the instances ``umonitor ls`` lists, the records ``logs`` shows.

How this works (docs/block-index.md). A query lists the instance's log files, reads
the summaries of their blocks from the index, keeps the blocks that may hold a
match (time range, severity and origin bits, and for ``--grep`` every gram of the
text, store/blocks.py), and scans only those, plus each file's **tail**: the bytes
past what the index covers (little while an indexer keeps up). Records are merged by
(time, instance, file, position): newest first for ``-n N``, stopping as soon as no
block left can hold a newer match, oldest first otherwise, holding back only the
records a block not yet read could precede. So a query reads what it returns and
the blocks around it, not the instance.

A query catches the index up itself only when the tails are larger than
``TAIL_SCAN`` (no indexer running). ``ls`` reads the summaries' counts as they are
and scans small tails itself; it never writes, and it says how many bytes it did not
read (``InstanceSummary.behind``) when the tails are too large to read quickly.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from umonitor.errors import LineError
from umonitor.records import StoredRecord
from umonitor.store import blocks, layout
from umonitor.store.index import catch_up, instance_names, unpack_grams
from umonitor.store.logfile import BootLine, RecordLine, parse_line
from umonitor.store.segments import Segment, list_segments, open_segment

TAIL_SCAN = 16 << 20  # bytes of tails a reader scans itself rather than wait for the index
_ORIGIN_MASK = {o.value: bit for o, bit in blocks.ORIGIN_BITS.items()}


@dataclass(frozen=True, slots=True)
class Query:
    """What ``umonitor logs`` asks for. ``max_severity`` 4 means warning and worse."""

    names: Sequence[str] = ()
    since_ns: int | None = None
    until_ns: int | None = None
    max_severity: int = 7
    grep: str | None = None
    origins: Sequence[str] = ()

    def matches(self, parsed: RecordLine) -> bool:
        """The exact test, on a parsed line (the summaries and the scan only narrow)."""
        time_ns = blocks.clamp64(parsed.time_ns)
        return (
            (self.since_ns is None or time_ns >= self.since_ns)
            and (self.until_ns is None or time_ns <= self.until_ns)
            and parsed.record.severity <= self.max_severity
            and (not self.origins or parsed.origin.value in self.origins)
            and (not self.grep or blocks.fold(self.grep) in blocks.fold(parsed.record.message))
        )


@dataclass(frozen=True, slots=True)
class Row:
    stored: StoredRecord
    boot: str


@dataclass(slots=True)
class _File:
    """One log file of an instance as a query sees it."""

    instance: str
    rank: int  # its place among every file the query reads (ties in time go by it)
    segment: Segment
    covered: int  # bytes the index summarizes (0: none, or a position of another file)
    boot: str  # the boot in force at ``covered``
    log_id: int | None
    follow_from: int = 0  # where a query stopped reading it (its tail's end), and the
    follow_boot: str = ""  # boot in force there: where ``logs -f`` goes on


@dataclass(slots=True)
class _Span:
    """A block, or a file's tail: bytes to scan, with what the summary says of them."""

    file: _File
    offset: int
    length: int
    min_ns: int
    max_ns: int
    boot: str
    block_id: int | None = None  # None: a tail (no summary)
    irregular: bool = False  # holds a message its grams may not tell (blocks.irregular)


class _Reader:
    """Reads spans of a query's files, each file opened once."""

    def __init__(self) -> None:
        self._open: dict[int, int] = {}

    def read(self, span: _Span) -> bytes:
        fd = self._open.get(span.file.rank)
        if fd is None:
            src = open_segment(span.file.segment)
            if src is None:
                return b""  # deleted since the listing (retention): nothing to show
            fd = os.dup(src.fileno())
            src.close()
            self._open[span.file.rank] = fd
        data = os.pread(fd, span.length, span.offset)
        return data[: data.rfind(b"\n") + 1]

    def close(self) -> None:
        for fd in self._open.values():
            os.close(fd)
        self._open.clear()


def _files(conn: sqlite3.Connection, root: Path, names: Sequence[str]) -> list[_File]:
    out: list[_File] = []
    for name in names:
        row = conn.execute("SELECT id FROM instances WHERE name = ?", (name,)).fetchone()
        known: dict[str, tuple[bytes, int, str, int]] = {}
        if row is not None:
            for key, head, covered, context, log_id in conn.execute(
                "SELECT file, head, covered, context, id FROM positions WHERE instance_id = ?",
                (int(row[0]),),
            ):
                known[str(key)] = (bytes(head), int(covered), str(context), int(log_id))
        for seg in list_segments(layout.instance_dir(root, name)):
            head, covered, context, log_id = known.get(seg.key, (b"", 0, "", 0))
            if head != seg.head:
                covered, context, log_id = 0, "", 0
            out.append(
                _File(name, len(out), seg, covered, context, log_id or None, covered, context)
            )
    return out


def tail_bytes(files: Sequence[_File]) -> int:
    return sum(max(0, f.segment.size - f.covered) for f in files)


def _tails(files: Sequence[_File]) -> list[_Span]:
    return [
        _Span(f, f.covered, f.segment.size - f.covered, blocks.I64_MIN, blocks.I64_MAX, f.boot)
        for f in files
        if f.segment.size > f.covered
    ]


def _block_spans(
    conn: sqlite3.Connection, files: Sequence[_File], query: Query, newest_first: bool
) -> Iterator[_Span]:
    """The blocks that may hold a match (grams aside), fetched as they are needed.

    Newest first: by the newest time they hold, then by file and place, descending, so
    that every later block's records order before the first position past this one.
    Oldest first: by the oldest time they hold.
    """
    by_log = {f.log_id: f for f in files if f.log_id is not None}
    instances = sorted({f.instance for f in by_log.values()})
    if not by_log:
        return
    origin_mask = sum(_ORIGIN_MASK[o] for o in query.origins) if query.origins else 7
    clauses = [
        "instance_id IN (SELECT id FROM instances WHERE name IN "
        f"({', '.join('?' * len(instances))}))",
        "records > 0",
        "severities & ?",
        "origins & ?",
    ]
    args: list[object] = [*instances, (2 << query.max_severity) - 1, origin_mask]
    if query.since_ns is not None:
        clauses.append("max_ns >= ?")
        args.append(query.since_ns)
    if query.until_ns is not None:
        clauses.append("min_ns <= ?")
        args.append(query.until_ns)
    order = "max_ns DESC" if newest_first else "min_ns"
    cursor = conn.execute(
        "SELECT id, log_id, offset, length, min_ns, max_ns, boot, origins FROM blocks "
        f"WHERE {' AND '.join(clauses)} ORDER BY {order}",
        args,
    )
    tied: list[_Span] = []
    for block_id, log_id, offset, length, min_ns, max_ns, boot, origins in cursor:
        file = by_log.get(log_id)
        if file is None or offset + length > file.covered:
            continue  # a file not listed, or summarized past the size listed
        irregular = bool(origins & blocks.IRREGULAR)
        span = _Span(file, offset, length, min_ns, max_ns, boot, block_id, irregular)
        if not newest_first:
            yield span
            continue
        if tied and max_ns != tied[0].max_ns:
            yield from sorted(tied, key=_place, reverse=True)
            tied.clear()
        tied.append(span)
    yield from sorted(tied, key=_place, reverse=True)


def _place(span: _Span) -> tuple[int, int]:
    return span.file.rank, span.offset


def _batches(spans: Iterator[_Span], size: int) -> Iterator[list[_Span]]:
    batch: list[_Span] = []
    for span in spans:
        batch.append(span)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class _Grams:
    """Whether a block may hold ``--grep``'s text, by its grams (a batch at a time)."""

    def __init__(self, conn: sqlite3.Connection, grep: str | None):
        self._conn = conn
        self._wanted = blocks.needle_grams(grep) if grep else []
        self._bits: dict[int, bytes] = {}

    def fetch(self, batch: Sequence[_Span]) -> None:
        ids = [s.block_id for s in batch if s.block_id is not None]
        if not self._wanted or not ids:
            return
        self._bits = {
            int(block_id): unpack_grams(bytes(bits))
            for block_id, bits in self._conn.execute(
                f"SELECT block_id, bits FROM grams WHERE block_id IN ({', '.join('?' * len(ids))})",
                ids,
            )
        }

    def may_hold(self, span: _Span) -> bool:
        if span.block_id is None or not self._wanted or span.irregular:
            return True
        bits = self._bits.get(span.block_id)
        return bits is None or blocks.has_grams(bits, self._wanted)


_Key = tuple[int, int, int]  # (time, file rank, position)


class _Scan:
    """The candidate lines of one span, read and narrowed by the line scan."""

    def __init__(self, span: _Span, data: bytes, query: Query) -> None:
        self.span = span
        self.data = data
        self.query = query
        origin_mask = sum(_ORIGIN_MASK[o] for o in query.origins) if query.origins else 7
        self.lines = blocks.scan_lines(
            data,
            0,
            len(data),
            blocks.I64_MIN if query.since_ns is None else query.since_ns,
            blocks.I64_MAX if query.until_ns is None else query.until_ns,
            query.max_severity,
            origin_mask,
            blocks.search_key(query.grep) if query.grep else b"",
        )

    def _line(self, start: int) -> bytes:
        return self.data[start : self.data.index(b"\n", start)]

    def candidates(self) -> Iterator[tuple[_Key | None, int, str]]:
        """(key or None for a line to parse, start, boot in force) in file order.

        Context lines are taken here (they set the boot) and not yielded.
        """
        boot = self.span.boot
        rank, base = self.span.file.rank, self.span.offset
        for start, time_ns in self.lines:
            if time_ns is None and self.data[start] == ord("#"):
                try:
                    parsed = parse_line(self._line(start).decode("utf-8", "replace"))
                except LineError:
                    continue
                if isinstance(parsed, BootLine):
                    boot = parsed.boot
                continue
            yield (None if time_ns is None else (time_ns, rank, base + start)), start, boot
        if self.span.block_id is None:
            self.span.file.follow_from = base + len(self.data)
            self.span.file.follow_boot = boot

    def row(self, start: int, boot: str) -> tuple[_Key, Row] | None:
        """The record at ``start`` if it matches exactly."""
        try:
            parsed = parse_line(self._line(start).decode("utf-8", "replace"))
        except LineError:
            return None
        if not isinstance(parsed, RecordLine) or not self.query.matches(parsed):
            return None
        key = (blocks.clamp64(parsed.time_ns), self.span.file.rank, self.span.offset + start)
        stored = StoredRecord(self.span.file.instance, parsed.time_ns, parsed.origin, parsed.record)
        return key, Row(stored, boot)


@dataclass(slots=True)
class Plan:
    """What a query reads: the files (with where their tails end, once read) and tails."""

    files: list[_File]
    tails: list[_Span]


def plan(conn: sqlite3.Connection, root: Path, names: Sequence[str]) -> Plan:
    files = _files(conn, root, names)
    return Plan(files, _tails(files))


def select(
    conn: sqlite3.Connection, root: Path, query: Query, *, last: int | None = None
) -> list[Row]:
    """Matching records in time order (``last``: only the newest N)."""
    return list(select_then_follow(conn, root, query, last=last)[0])


def select_then_follow(
    conn: sqlite3.Connection, root: Path, query: Query, *, last: int | None = None
) -> tuple[Iterator[Row], Follow]:
    """The matching records as they are read, and what follows the files from where
    that read them (use it once the records are all taken)."""
    names = list(query.names) or instance_names(root)
    if tail_bytes(_files(conn, root, names)) > TAIL_SCAN:
        with contextlib.suppress(sqlite3.Error):  # a read-only index: scan the tails
            catch_up(conn, root, names)
    follow = Follow(root, query)

    def rows() -> Iterator[Row]:
        reader = _Reader()
        conn.execute("BEGIN")  # one snapshot: positions and blocks agree
        try:
            planned = plan(conn, root, names)
            follow.start(planned.files)
            spans = itertools.chain(
                planned.tails,
                _block_spans(conn, planned.files, query, newest_first=last is not None),
            )
            grams = _Grams(conn, query.grep)
            if last is not None:
                yield from _newest(spans, grams, query, last, reader)
            else:
                yield from _oldest(spans, grams, query, reader)
        finally:
            conn.execute("COMMIT")
            reader.close()

    return rows(), follow


BATCH = 256  # blocks whose grams are fetched at once


def _newest(
    spans: Iterator[_Span], grams: _Grams, query: Query, last: int, reader: _Reader
) -> list[Row]:
    best: list[tuple[_Key, Row]] = []  # a min-heap of the newest matches so far
    for batch in _batches(spans, BATCH):
        grams.fetch(batch)
        for span in batch:
            if span.block_id is not None and (
                last <= 0
                or (
                    len(best) == last
                    and (span.max_ns, span.file.rank, span.offset + span.length) <= best[0][0]
                )
            ):
                return _in_order(best)  # this block and every later one hold older ones
            if not grams.may_hold(span):
                continue
            scan = _Scan(span, reader.read(span), query)
            for key, start, boot in reversed(list(scan.candidates())):
                if last <= 0 or (key is not None and len(best) == last and key <= best[0][0]):
                    continue
                found = scan.row(start, boot)
                if found is None:
                    continue
                if len(best) < last:
                    heapq.heappush(best, found)
                elif found[0] > best[0][0]:
                    heapq.heapreplace(best, found)
    return _in_order(best)


def _in_order(found: list[tuple[_Key, Row]]) -> list[Row]:
    return [row for _, row in sorted(found, key=lambda kr: kr[0])]


def _oldest(spans: Iterator[_Span], grams: _Grams, query: Query, reader: _Reader) -> Iterator[Row]:
    pending: list[tuple[_Key, Row]] = []
    for batch in _batches(spans, BATCH):
        grams.fetch(batch)
        for span in batch:
            while pending and pending[0][0][0] < span.min_ns:
                yield heapq.heappop(pending)[1]
            if not grams.may_hold(span):
                continue
            scan = _Scan(span, reader.read(span), query)
            for _, start, boot in scan.candidates():
                found = scan.row(start, boot)
                if found is not None:
                    heapq.heappush(pending, found)
    while pending:
        yield heapq.heappop(pending)[1]


class Follow:
    """``logs -f``: the records appended to the files since a query, poll by poll.

    It follows the files themselves, not the index: a record is shown as soon as its
    line is on disk (before its ACK). Files are known by key and first line, so a
    rotated file is finished under its new name and a new one read from its start.
    """

    CHUNK = 4 << 20  # bytes read from one file per poll at most

    def __init__(self, root: Path, query: Query) -> None:
        self._root = root
        self._query = query
        self._files: dict[tuple[str, str], _File] = {}
        self._ranks = 0

    def start(self, files: Sequence[_File]) -> None:
        """Go on from where a query left these files (``_File.follow_from``)."""
        self._files = {(f.instance, f.segment.key): f for f in files}
        self._ranks = len(files)

    def poll(self) -> list[Row]:
        """The matching records appended since the last poll, in time order."""
        found: list[tuple[_Key, Row]] = []
        seen: set[tuple[str, str]] = set()
        for name in list(self._query.names) or instance_names(self._root):
            for seg in list_segments(layout.instance_dir(self._root, name)):
                seen.add((name, seg.key))
                file = self._files.get((name, seg.key))
                if file is None or file.segment.head != seg.head:
                    file = _File(name, self._ranks, seg, 0, "", None)
                    self._ranks += 1
                    self._files[name, seg.key] = file
                file.segment = seg
                if seg.size <= file.follow_from:
                    continue
                span = _Span(
                    file,
                    file.follow_from,
                    min(self.CHUNK, seg.size - file.follow_from),
                    blocks.I64_MIN,
                    blocks.I64_MAX,
                    file.follow_boot,
                )
                reader = _Reader()
                try:
                    data = reader.read(span)
                finally:
                    reader.close()
                scan = _Scan(span, data, self._query)
                for _, start, boot in scan.candidates():
                    row = scan.row(start, boot)
                    if row is not None:
                        found.append(row)
        for gone in set(self._files) - seen:
            del self._files[gone]
        found.sort(key=lambda kr: kr[0])
        return [row for _, row in found]


@dataclass(frozen=True, slots=True)
class InstanceSummary:
    name: str
    first_ns: int | None
    last_ns: int | None
    peer: str
    library: str
    counts: tuple[int, ...]
    dropped: int
    boots: int
    behind: int  # bytes of its files neither summarized nor read for this answer


def instances(conn: sqlite3.Connection, root: Path) -> list[InstanceSummary]:
    """Every instance with its counts: the summaries', plus what small tails hold."""
    conn.execute("BEGIN")  # one snapshot: positions and blocks agree
    try:
        known = {
            str(name): (int(iid), str(peer), str(library))
            for iid, name, peer, library in conn.execute(
                "SELECT id, name, peer, library FROM instances"
            )
        }
        totals = {
            int(row[0]): row[1:]
            for row in conn.execute(
                "SELECT instance_id, min(CASE WHEN records > 0 THEN min_ns END), "
                "max(CASE WHEN records > 0 THEN max_ns END), "
                "sum(c0), sum(c1), sum(c2), sum(c3), sum(c4), sum(c5), sum(c6), sum(c7) "
                "FROM blocks GROUP BY instance_id"
            )
        }
        boots: dict[int, dict[str, int]] = {}
        for iid, boot, dropped in conn.execute("SELECT instance_id, boot, dropped FROM boots"):
            boots.setdefault(int(iid), {})[str(boot)] = int(dropped)
        names = sorted(set(known) | set(instance_names(root)))
        files = _files(conn, root, names)
    finally:
        conn.execute("COMMIT")
    scan = tail_bytes(files) <= TAIL_SCAN
    out = []
    for name in names:
        iid, peer, library = known.get(name, (0, "", ""))
        first, last, *counted = totals.get(iid, (None, None, *([0] * 8)))
        counts = [int(n or 0) for n in counted]
        dropped = dict(boots.get(iid, {}))
        behind = 0
        for f in files:
            if f.instance != name or f.segment.size <= f.covered:
                continue
            if not scan:
                behind += f.segment.size - f.covered
                continue
            span = _Span(f, f.covered, f.segment.size - f.covered, 0, 0, f.boot)
            reader = _Reader()
            try:
                data = reader.read(span)
            finally:
                reader.close()
            tail = blocks.summarize(data, 0, len(data), f.boot, len(data) + 1)
            for block in tail.blocks:
                for sev in range(8):
                    counts[sev] += block.counters[blocks.COUNTS + sev]
                if block.records:
                    lo, hi = block.time_range
                    first = lo if first is None else min(first, lo)
                    last = hi if last is None else max(last, hi)
            for context in tail.context:
                before = dropped.get(context.boot, 0)
                if isinstance(context, BootLine):
                    dropped[context.boot] = before
                    if (context.peer or context.library) and f.segment.family == layout.APP_LOG:
                        peer, library = context.peer, context.library
                else:
                    dropped[context.boot] = max(before, context.count)
        out.append(
            InstanceSummary(
                name,
                first,
                last,
                peer,
                library,
                tuple(counts),
                sum(dropped.values()),
                len(dropped),
                behind,
            )
        )
    return out
