"""Following the store's log files for an exporter, across rotation and retention.

How this works: a ``Follower`` keeps, per log file, a ``Position``: the offset up to
which the downstream has everything, the boot the line there belongs to, and the
file's inode. ``next_batch`` reads record lines past that offset from one log at a
time (round robin over the logs, the oldest segment of a log first) and returns
them as a ``Batch`` with where each line ends; the exporter (runner.py) moves the
position with ``commit`` only past what its sink says arrived. A file replaced or
cut is read again from its start; a file deleted by retention is forgotten, with a
note of what was not sent; a file more than ``max_backlog`` bytes ahead is skipped
forward, and the records skipped are counted as dropped.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from umonitor.errors import LineError
from umonitor.export.base import ExportItem
from umonitor.export.config import ExportSpec
from umonitor.records import StoredRecord
from umonitor.store import layout
from umonitor.store.index import instance_names
from umonitor.store.logfile import BootLine, RecordLine, parse_line
from umonitor.store.segments import Segment, list_segments, open_segment

CHUNK = 1 << 20


@dataclass(slots=True)
class Position:
    """How far one log file has been delivered."""

    offset: int = 0
    boot: str = ""
    inode: int = 0


@dataclass(slots=True)
class Batch:
    """Record lines read from one file, and where each ends."""

    key: str
    items: list[ExportItem]
    ends: list[tuple[int, str]]  # after item i: (offset, boot)
    done: tuple[int, str]  # after every line read, records or not


@dataclass
class Follower:
    """Reads what the store's files gained past an exporter's positions.

    Positions are kept per segment key (``NAME/app.log.8``, see store/segments.py),
    which a file keeps when it is rotated: a rotated file is finished under its new
    name before the new live file of that log is read from its start. A key whose
    file is gone (deleted by retention) is forgotten.
    """

    root: Path
    spec: ExportSpec
    positions: dict[str, Position] = field(default_factory=dict)
    dropped: int = 0
    notes: list[str] = field(default_factory=list)
    _order: list[str] = field(default_factory=list)
    _turn: int = 0
    _sizes: dict[str, int] = field(default_factory=dict)

    def streams(self) -> list[list[tuple[str, Segment]]]:
        """Per instance and log file, its segments oldest first, with their keys."""
        out: list[list[tuple[str, Segment]]] = []
        for name in instance_names(self.root):
            groups: dict[str, list[tuple[str, Segment]]] = {}
            for seg in list_segments(layout.instance_dir(self.root, name)):
                groups.setdefault(seg.family, []).append((f"{name}/{seg.key}", seg))
            out.extend(groups.values())
        return out

    def files(self) -> list[tuple[str, Segment]]:
        return [item for stream in self.streams() for item in stream]

    def start_at_end(self) -> None:
        """A new exporter with start=end: everything stored so far counts as sent."""
        for key, seg in self.files():
            with contextlib.suppress(OSError):
                st = seg.path.stat()
                offset = self._line_start_before(seg.path, st.st_size)
                boot = self._boot_before(seg.path, offset)
                self.positions[key] = Position(offset, boot, st.st_ino)

    def backlog(self) -> int:
        """Bytes stored but not yet delivered, over all files."""
        total = 0
        for key, seg in self.files():
            with contextlib.suppress(OSError):
                pos = self.positions.get(key)
                total += max(0, seg.path.stat().st_size - (pos.offset if pos else 0))
        return total

    def next_batch(self) -> Batch | None:
        """The next lines of the next log (round robin) that has any; None if none has.

        Within one log, the oldest segment with lines left goes first.
        """
        streams = self.streams()
        self._forget_deleted({key for stream in streams for key, _ in stream})
        if not streams:
            return None
        for step in range(len(streams)):
            stream = streams[(self._turn + step) % len(streams)]
            for key, seg in stream:
                batch = self._read(key, seg)
                if batch is not None:
                    self._turn = (self._turn + step + 1) % len(streams)
                    return batch
        return None

    def _forget_deleted(self, present: set[str]) -> None:
        for key in [k for k in self.positions if k not in present]:
            pos = self.positions.pop(key)
            size = self._sizes.pop(key, 0)
            if pos.offset < size:
                self.notes.append(
                    f"{key} was deleted (retention) with {size - pos.offset} bytes not sent"
                )

    def commit(self, key: str, offset: int, boot: str) -> None:
        pos = self.positions.setdefault(key, Position())
        pos.offset, pos.boot = offset, boot

    def _read(self, key: str, seg: Segment) -> Batch | None:
        src = open_segment(seg)
        if src is None:
            return None
        with src:
            st = os.fstat(src.fileno())
            self._sizes[key] = st.st_size
            pos = self.positions.setdefault(key, Position(inode=st.st_ino))
            if pos.inode != st.st_ino or st.st_size < pos.offset:
                # Replaced or cut (a copy, a repair): read the new file from its start.
                self.notes.append(f"{key} was replaced; reading it from the start")
                pos.offset, pos.boot, pos.inode = 0, "", st.st_ino
            if st.st_size <= pos.offset:
                return None
            if st.st_size - pos.offset > self.spec.max_backlog:
                self._skip(key, src, pos, st.st_size - self.spec.max_backlog)
            src.seek(pos.offset)
            data = src.read(CHUNK)
        return self._parse(key, seg, pos, data)

    def _skip(self, key: str, src: BinaryIO, pos: Position, to: int) -> None:
        """Fall back to ``max_backlog`` behind: count the record lines skipped."""
        src.seek(pos.offset)
        skipped = 0
        at = pos.offset
        boot = pos.boot
        tail = b""
        while at < to:
            chunk = src.read(min(CHUNK, to - at))
            if not chunk:
                break
            at += len(chunk)
            data = tail + chunk
            lines = data.split(b"\n")
            tail = lines.pop()
            for line in lines:
                if line.startswith(b"# boot "):
                    boot = line.split(b" ", 3)[2].decode("ascii", "replace")
                elif line and not line.startswith(b"#"):
                    skipped += 1
        # Finish the line cut at ``to`` too: resume at a line start.
        while True:
            chunk = src.read(4096)
            if not chunk:
                at -= len(tail)
                break
            newline = chunk.find(b"\n")
            if newline >= 0:
                tail += chunk[: newline + 1]
                at += newline + 1
                if tail.strip() and not tail.startswith(b"#"):
                    skipped += 1
                break
            tail += chunk
            at += len(chunk)
        pos.offset, pos.boot = at, boot
        self.dropped += skipped
        self.notes.append(
            f"{key}: fell over max_backlog behind; skipped {skipped} records (counted as dropped)"
        )

    def _parse(self, key: str, seg: Segment, pos: Position, data: bytes) -> Batch | None:
        end = data.rfind(b"\n") + 1
        if end == 0:
            return None
        instance = seg.path.parent.name
        file = seg.family
        level = self.spec.level
        items: list[ExportItem] = []
        ends: list[tuple[int, str]] = []
        boot = pos.boot
        at = 0
        limit = self.spec.batch
        while at < end and len(items) < limit:
            newline = data.index(b"\n", at)
            raw = data[at:newline]
            at = newline + 1
            try:
                parsed = parse_line(raw.decode("utf-8", "surrogateescape"))
            except LineError:
                continue  # a torn or edited line: the indexer counts those
            if isinstance(parsed, BootLine):
                boot = parsed.boot
            elif isinstance(parsed, RecordLine) and parsed.record.severity <= level:
                stored = StoredRecord(instance, parsed.time_ns, parsed.origin, parsed.record)
                items.append(ExportItem(stored, boot, file))
                ends.append((pos.offset + at, boot))
        return Batch(key, items, ends, (pos.offset + at, boot))

    @staticmethod
    def _line_start_before(path: Path, size: int) -> int:
        """The offset just past the last complete line within ``size`` bytes."""
        with open(path, "rb") as src:
            back = min(size, 1 << 16)
            while True:
                src.seek(size - back)
                data = src.read(back)
                newline = data.rfind(b"\n")
                if newline >= 0:
                    return size - back + newline + 1
                if back == size:
                    return 0
                back = min(size, back * 4)

    @staticmethod
    def _boot_before(path: Path, offset: int) -> str:
        """The boot of the line at ``offset``: the last ``# boot`` line in the MiB before it."""
        with open(path, "rb") as src:
            start = max(0, offset - CHUNK)
            src.seek(start)
            data = b"\n" + src.read(offset - start)
        found = data.rfind(b"\n# boot ")
        if found < 0:
            return ""
        return data[found + 8 :].split(b"\n", 1)[0].split(b" ", 1)[0].decode("ascii", "replace")
