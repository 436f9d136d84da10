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

import collections
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
from umonitor.store.index import catch_up, instance_names
from umonitor.store.logfile import BootLine, RecordLine, parse_line
from umonitor.store.segments import Segment, list_segments, open_segment, read_lines

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
    block_id: int | None = None  # None: a piece of a tail, summarized as it was read
    irregular: bool = False  # holds a message its grams may not tell (blocks.irregular)
    grams: bytes | None = None  # a tail piece's


class _Reader:
    """Reads spans of a query's files, each file opened once (and closed when done)."""

    def __init__(self) -> None:
        self._open: dict[int, int | None] = {}

    def fd(self, file: _File) -> int | None:
        """The file's descriptor; None when it is gone (retention deleted it)."""
        if file.rank not in self._open:
            src = open_segment(file.segment)
            self._open[file.rank] = None if src is None else os.dup(src.fileno())
            if src is not None:
                src.close()
        return self._open[file.rank]

    def read(self, span: _Span) -> bytes:
        fd = self.fd(span.file)
        data = b"" if fd is None else os.pread(fd, span.length, span.offset)
        return data[: data.rfind(b"\n") + 1]  # whole lines, whatever became of the file

    def done(self, file: _File) -> None:
        fd = self._open.pop(file.rank, None)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        for fd in self._open.values():
            if fd is not None:
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


TAIL_PIECE = 4 << 20  # bytes of a tail read and summarized at once


def _tail_pieces(file: _File, reader: _Reader) -> Iterator[tuple[_Span, blocks.Summarized]]:
    """The file's tail in pieces of whole lines, each summarized as it is read (so that
    a query merges them like blocks, in bounded memory); sets where ``follow`` goes on."""
    offset, boot, size = file.covered, file.boot, file.segment.size
    fd = reader.fd(file) if size > offset else None
    while fd is not None and offset < size:
        data = read_lines(fd, offset, TAIL_PIECE, size)
        if not data:
            break
        found = blocks.summarize(data, 0, len(data), boot, len(data) + 1)
        lo, hi = found.blocks[0].time_range
        span = _Span(file, offset, len(data), lo, hi, boot, grams=bytes(found.blocks[0].grams))
        span.irregular = bool(found.blocks[0].counters[blocks.ORIGINS] & blocks.IRREGULAR)
        yield span, found
        offset, boot = offset + len(data), found.boot
    file.follow_from, file.follow_boot = max(offset, file.covered), boot


def _tails(files: Sequence[_File], reader: _Reader) -> list[_Span]:
    """The tail pieces that hold records (what they carry of boots is in their spans)."""
    return [
        span for f in files for span, found in _tail_pieces(f, reader) if found.blocks[0].records
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
            int(block_id): bytes(bits)
            for block_id, bits in self._conn.execute(
                f"SELECT block_id, bits FROM grams WHERE block_id IN ({', '.join('?' * len(ids))})",
                ids,
            )
        }

    def may_hold(self, span: _Span) -> bool:
        if not self._wanted or span.irregular:
            return True
        if span.block_id is None:
            return span.grams is None or blocks.has_grams(span.grams, self._wanted)
        kept = self._bits.get(span.block_id)
        return kept is None or blocks.kept_holds(kept, self._wanted)  # None: replaced since


_Key = tuple[int, int, int]  # (time, file rank, position)


class _Scan:
    """The candidate lines of one span, read and narrowed by the line scan."""

    def __init__(self, span: _Span, data: bytes, query: Query) -> None:
        self.span = span
        self.data = data
        self.query = query
        self.end_boot = span.boot
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

        Context lines are taken here (they set the boot, ``end_boot`` once all are
        taken) and not yielded.
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
        self.end_boot = boot

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


def select(
    conn: sqlite3.Connection, root: Path, query: Query, *, last: int | None = None
) -> list[Row]:
    """Matching records in time order (``last``: only the newest N)."""
    return list(select_then_follow(conn, root, query, last=last)[0])


def select_then_follow(
    conn: sqlite3.Connection, root: Path, query: Query, *, last: int | None = None
) -> tuple[Iterator[Row], Follow]:
    """The matching records (as they are read), and what follows the files from where
    the query read them.

    The summaries are read in one snapshot (positions and blocks agree): newest first,
    as the merge needs them, which is a few; oldest first, all of them before the
    first record, so that no snapshot stays open while the records stream out (it
    would keep SQLite from reusing its log).
    """
    names = list(query.names) or instance_names(root)
    if tail_bytes(_files(conn, root, names)) > TAIL_SCAN:
        with contextlib.suppress(sqlite3.Error):  # a read-only index: scan the tails
            catch_up(conn, root, names)
    follow = Follow(root, query)
    reader = _Reader()
    grams = _Grams(conn, query.grep)
    conn.execute("BEGIN")
    try:
        files = _files(conn, root, names)
        tails = _tails(files, reader)
        follow.start(files)
        if last is not None:
            spans = itertools.chain(tails, _block_spans(conn, files, query, newest_first=True))
            rows: Iterator[Row] = iter(_newest(spans, grams, query, last, reader))
        else:
            in_order = list(_block_spans(conn, files, query, newest_first=False))
            merged = heapq.merge(sorted(tails, key=_oldest_in), in_order, key=_oldest_in)
            rows = _oldest(list(merged), grams, query, reader)
    except BaseException:
        reader.close()
        raise
    finally:
        conn.execute("COMMIT")
    return _closing(rows, reader), follow


