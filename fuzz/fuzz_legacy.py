"""Fuzz target: the original Umonitor format (docs/protocol.md §4), ``LegacyDecoder``.

Input: one configuration byte (``max_line``), then the stream.

Checks: nothing raises; whole, in random chunks, in small chunks and byte by byte
the stream gives the same records (severity, kind, message, numbering from 1);
after ``next_events`` the decoder holds less than ``max_line`` bytes and after
``end_of_stream`` none; no message holds LF or NUL; a record's level is one of the
four the format has, or info.
"""

from __future__ import annotations

import atheris
import fuzzlib

with atheris.instrument_imports(include=["umonitor"]):
    from umonitor.protocol.legacy import LEVEL_BYTES, LegacyDecoder
    from umonitor.records import Kind, Record, Severity

MAX_LINES = (1, 2, 7, 64, 65536)
LEVELS = {*LEVEL_BYTES.values(), (Severity.INFO, Kind.LOG)}


def check_records(records: list[Record]) -> None:
    fuzzlib.check_numbered(records)
    for record in records:
        fuzzlib.check("\n" not in record.message, "a message holds LF")
        fuzzlib.check("\0" not in record.message, "a message holds NUL")
        fuzzlib.check((record.severity, record.kind) in LEVELS, "unknown level")


def test_one_input(data: bytes) -> None:
    fuzzlib.check_line_stream(data, MAX_LINES, lambda n: LegacyDecoder(max_line=n), check_records)


def seeds() -> list[bytes]:
    messages = [
        b"mLoaded module\n",
        b"wLow memory\0",
        b"fFailed to open\r\n",
        b"r42\n",
        b"xunknown level\n",
        b"m\n\0\r\n",
        b"m\xc3\xa9t\xc3\xa9\n",
        b"munterminated",
    ]
    return [bytes([config]) + b"".join(messages) for config in range(len(MAX_LINES))] + [
        b"\x03" + m for m in messages
    ]


if __name__ == "__main__":
    fuzzlib.main(test_one_input, seeds)
