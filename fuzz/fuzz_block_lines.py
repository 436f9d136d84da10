"""Differential fuzz target: ``_speedups.summarize_lines`` and ``scan_lines`` against
``umonitor.store.blocks``' pure-Python reference.

The index summarizes a log file in blocks with ``blocks.summarize``, which lets
``summarize_lines`` (C) count runs of plain record lines and counts every other line
with ``add_line``; a query scans a candidate block with ``scan_lines`` (C), which keeps
the lines that may match, with their times, and leaves the ones it cannot read
quickly (time None) to ``parse_line``.

Input: 8 header bytes, then log file bytes (read up to the last newline).

- bytes 0-1: block size, 1-4096 (``BLOCK_BYTES`` from 0xff00 up);
- byte 2: ``max_severity`` (low nibble, -3..12) and ``origin_mask`` (high nibble,
  -4..11);
- bytes 3 and 4: ``since_ns`` and ``until_ns``: 0 the widest, else a record time of
  the data, moved by one nanosecond to leave its line out when the low bit is set;
- bytes 5-7: the ``--grep`` text: none, a piece of a record's message (start byte 6,
  length byte 7), the same with ASCII case changed, or a piece of the data's text.

Checks:

- ``summarize(..., fast=True)`` equals ``fast=False`` exactly: every block's offset,
  length, boot, counters, grams and bad-line count, the context lines and the boot;
  the blocks tile the data;
- each ``summarize_lines`` call, made as ``summarize`` makes it, stops at a line start
  within the span, takes only whole lines before the one that reaches ``stop_after``,
  each in the fast case its docstring describes, read by ``parse_line`` as a record,
  and adds exactly what ``add_line`` adds; it stops early only before a line outside
  that case; the same bytes at another offset, and ending right before an unreadable
  page, give the same answer;
- ``scan_lines`` keeps each line once, in order, at line starts; a line kept with a
  time is a fast-case record line whose clamped time that is, within ``since_ns`` ..
  ``until_ns``, of a severity and origin the query takes, with the key in its folded
  MESSAGE bytes; one kept with None is outside the fast case (every ``#`` line is kept
  so), or, with a key, has a MESSAGE ``escape`` would not write (``blocks.irregular``);
  a line left out is a fast-case record line the reference leaves out too, and does
  not match the query exactly (``fold(grep) in fold(message)``); every line the
  reference scan keeps is kept;
  scanning block by block gives the whole scan; the same at another offset and at a
  page end.
"""

from __future__ import annotations

import sys
from array import array
from pathlib import Path

import atheris
import fuzzlib

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.block_lines
with atheris.instrument_imports(include=["umonitor"]):
    from umonitor import _speedups
    from umonitor.records import Kind, Origin, Record, Severity
    from umonitor.store import blocks
    from umonitor.store.logfile import (
        BootLine,
        DroppedLine,
        RecordLine,
        format_boot_line,
        format_dropped_line,
        format_record_line,
    )
from tests.block_lines import FOLD, in_fast_case, message_bytes, split_lines
from tests.block_lines import python_parse as parse

I64_MIN = blocks.I64_MIN
I64_MAX = blocks.I64_MAX
HEADER = 8
TAIL = b"2026-11-26T13:44:35.123456Z info app 1 - - needle\n"  # after the span: never read

ScanResult = list[tuple[int, int | None]]

# -- summarize_lines, checked on every call summarize makes ------------------------------

c_summarize_lines = _speedups.summarize_lines
c_scan_lines = _speedups.scan_lines


def summarize_alone(
    chunk: bytes | memoryview, prefix: bytes, stop_after: int, counters: array[int], grams: bytes
) -> tuple[int, array[int], bytearray]:
    """One call on ``chunk`` copied after ``prefix`` and before ``TAIL``."""
    buf = prefix + bytes(chunk) + TAIL
    got_counters = array("q", counters)
    got_grams = bytearray(grams)
    start = len(prefix)
    stop = c_summarize_lines(
        buf, start, start + len(chunk), stop_after + start, got_counters, got_grams
    )
    return stop - start, got_counters, got_grams


