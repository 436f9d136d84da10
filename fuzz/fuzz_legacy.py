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


def feed(chunks: list[bytes], max_line: int) -> list[Record]:
    decoder = LegacyDecoder(max_line=max_line)
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
                fuzzlib.check("\n" not in record.message, "a message holds LF")
                fuzzlib.check("\0" not in record.message, "a message holds NUL")
                fuzzlib.check((record.severity, record.kind) in LEVELS, "unknown level")
        else:
            fuzzlib.check(records == whole, "chunking changed the records")


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
