"""Checks that numbered records reached an instance's log file exactly once, in order.

Every guest numbers its records per boot from 1 (docs/protocol.md §2.2). After a
run, an instance's ``app.log`` must hold each number 1..N of each boot once and in
ascending order, N being the last number the guest logged (or, when the caller does
not know it, the highest one the file mentions). The file is read with the store's
own parser (``umonitor.store.logfile.parse_line``), following the ``# boot`` lines
that say which boot the record lines below them belong to.

How the drop-aware variant works: a guest whose buffer overflowed tells the host
with a DROPPED notice, written as ``# dropped BOOT count=C through=T`` (C is
cumulative per boot, T the highest number discarded; docs/storage.md). Walking a
boot's lines in file order, each notice adds its growth of C to an allowance; a gap
before the next stored number may be paid from that allowance only if every number
of the gap is <= T of a notice seen before it. A gap that cannot be paid is
*missing*; allowance left at the end is *overcounted* (the guest reported more
records lost than the file lacks). "Exactly" means both are zero. The exact variant
also refuses any gap a notice covers.

``LogChecker`` reads incrementally (``follow``: the complete lines the file gained,
rotated ``app.log.N`` files first), so a test can check while guests still send;
``check_instance`` and ``check_all`` read whole files, ``check_lines`` a list.
Run as ``python -m tests.numbered DATA [NAME...] [--expected N] [--allow-drops]``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from umonitor.errors import LineError
from umonitor.records import Record
from umonitor.store import layout
from umonitor.store.logfile import BootLine, DroppedLine, RecordLine, parse_line

EXAMPLES = 5  # problems kept as text per boot; the counts are always complete
MAX_SEQ = 1 << 26  # numbers above this are refused rather than tracked
_ABSENT, _STORED, _MISSING, _COVERED = b"\0", b"\1", b"\2", b"\3"


@dataclass
class BootCheck:
    """What one boot's record lines in one file add up to."""

    boot: str
    stored: int = 0  # record lines (duplicates included)
    high: int = 0  # highest number stored
    duplicated: int = 0  # record lines whose number was stored before
    out_of_order: int = 0  # first copies that came after a higher number
    missing: int = 0  # numbers 1..N never stored and not covered by a notice
    covered: int = 0  # numbers never stored that a `# dropped` notice paid for
    overcounted: int = 0  # a notice's count beyond the numbers actually absent
    dropped: int = 0  # the last cumulative count of this boot's notices
    dropped_through: int = 0  # the highest `through` of those notices
    extra: int = 0  # numbers stored that no boot of N records has (above N, or 0)
    bad_content: int = 0  # record lines the content check refused
    expected: int = 0  # N
    connections: int = 0  # `# boot` lines: one per connection (and per new rotated file)
    gaps: int = 0  # runs of absent numbers (each drop episode makes one)
    examples: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        if len(self.examples) < EXAMPLES:
            self.examples.append(text)

    @property
    def unique(self) -> int:
        return self.stored - self.duplicated


@dataclass
class InstanceCheck:
    """The verdict on one instance's ``app.log``."""

    name: str
    path: Path
    allow_drops: bool
    boots: dict[str, BootCheck] = field(default_factory=dict)
    bad_lines: int = 0  # lines the parser refused (e.g. one torn by a crash)
    orphans: int = 0  # record lines before any `# boot` line

    @property
    def records(self) -> int:
        """Distinct (boot, number) pairs stored."""
        return sum(b.unique for b in self.boots.values())

    @property
    def missing(self) -> int:
        return sum(b.missing for b in self.boots.values())

    @property
    def duplicated(self) -> int:
        return sum(b.duplicated for b in self.boots.values())

    @property
    def out_of_order(self) -> int:
        return sum(b.out_of_order for b in self.boots.values())

    @property
    def covered(self) -> int:
        return sum(b.covered for b in self.boots.values())

    @property
    def overcounted(self) -> int:
        return sum(b.overcounted for b in self.boots.values())

    @property
    def dropped(self) -> int:
        return sum(b.dropped for b in self.boots.values())

    @property
    def extra(self) -> int:
        return sum(b.extra for b in self.boots.values())

    @property
    def bad_content(self) -> int:
        return sum(b.bad_content for b in self.boots.values())

    @property
    def ok(self) -> bool:
        return (
            self.missing == 0
            and self.duplicated == 0
            and self.out_of_order == 0
            and self.overcounted == 0
            and self.extra == 0
            and self.bad_content == 0
            and self.orphans == 0
            and (self.allow_drops or self.covered == 0)
        )

    def summary(self) -> str:
        """One line with every count, then the first few problems of each boot."""
        mode = "drop-aware" if self.allow_drops else "exact"
        head = (
            f"{self.name} ({mode}): {'OK' if self.ok else 'FAILED'}, {len(self.boots)} boot(s), "
            f"{self.records} records, missing {self.missing}, duplicated {self.duplicated}, "
            f"out of order {self.out_of_order}, dropped (notices) {self.dropped}, "
            f"covered by notices {self.covered}, overcounted {self.overcounted}"
        )
        extra = [
            f"{label} {value}"
            for label, value in (
                ("beyond N", self.extra),
                ("bad content", self.bad_content),
                ("unparsable lines", self.bad_lines),
                ("records before any boot line", self.orphans),
            )
            if value
        ]
        lines = [head + (", " + ", ".join(extra) if extra else "")]
        for boot in self.boots.values():
            lines.extend(f"  {boot.boot[:12]}: {text}" for text in boot.examples)
        return "\n".join(lines)


