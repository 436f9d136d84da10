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


def feed(chunks: list[bytes], max_line: int) -> list[Record]:
    decoder = LineDecoder(max_line=max_line)
    records: list[Record] = []
    for chunk in chunks:
        decoder.receive_data(chunk)
        records += decoder.next_events()
        fuzzlib.check(decoder.buffered < max_line, f"holds {decoder.buffered} of {max_line}")
    records += decoder.end_of_stream()
    fuzzlib.check(decoder.buffered == 0, "end_of_stream left bytes behind")
    return records


def test_one_input(data: bytes) -> None:
    if not data:
        return
    max_line = MAX_LINES[data[0] % len(MAX_LINES)]
    stream = data[1:]
    found = level_prefix_untrusted(stream)
    if found is not None:
        fuzzlib.check(0 < found[1] <= len(stream), "level prefix ends outside the line")
    rng = fuzzlib.rng_for(data)
    whole = None
    for chunks in fuzzlib.chunkings(stream, rng):
        records = feed(chunks, max_line)
        if whole is None:
            whole = records
            fuzzlib.check(
                [r.seq for r in records] == list(range(1, len(records) + 1)),
                "records are not numbered from 1",
            )
            for record in records:
                fuzzlib.check("\n" not in record.message, "a message holds a newline")
        else:
            fuzzlib.check(records == whole, "chunking changed the records")


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