def checked_summarize_lines(
    data: bytes, pos: int, end: int, stop_after: int, counters: array[int], grams: bytearray
) -> int:
    before_counters = array("q", counters)
    before_grams = bytes(grams)
    stop = c_summarize_lines(data, pos, end, stop_after, counters, grams)
    fuzzlib.check(type(stop) is int, f"new_pos is a {type(stop).__name__}")
    fuzzlib.check(pos <= stop <= end, f"stop {stop} outside {pos}..{end}")
    fuzzlib.check(stop == pos or data[stop - 1] == 0x0A, f"stopped inside a line at {stop}")
    expected_counters = array("q", before_counters)
    expected_grams = bytearray(before_grams)
    for start, raw in split_lines(data, pos, stop):
        fuzzlib.check(start < stop_after, f"took the line at {start}, after {stop_after}")
        fuzzlib.check(in_fast_case(raw), f"took a line outside the fast case: {raw!r}")
        fuzzlib.check(isinstance(parse(raw), RecordLine), f"took a non-record: {raw!r}")
        fuzzlib.check(blocks.add_line(raw, expected_counters, expected_grams) is None, "context")
    fuzzlib.check(
        counters == expected_counters, f"counters {counters!r}, Python {expected_counters!r}"
    )
    fuzzlib.check(grams == expected_grams, "grams differ from add_line's")
    if stop < min(stop_after, end):
        newline = data.find(b"\n", stop, end)
        if newline >= 0:
            raw = data[stop:newline]
            fuzzlib.check(not in_fast_case(raw), f"stopped before a fast-case line: {raw!r}")
    chunk = memoryview(data)[pos:end]
    answer = (stop - pos, counters, grams)
    fuzzlib.check(
        summarize_alone(chunk, b"\n#7", stop_after - pos, before_counters, before_grams) == answer,
        "answer depends on offset",
    )
    with fuzzlib.Fenced(bytes(chunk)) as fenced:
        fenced_counters = array("q", before_counters)
        fenced_grams = bytearray(before_grams)
        at_fence = c_summarize_lines(
            fenced.buffer,
            fenced.start,
            fenced.end,
            stop_after - pos + fenced.start,
            fenced_counters,
            fenced_grams,
        )
    fuzzlib.check(
        (at_fence - fenced.start, fenced_counters, fenced_grams) == answer,
        "answer changes at a page end",
    )
    return stop


if blocks.summarize_lines is None or blocks.scan_lines_fast is None:
    raise ImportError("umonitor._speedups is not in use (built? UMONITOR_PURE_PYTHON set?)")
blocks.summarize_lines = checked_summarize_lines


def check_summaries(data: bytes, end: int, block_bytes: int) -> blocks.Summarized:
    fast = blocks.summarize(data, 0, end, "", block_bytes, fast=True)
    slow = blocks.summarize(data, 0, end, "", block_bytes, fast=False)
    fuzzlib.check(len(fast.blocks) == len(slow.blocks), "a different number of blocks")
    offset = 0
    for i, (f, s) in enumerate(zip(fast.blocks, slow.blocks, strict=True)):
        fuzzlib.check(f.offset == s.offset == offset, f"block {i}: offset {f.offset}, {s.offset}")
        fuzzlib.check(f.length == s.length > 0, f"block {i}: length {f.length}, {s.length}")
        fuzzlib.check(f.boot == s.boot, f"block {i}: boot {f.boot!r}, {s.boot!r}")
        fuzzlib.check(f.counters == s.counters, f"block {i}: {f.counters!r}, {s.counters!r}")
        fuzzlib.check(f.grams == s.grams, f"block {i}: grams differ")
        fuzzlib.check(f.bad == s.bad, f"block {i}: bad {f.bad}, {s.bad}")
        offset += f.length
    fuzzlib.check(offset == end, f"blocks end at {offset}, not {end}")
    fuzzlib.check(fast.context == slow.context, "context lines differ")
    fuzzlib.check(fast.boot == slow.boot, f"boot {fast.boot!r}, {slow.boot!r}")
    return fast


# -- scan_lines ------------------------------------------------------------------------------


class Query:
    def __init__(
        self, since: int, until: int, max_severity: int, origin_mask: int, grep: str
    ) -> None:
        self.since = since
        self.until = until
        self.max_severity = max_severity
        self.origin_mask = origin_mask
        self.grep = grep
        self.key = blocks.search_key(grep)

    def args(self) -> tuple[int, int, int, int, bytes]:
        return self.since, self.until, self.max_severity, self.origin_mask, self.key

    def takes(self, record_line: RecordLine) -> bool:
        """Time, severity and origin (what the scan checks exactly)."""
        return (
            self.since <= blocks.clamp64(record_line.time_ns) <= self.until
            and record_line.record.severity <= self.max_severity
            and bool(blocks.ORIGIN_BITS[record_line.origin] & self.origin_mask)
        )

    def matches(self, parsed: object) -> bool:
        """The query's exact filter on what parse_line reads."""
        return (
            isinstance(parsed, RecordLine)
            and self.takes(parsed)
            and blocks.fold(self.grep) in blocks.fold(parsed.record.message)
        )