class _Walk:
    """Per-boot state while reading one file; see the module docstring."""

    __slots__ = ("allowance", "check", "seen")

    def __init__(self, check: BootCheck) -> None:
        self.check = check
        self.seen = bytearray()  # per number: _ABSENT, _STORED, _MISSING or _COVERED
        self.allowance = 0

    def notice(self, line: DroppedLine) -> None:
        c = self.check
        if line.count > c.dropped:
            self.allowance += line.count - c.dropped
            c.dropped = line.count
        c.dropped_through = max(c.dropped_through, line.through_seq)

    def _grow(self, last: int) -> None:
        if last >= len(self.seen):
            self.seen.extend(bytes(max(last + 1 - len(self.seen), len(self.seen))))

    def gap(self, first: int, last: int) -> None:
        """Numbers first..last are absent where the file moves past them."""
        c = self.check
        size = last - first + 1
        c.gaps += 1
        coverable = max(0, min(last, c.dropped_through) - first + 1)
        paid = min(coverable, self.allowance)
        self.allowance -= paid
        self._grow(last)
        self.seen[first : first + paid] = _COVERED * paid
        self.seen[first + paid : last + 1] = _MISSING * (size - paid)
        c.covered += paid
        c.missing += size - paid
        if paid < size:
            what = f"{first}" if size == 1 else f"{first}..{last}"
            c.note(f"missing {what}: {size - paid} of {size} not covered by a drop notice")

    def record(self, record: Record) -> None:
        c = self.check
        seq = record.seq
        c.stored += 1
        if not 1 <= seq <= MAX_SEQ:
            c.extra += 1
            c.note(f"number {seq} out of range")
            return
        self._grow(seq)
        state = self.seen[seq]
        if state == _STORED[0]:
            c.duplicated += 1
            c.note(f"duplicate {seq}")
            return
        self.seen[seq] = _STORED[0]
        if state != _ABSENT[0]:
            # A late first copy: counted absent when the file moved past it.
            c.out_of_order += 1
            c.note(f"out of order: {seq} after {c.high}")
            if state == _MISSING[0]:
                c.missing -= 1
            else:
                c.covered -= 1
                c.overcounted += 1  # a notice paid for a number that is here
            return
        if seq > c.high + 1:
            self.gap(c.high + 1, seq - 1)
        c.high = seq

    def finish(self, expected: int | None) -> None:
        c = self.check
        c.expected = expected if expected is not None else max(c.high, c.dropped_through)
        if c.expected > c.high:
            self.gap(c.high + 1, c.expected)
        elif c.high > c.expected:
            beyond = self.seen.count(_STORED, c.expected + 1)
            c.extra += beyond
            c.note(f"{beyond} numbers above the expected {c.expected} (up to {c.high})")
        if self.allowance:
            c.overcounted += self.allowance
            c.note(f"drop notices count {self.allowance} more records than are absent")


Content = Callable[[Record], bool]


def numbered_message(record: Record) -> bool:
    """The test guests' content: message ``n=<seq>`` (tests/c/numbered_guest.c)."""
    return record.message == f"n={record.seq}"