def _closing(rows: Iterator[Row], reader: _Reader) -> Iterator[Row]:
    try:
        yield from rows
    finally:
        reader.close()


def _oldest_in(span: _Span) -> int:
    return span.min_ns


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


def _oldest(spans: Sequence[_Span], grams: _Grams, query: Query, reader: _Reader) -> Iterator[Row]:
    left = collections.Counter(span.file.rank for span in spans)  # spans left per file
    pending: list[tuple[_Key, Row]] = []
    for batch in _batches(iter(spans), BATCH):
        grams.fetch(batch)
        for span in batch:
            while pending and pending[0][0][0] < span.min_ns:
                yield heapq.heappop(pending)[1]
            if grams.may_hold(span):
                scan = _Scan(span, reader.read(span), query)
                for _, start, boot in scan.candidates():
                    found = scan.row(start, boot)
                    if found is not None:
                        heapq.heappush(pending, found)
            left[span.file.rank] -= 1
            if not left[span.file.rank]:
                reader.done(span.file)
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
                reader = _Reader()
                try:
                    fd = reader.fd(file)
                    data = (
                        b""
                        if fd is None
                        else read_lines(fd, file.follow_from, self.CHUNK, seg.size)
                    )
                finally:
                    reader.close()
                span = _Span(
                    file,
                    file.follow_from,
                    len(data),
                    blocks.I64_MIN,
                    blocks.I64_MAX,
                    file.follow_boot,
                )
                scan = _Scan(span, data, self._query)
                for _, start, boot in scan.candidates():
                    row = scan.row(start, boot)
                    if row is not None:
                        found.append(row)
                file.follow_from += len(data)
                file.follow_boot = scan.end_boot
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


class _Tally:
    """An instance's record counts and time range, summed from blocks and tails."""

    def __init__(self) -> None:
        self.counts = [0] * 8
        self.first: int | None = None
        self.last: int | None = None

    def add(self, lo: int | None, hi: int | None, per_severity: Sequence[int]) -> None:
        for sev in range(8):
            self.counts[sev] += int(per_severity[sev] or 0)
        if lo is not None and hi is not None:
            self.first = lo if self.first is None else min(self.first, lo)
            self.last = hi if self.last is None else max(self.last, hi)


def instances(conn: sqlite3.Connection, root: Path) -> list[InstanceSummary]:
    """Every instance with its counts: its files' summaries, plus what small tails hold."""
    conn.execute("BEGIN")  # one snapshot: positions and blocks agree
    try:
        known = {
            str(name): (str(peer), str(library))
            for name, peer, library in conn.execute("SELECT name, peer, library FROM instances")
        }
        totals = {
            int(row[0]): row[1:]
            for row in conn.execute(
                "SELECT log_id, min(CASE WHEN records > 0 THEN min_ns END), "
                "max(CASE WHEN records > 0 THEN max_ns END), "
                "sum(c0), sum(c1), sum(c2), sum(c3), sum(c4), sum(c5), sum(c6), sum(c7) "
                "FROM blocks GROUP BY log_id"
            )
        }
        boots: dict[str, dict[str, int]] = {}
        for name, boot, dropped in conn.execute(
            "SELECT i.name, b.boot, b.dropped FROM boots b JOIN instances i ON i.id = b.instance_id"
        ):
            boots.setdefault(str(name), {})[str(boot)] = int(dropped)
        names = sorted(set(known) | set(instance_names(root)))
        files = _files(conn, root, names)
    finally:
        conn.execute("COMMIT")
    scan = tail_bytes(files) <= TAIL_SCAN
    out = []
    reader = _Reader()
    try:
        for name in names:
            peer, library = known.get(name, ("", ""))
            tally = _Tally()
            dropped = dict(boots.get(name, {}))
            behind = 0
            for f in files:
                if f.instance != name:
                    continue
                if f.log_id is not None and f.log_id in totals:  # the blocks of files listed
                    lo, hi, *per_severity = totals[f.log_id]
                    tally.add(lo, hi, per_severity)
                if f.segment.size <= f.covered:
                    continue
                if not scan:
                    behind += f.segment.size - f.covered
                    continue
                for _, tail in _tail_pieces(f, reader):
                    block = tail.blocks[0]
                    if block.records:
                        tally.add(*block.time_range, block.counters[blocks.COUNTS :])
                    for context in tail.context:
                        before = dropped.get(context.boot, 0)
                        if not isinstance(context, BootLine):
                            dropped[context.boot] = max(before, context.count)
                            continue
                        dropped[context.boot] = before
                        if (context.peer or context.library) and f.segment.family == layout.APP_LOG:
                            peer, library = context.peer, context.library
                reader.done(f)
            out.append(
                InstanceSummary(
                    name,
                    tally.first,
                    tally.last,
                    peer,
                    library,
                    tuple(tally.counts),
                    sum(dropped.values()),
                    len(dropped),
                    behind,
                )
            )
    finally:
        reader.close()
    return out