def scan(data: bytes | memoryview, pos: int, end: int, query: Query) -> ScanResult:
    return c_scan_lines(data, pos, end, *query.args())


def check_scan(data: bytes, end: int, query: Query, found: blocks.Summarized) -> None:
    got = scan(data, 0, end, query)
    fuzzlib.check(type(got) is list, f"scan_lines gave a {type(got).__name__}")
    lines = split_lines(data, 0, end)
    starts = [start for start, _raw in lines]
    kept: dict[int, int | None] = {}
    last = -1
    for item in got:
        fuzzlib.check(type(item) is tuple and len(item) == 2, f"entry {item!r}")
        start, time_ns = item
        fuzzlib.check(type(start) is int and start > last, f"entry {item!r} out of order")
        fuzzlib.check(time_ns is None or type(time_ns) is int, f"entry {item!r}")
        kept[start] = time_ns
        last = start
    fuzzlib.check(set(kept) <= set(starts), "an entry is not at a line start")
    for start, raw in lines:
        parsed = parse(raw)
        fast_case = in_fast_case(raw)
        if start not in kept:
            fuzzlib.check(fast_case, f"left out a line outside the fast case: {raw!r}")
            fuzzlib.check(isinstance(parsed, RecordLine), f"left out a non-record: {raw!r}")
            assert isinstance(parsed, RecordLine)
            fuzzlib.check(
                not query.takes(parsed) or query.key not in message_bytes(raw).translate(FOLD),
                f"left out a line the reference keeps: {raw!r}",
            )
            fuzzlib.check(not query.matches(parsed), f"left out a match: {raw!r}")
            continue
        time_ns = kept[start]
        if time_ns is None:
            fuzzlib.check(
                not fast_case or (bool(query.key) and blocks.irregular(message_bytes(raw))),
                f"a fast-case line kept without its time: {raw!r}",
            )
            continue
        fuzzlib.check(not raw.startswith(b"#"), f"a '#' line kept with a time: {raw!r}")
        fuzzlib.check(fast_case, f"a line outside the fast case has a time: {raw!r}")
        fuzzlib.check(isinstance(parsed, RecordLine), f"a non-record has a time: {raw!r}")
        assert isinstance(parsed, RecordLine)
        fuzzlib.check(
            time_ns == blocks.clamp64(parsed.time_ns),
            f"time {time_ns}, parse_line {parsed.time_ns}: {raw!r}",
        )
        fuzzlib.check(query.takes(parsed), f"kept a line the query does not take: {raw!r}")
        fuzzlib.check(
            query.key in message_bytes(raw).translate(FOLD),
            f"kept a line without the key {query.key!r}: {raw!r}",
        )
    reference = blocks.scan_lines(data, 0, end, *query.args(), fast=False)
    for start, time_ns in reference:
        fuzzlib.check(start in kept, f"the reference keeps the line at {start}")
        fuzzlib.check(kept[start] in (time_ns, None), f"at {start}: {kept[start]}, {time_ns}")

    pieces: ScanResult = []
    for block in found.blocks:
        pieces += scan(data, block.offset, block.offset + block.length, query)
    fuzzlib.check(pieces == got, "block by block differs from the whole scan")
    buf = b"\n#7" + data[:end] + TAIL
    fuzzlib.check(
        [(s - 3, t) for s, t in scan(buf, 3, 3 + end, query)] == got,
        "answer depends on offset",
    )
    with fuzzlib.Fenced(data[:end]) as fenced:
        at_fence = scan(fenced.buffer, fenced.start, fenced.end, query)
    fuzzlib.check(
        [(s - fenced.start, t) for s, t in at_fence] == got, "answer changes at a page end"
    )
    # The last line cut short: ignored, and never read past.
    if lines:
        with fuzzlib.Fenced(data[: end - 1]) as fenced:
            cut = scan(fenced.buffer, fenced.start, fenced.end, query)
        fuzzlib.check(
            [(s - fenced.start, t) for s, t in cut] == [e for e in got if e[0] != lines[-1][0]],
            "a last line without its newline was kept",
        )


# -- the input -----------------------------------------------------------------------------


def bound(selector: int, times: list[int], shift: int, widest: int) -> int:
    if selector == 0 or not times:
        return widest
    return blocks.clamp64(times[(selector >> 1) % len(times)] + (selector & 1) * shift)


