"""Differential fuzz target: ``_speedups.parse_record_lines`` against ``parse_line``.

The indexer lets ``parse_record_lines`` (C) turn runs of plain record lines straight
into index rows and parses the line where it stops with ``parse_line``. The pure
path parses every line with ``parse_line`` and builds rows with ``record_row``. Both
must index the same rows.

Input: log file bytes.

Checks:

- read the indexer's way, the rows (values and their types) are the pure path's;
- each call stops at a line start within the span and takes only lines that
  ``parse_line`` reads as records, each giving exactly ``record_row`` of it; the
  same bytes at another offset, or ending right before an unreadable page, give the
  same answer.
"""

from __future__ import annotations

import atheris
import fuzzlib

with atheris.instrument_imports(include=["umonitor"]):
    from umonitor._speedups import parse_record_lines
    from umonitor.records import Kind, Origin, Record, Severity
    from umonitor.store.index_schema import record_row
    from umonitor.store.logfile import (
        BootLine,
        LineError,
        RecordLine,
        format_boot_line,
        format_record_line,
        parse_line,
    )

Row = tuple[object, ...]


def python_row(raw: bytes) -> Row | None:
    """The row the indexer builds from one line by ``parse_line``, if any."""
    try:
        parsed = parse_line(raw.decode("utf-8", "replace"))
    except LineError:
        return None
    return record_row(parsed) if isinstance(parsed, RecordLine) else None


def typed(row: object) -> object:
    return None if row is None else [(type(v), v) for v in row]  # type: ignore[attr-defined]


def call(data: bytes, pos: int, end: int) -> tuple[int, list[Row]]:
    stop, rows = parse_record_lines(data, pos, end)
    fuzzlib.check(type(stop) is int and type(rows) is list, "wrong result types")
    fuzzlib.check(pos <= stop <= end, f"stop {stop} outside {pos}..{end}")
    fuzzlib.check(stop == pos or data[stop - 1] == 0x0A, "stopped inside a line")
    taken = data[pos:stop].split(b"\n")[:-1] if stop > pos else []
    fuzzlib.check(len(taken) == len(rows), f"{len(rows)} rows for {len(taken)} lines")
    for raw, row in zip(taken, rows, strict=True):
        expected = python_row(raw)
        fuzzlib.check(typed(row) == typed(expected), f"{raw!r}: C {row!r}, Python {expected!r}")
    chunk = data[pos:end]
    fuzzlib.check(
        parse_record_lines(b"\n" + chunk, 1, len(chunk) + 1) == (stop - pos + 1, rows),
        "answer depends on offset",
    )
    with fuzzlib.Fenced(chunk) as fenced:
        at_fence = parse_record_lines(fenced.buffer, fenced.start, fenced.end)
    fuzzlib.check(at_fence == (stop - pos + fenced.start, rows), "answer changes at a page end")
    return stop, rows


def indexer_rows(data: bytes) -> list[Row]:
    """Rows as the indexer gets them with the fast path."""
    end = data.rfind(b"\n") + 1
    rows: list[Row] = []
    pos = 0
    while pos < end:
        pos, fast = call(data, pos, end)
        rows += fast
        if pos >= end:
            break
        newline = data.index(b"\n", pos)
        row = python_row(data[pos:newline])
        pos = newline + 1
        if row is not None:
            rows.append(row)
    return rows


def test_one_input(data: bytes) -> None:
    end = data.rfind(b"\n") + 1
    expected = [python_row(raw) for raw in data[:end].split(b"\n")[:-1]]
    got = indexer_rows(data)
    fuzzlib.check(
        [typed(r) for r in got] == [typed(r) for r in expected if r is not None],
        "indexer rows differ from the pure path",
    )


def seeds() -> list[bytes]:
    base = Record(
        42,
        Severity.WARNING,
        "division by zero",
        Kind.LOG,
        1_234_567_890,
        None,
        "main.c",
        120,
        "divide",
        (("a", "10"), ("op", "a / b"), ("path", "/dev/vda"), ("empty", "")),
    )
    t = 1_795_700_675_123_456_000
    lines = [
        format_record_line(t, Origin.APP, base),
        format_record_line(t, Origin.CONSOLE, base._replace(kind=Kind.CRASH, fields=())),
        format_record_line(0, Origin.SYSLOG, Record(1, Severity.INFO, "")),
        format_record_line(-62_135_596_800 * 10**9, Origin.APP, base._replace(file="-")),
        format_record_line(t, Origin.APP, base._replace(message="caf\u00e9 \\ \t")),
        format_record_line(t, Origin.APP, base._replace(seq=2**64 - 1, mono_ns=2**64 - 1)),
        format_boot_line(BootLine("000102030405060708090a0b0c0d0e0f", "lib", "peer", "name")),
        "2026-12-31T23:59:60.000000Z info app 0005 +01.5 main.c:0120:f x\ta=1 a=2",
        '2026-11-26T13:44:35.123456Z warning app/enter 1 - - x\tk="x y" b= c=""',
    ]
    text = "".join(line + "\n" for line in lines).encode()
    return [text, text[:-5], *(line.encode() + b"\n" for line in lines)]


if __name__ == "__main__":
    fuzzlib.main(test_one_input, seeds)
