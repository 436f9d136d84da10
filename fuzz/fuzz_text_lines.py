"""Fuzz target: plain text lines (docs/protocol.md §5), ``LineDecoder``.

Input: one configuration byte (``max_line``), then the stream.

Checks: nothing raises; whole, in random chunks, in small chunks and byte by byte
the stream gives the same records (severity, message, kind, numbering from 1);
after ``next_events`` the decoder holds less than ``max_line`` bytes and after
``end_of_stream`` none; no message holds a newline; the level prefix, when one is
found, ends inside the line.
"""

from __future__ import annotations

import atheris
import fuzzlib

with atheris.instrument_imports(include=["umonitor"]):
    from umonitor.protocol.text_lines import LineDecoder, level_prefix_untrusted
    from umonitor.records import Record

MAX_LINES = (1, 2, 7, 12, 64, 65536)


def check_records(records: list[Record]) -> None:
    fuzzlib.check_numbered(records)
    for record in records:
        fuzzlib.check("\n" not in record.message, "a message holds a newline")


def test_one_input(data: bytes) -> None:
    stream = data[1:]
    found = level_prefix_untrusted(stream)
    if found is not None:
        fuzzlib.check(0 < found[1] <= len(stream), "level prefix ends outside the line")
    fuzzlib.check_line_stream(data, MAX_LINES, lambda n: LineDecoder(max_line=n), check_records)


def seeds() -> list[bytes]:
    lines = [
        b"hello world\n",
        b"ERROR: disk full\r\n",
        b"warn:\tcareful\n",
        b"Emergency: down\n",
        b"trace: deep\n",
        b"info:no space\n",
        b"\n\r\n\0\n",
        "caf\u00e9 \u2603\n".encode(),
        b"\xff\xfe broken utf-8\n",
        b"unterminated",
    ]
    return [bytes([config]) + b"".join(lines) for config in range(len(MAX_LINES))] + [
        b"\x02" + line for line in lines
    ]


if __name__ == "__main__":
    fuzzlib.main(test_one_input, seeds)