def grep_text(header: bytes, data: bytes, messages: list[str]) -> str:
    mode = header[5] % 4
    if mode == 0:
        return ""
    if mode == 3 or not messages:
        source = data.decode("utf-8", "replace")
    else:
        source = messages[(header[5] >> 2) % len(messages)]
    start = header[6] % (len(source) + 1)
    text = source[start : start + header[7] % 40]
    if mode == 2:
        rng = fuzzlib.rng_for(header + data)
        text = "".join(c.swapcase() if c.isascii() and rng.random() < 0.5 else c for c in text)
    return text


def test_one_input(raw_input: bytes) -> None:
    header = raw_input[:HEADER].ljust(HEADER, b"\0")
    data = raw_input[HEADER:]
    end = data.rfind(b"\n") + 1
    size = header[0] << 8 | header[1]
    block_bytes = blocks.BLOCK_BYTES if size >= 0xFF00 else 1 + size % 4096
    found = check_summaries(data, end, block_bytes)

    records = [
        p for _s, raw in split_lines(data, 0, end) if isinstance(p := parse(raw), RecordLine)
    ]
    times = sorted({blocks.clamp64(r.time_ns) for r in records})
    query = Query(
        bound(header[3], times, 1, I64_MIN),
        bound(header[4], times, -1, I64_MAX),
        (header[2] & 0x0F) - 3,
        (header[2] >> 4) - 4,
        grep_text(header, data[:end], [r.record.message for r in records]),
    )
    check_scan(data, end, query, found)


def seeds() -> list[bytes]:
    base = Record(
        42,
        Severity.WARNING,
        "Division by zero",
        Kind.LOG,
        1_234_567_890,
        None,
        "main.c",
        120,
        "divide",
        (("a", "10"), ("op", "a / b"), ("empty", "")),
    )
    t = 1_795_700_675_123_456_000
    lines = [
        format_record_line(t, Origin.APP, base),
        format_record_line(t + 1000, Origin.CONSOLE, base._replace(kind=Kind.CRASH, fields=())),
        format_record_line(t + 2000, Origin.SYSLOG, base._replace(severity=Severity.DEBUG)),
        format_record_line(0, Origin.SYSLOG, Record(1, Severity.INFO, "")),
        format_record_line(-62_135_596_800 * 10**9, Origin.APP, base._replace(file="-")),
        format_record_line(t, Origin.APP, base._replace(message="caf\u00e9 \\ \t\x1b ZERO")),
        format_record_line(t, Origin.APP, base._replace(seq=2**64 - 1, mono_ns=2**64 - 1)),
        format_record_line(t, Origin.APP, base._replace(kind=Kind.ENTER, line=2**64 - 1)),
        format_boot_line(BootLine("000102030405060708090a0b0c0d0e0f", "lib", "peer", "name")),
        format_dropped_line(DroppedLine("00", 3, 7)),
        "# a comment",
        "",
        "9999-12-31T23:59:61.999999Z emerg console/exit 1 - f.c:1:f Hi there",
        "1677-09-21T00:12:43.145224Z info app 1 - - before 1678",
        "2026-12-31T23:59:60.000000Z info app 0005 +01.5 main.c:0120:f x\ta=1 a=2",
        "2026-11-26T13:44:35.123456Z warning app 7 - - \\x41bc and a\\q",
        '2026-11-26T13:44:35.123456Z warning app/enter 1 - - x\tk="x y" b= c=""',
        "2026-11-26T13:44:35.123456Z  warning app 1 - - two spaces",
        "2023-02-29T00:00:00.000000Z info app 1 - - no such day",
    ]
    text = "".join(line + "\n" for line in lines).encode()
    headers = [
        b"\xff\xff\xba\x00\x00\x00\x00\x00",  # one block, everything
        b"\x00\x95\xba\x00\x00\x01\x00\x04",  # 150-byte blocks, grep from a message
        b"\x00\x00\x5a\x02\x05\x06\x03\x06",  # one-byte blocks, filters, case changed
        b"\x01\x00\x37\x03\x04\x03\x10\x08",  # 257-byte blocks, grep from the text
    ]
    out = [h + text for h in headers]
    out += [headers[0] + text[:-5], headers[1] + text.replace(b"\n", b"\n\n")]
    out += [headers[2] + line.encode() + b"\n" for line in lines]
    return out


if __name__ == "__main__":
    fuzzlib.main(test_one_input, seeds)
