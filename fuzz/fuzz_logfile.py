"""Fuzz target: reading a log file line (docs/storage.md), ``parse_line``.

Log files are the collector's own output, but a torn write or an edit can leave
anything in them, so the invariant here is "parses or raises LineError".

Input: one byte choosing how the rest becomes text (UTF-8 with replacement, as the
indexer reads files, or Latin-1, which reaches every code point below 256), then the
line.

Checks: ``parse_line`` returns a BootLine, DroppedLine, RecordLine or None, or raises
LineError, nothing else; what it returns, formatted again by the writer
(``LineFormatter``, ``format_boot_line``, ``format_dropped_line``), parses to the same
value.
"""

from __future__ import annotations

import atheris
import fuzzlib

with atheris.instrument_imports(include=["umonitor"]):
    from umonitor.records import Kind, Origin, Record, Severity
    from umonitor.store.logfile import (
        BootLine,
        DroppedLine,
        LineError,
        LineFormatter,
        RecordLine,
        format_boot_line,
        format_dropped_line,
        format_record_line,
        parse_line,
    )


def text_of(data: bytes) -> str:
    if data[0] & 1:
        return data[1:].decode("latin-1")
    return data[1:].decode("utf-8", "replace")


def written(parsed: BootLine | DroppedLine | RecordLine) -> str:
    if isinstance(parsed, RecordLine):
        return LineFormatter().line(parsed.time_ns, parsed.origin, parsed.record)
    if isinstance(parsed, BootLine):
        return format_boot_line(parsed)
    return format_dropped_line(parsed)


def test_one_input(data: bytes) -> None:
    if not data:
        return
    line = text_of(data)
    try:
        parsed = parse_line(line)
    except LineError:
        return
    if parsed is None:
        fuzzlib.check(line.startswith("#"), "None for a line that is not a comment")
        return
    again_line = written(parsed)
    again = parse_line(again_line)
    fuzzlib.check(again == parsed, f"{line!r} -> {parsed!r} -> {again_line!r} -> {again!r}")


def seeds() -> list[bytes]:
    record = Record(
        42,
        Severity.WARNING,
        "division by zero \\ \t \x1b \u0085 caf\u00e9",
        Kind.CRASH,
        1_234_567_890,
        None,
        "main.c",
        120,
        "divide",
        (("a", "10"), ("op", "a / b"), ("empty", ""), ("q", 'say "hi"')),
    )
    lines = [
        format_record_line(1_795_700_675_123_456_000, Origin.APP, record),
        format_record_line(0, Origin.SYSLOG, Record(1, Severity.INFO, "")),
        format_record_line(-1000, Origin.CONSOLE, record._replace(file="-", line=0)),
        format_boot_line(BootLine("000102030405060708090a0b0c0d0e0f", "umonitor-c/1.0.0", "", "w")),
        format_dropped_line(DroppedLine("00ff", 17, 99)),
        "# some other comment",
        '2026-11-26T13:44:35.123456Z info app +5 +1.5 a:0120:f msg\tk=v k2="x y" bare=',
        "2026-12-31T23:59:60.000000Z debug syslog/enter 0 - :: m",
        "2026-11-26T13:44:35.123456Z loud app 1 - - x",
    ]
    return [bytes([mode]) + line.encode() for mode in (0, 1) for line in lines]


if __name__ == "__main__":
    fuzzlib.main(test_one_input, seeds)