class LogChecker:
    """Checks one log file incrementally: ``feed`` lines as they come, ``finish`` once.

    ``follow`` reads whatever complete lines the file gained since the last call,
    so a test can check while guests are still sending and only pay for the tail
    at the end.
    """

    def __init__(
        self,
        name: str,
        path: Path = Path("-"),
        *,
        allow_drops: bool = False,
        content: Content | None = None,
    ) -> None:
        self.result = InstanceCheck(name, path, allow_drops)
        self.content = content
        self._walks: dict[str, _Walk] = {}
        self._current: _Walk | None = None
        self._offsets: dict[int, int] = {}  # inode -> bytes read
        self._finished = False

    def _walk(self, boot: str) -> _Walk:
        walk = self._walks.get(boot)
        if walk is None:
            check = self.result.boots[boot] = BootCheck(boot)
            walk = self._walks[boot] = _Walk(check)
        return walk

    def feed(self, lines: Iterable[str]) -> None:
        """Lines of the file, in order, without their newlines."""
        result, content = self.result, self.content
        for text in lines:
            if not text:
                continue
            try:
                parsed = parse_line(text)
            except LineError:
                result.bad_lines += 1
                continue
            if isinstance(parsed, RecordLine):
                current = self._current
                if current is None:
                    result.orphans += 1
                    continue
                current.record(parsed.record)
                if content is not None and not content(parsed.record):
                    current.check.bad_content += 1
                    current.check.note(f"unexpected content at {parsed.record.seq}")
            elif isinstance(parsed, BootLine):
                self._current = self._walk(parsed.boot)
                self._current.check.connections += 1
            elif isinstance(parsed, DroppedLine):
                self._walk(parsed.boot).notice(parsed)

    def follow(self) -> int:
        """Feed the complete lines the files gained since the last call; returns how many.

        ``path`` is the live file (``.../app.log``). Rotated files (``app.log.N``) are
        read first, oldest first, then the live one; a file is known by its inode,
        which a rename keeps, so a rotation between two calls neither skips nor
        repeats a line.
        """
        live = self.result.path
        for _ in range(100):
            fed = 0
            try:
                live_inode: int | None = live.stat().st_ino
            except FileNotFoundError:
                live_inode = None
            rotated = []
            for other in live.parent.glob(f"{live.name}.*"):
                number = other.name[len(live.name) + 1 :]
                if number.isdigit():
                    rotated.append((int(number), other))
            for _number, other in sorted(rotated):
                with contextlib.suppress(FileNotFoundError), open(other, "rb") as src:
                    fed += self._read(src)
            try:
                with open(live, "rb") as src:
                    if os.fstat(src.fileno()).st_ino != live_inode:
                        continue  # rotated while the older files were read: again
                    fed += self._read(src)
            except FileNotFoundError:
                pass
            return fed
        raise RuntimeError(f"{live} keeps changing under the reader")

    def _read(self, src: BinaryIO) -> int:
        inode = os.fstat(src.fileno()).st_ino
        offset = self._offsets.get(inode, 0)
        src.seek(offset)
        chunk = src.read()
        end = chunk.rfind(b"\n") + 1
        if not end:
            return 0
        self._offsets[inode] = offset + end
        lines = chunk[:end].decode("utf-8", "surrogateescape").split("\n")[:-1]
        self.feed(lines)
        return len(lines)

    def finish(self, expected: int | dict[str, int] | None = None) -> InstanceCheck:
        """The verdict. ``expected``: N for every boot, or N per boot id (a boot that
        never showed up is then all missing); None: the highest number the file
        mentions for that boot."""
        if self._finished:
            raise RuntimeError("finish() may be called once")
        self._finished = True
        if isinstance(expected, dict):
            for boot in expected:
                self._walk(boot)
        for boot, walk in self._walks.items():
            walk.finish(expected.get(boot) if isinstance(expected, dict) else expected)
        return self.result


def check_lines(
    name: str,
    lines: Iterable[str],
    *,
    expected: int | dict[str, int] | None = None,
    allow_drops: bool = False,
    content: Content | None = None,
) -> InstanceCheck:
    """Check the lines of one log file (without newlines); see ``LogChecker``."""
    checker = LogChecker(name, allow_drops=allow_drops, content=content)
    checker.feed(lines)
    return checker.finish(expected)


def log_path(data: Path, name: str, file: str = layout.APP_LOG) -> Path:
    return data / layout.INSTANCES / name / file


def check_instance(
    data: Path,
    name: str,
    *,
    expected: int | dict[str, int] | None = None,
    allow_drops: bool = False,
    content: Content | None = None,
    file: str = layout.APP_LOG,
) -> InstanceCheck:
    """Check instance ``name``'s log file in the data directory ``data``."""
    checker = LogChecker(name, log_path(data, name, file), allow_drops=allow_drops, content=content)
    checker.follow()
    return checker.finish(expected)


def _check_one(
    data: Path, allow_drops: bool, content: Content | None, job: tuple[str, int | None]
) -> InstanceCheck:
    name, expected = job
    return check_instance(data, name, expected=expected, allow_drops=allow_drops, content=content)


def check_all(
    data: Path,
    names: Iterable[str] | None = None,
    *,
    expected: int | Mapping[str, int] | None = None,
    allow_drops: bool = False,
    content: Content | None = None,
) -> list[InstanceCheck]:
    """Check several instances (default: every instance with an ``app.log``).

    ``expected``: N for every boot of every instance, or N per instance name.
    Instances are checked in parallel processes: parsing every line is the slow
    part (tens of microseconds a line), and the files are independent.
    """
    if names is None:
        root = data / layout.INSTANCES
        names = sorted(p.parent.name for p in root.glob(f"*/{layout.APP_LOG}"))
    jobs = [(n, expected.get(n) if isinstance(expected, Mapping) else expected) for n in names]
    check = functools.partial(_check_one, data, allow_drops, content)
    workers = min(len(jobs), os.cpu_count() or 1)
    if workers <= 1:
        return [check(job) for job in jobs]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(check, jobs))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="the collector's data directory")
    parser.add_argument("names", nargs="*", help="instances (default: all)")
    parser.add_argument("--expected", type=int, help="N: the last number of every boot")
    parser.add_argument("--allow-drops", action="store_true", help="the drop-aware variant")
    args = parser.parse_args(argv)
    results = check_all(
        args.data, args.names or None, expected=args.expected, allow_drops=args.allow_drops
    )
    for result in results:
        print(result.summary())
    return 0 if results and all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
