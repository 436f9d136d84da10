"""Fuzz target: a guest's serial console (docs/console.md), ``ConsoleDecoder``.

Input: one configuration byte (``max_line``), then the console bytes.

Checks: nothing raises; whole, in random chunks, in small chunks and (up to 128
bytes, as classifying every piece costs) byte by byte the stream gives the same
records; after ``next_events`` the decoder holds less than ``max_line`` bytes and
after ``end_of_stream`` none; records are numbered from 1, carry visible text
without control characters, a ``mono_ns`` that fits an i64, and are crashes exactly
when they name a crash reason; each record stored as a log file line reads back
with ``parse_line`` as the same record.
"""

from __future__ import annotations

import re

import atheris
import fuzzlib

with atheris.instrument_imports(include=["umonitor"]):
    from umonitor.protocol.console_lines import ConsoleDecoder, crash_reason
    from umonitor.records import Kind, Origin, Record
    from umonitor.store.logfile import LineFormatter, RecordLine, parse_line

MAX_LINES = (16, 64, 1500, 65536)
UNPRINTABLE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")
NOW = 1_767_225_600_123_456_000


def check_records(records: list[Record]) -> None:
    fuzzlib.check_numbered(records)
    formatter = LineFormatter()
    for record in records:
        fuzzlib.check(not UNPRINTABLE.search(record.message), f"control in {record.message!r}")
        fuzzlib.check(record.message.strip(), "a blank record")
        fuzzlib.check(record.mono_ns is None or 0 <= record.mono_ns < 2**63, "mono_ns range")
        fuzzlib.check(
            (record.kind is Kind.CRASH) == (crash_reason(record) is not None),
            "crash kind and crash reason disagree",
        )
        line = formatter.line(NOW, Origin.CONSOLE, record)
        parsed = parse_line(line)
        fuzzlib.check(
            parsed == RecordLine(NOW, Origin.CONSOLE, record),
            f"stored line {line!r} reads back as {parsed!r}",
        )


def test_one_input(data: bytes) -> None:
    fuzzlib.check_line_stream(
        data, MAX_LINES, lambda n: ConsoleDecoder(max_line=n), check_records, bytewise_max=128
    )


def seeds() -> list[bytes]:
    lines = [
        b"SeaBIOS (version 1.16.2)\r\n",
        b"\x1b[2J\x1b[01;01H\x1b[=3h\x1b[2J\x1b[01;01HBooting from ROM..",
        b"[    0.000000] Linux version 6.1.0\r\n",
        b"<3>[    1.234567][    T1] Kernel panic - not syncing: VFS: Unable to mount\r\n",
        b"[    0.104746] Info: [libukboot] <boot.c @  123> Unikraft constructor table\n",
        b"CRIT: <init> {r:0x10ab,f:0x2000} [libkvmplat] <traps.c @ 77> Unhandled Trap 13 (",
        b"general protection)\n",
        b"ERR:  [libvfscore] <mount.c @ 52> Failed to mount\n",
        b"Press Ctrl-B\rPress Ctrl-B to configure iPXE\r\n",
        b"panic: kernel diagnostic assertion failed\n",
        b" interrupt: 0e (Page fault)\n",
        b"Solo5: ABORT: mirage crashed\n",
        b"\x1b]0;title\x07visible\x1b\\\n",
        b"caf\xc3\xa9 \xc2\x9b \xff\n",
        b"unended last line",
    ]
    return [bytes([config]) + b"".join(lines) for config in range(len(MAX_LINES))] + [
        b"\x03" + line for line in lines
    ]


if __name__ == "__main__":
    fuzzlib.main(test_one_input, seeds)
