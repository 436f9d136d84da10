"""Micro-benchmark: RECORD frames to log lines, C accelerator vs the pure-Python path.

Encodes typical ~100-byte records once, then times, best of --repeat runs:

* python: ``FrameDecoder.next_events`` + ``LineFormatter.line`` with replay dedup,
  as ``Store.add_records`` does;
* c/decoder: ``FrameDecoder.take_record_run`` + ``format_records``, as the
  collector's fast path does;
* c/raw: ``format_records`` alone over the buffer.

Input arrives in --chunk byte pieces, as from a socket.

    python bench/format_micro.py --records 200000
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from umonitor.protocol import frame_codec as fc
from umonitor.records import Origin, Record, Severity
from umonitor.store.logfile import LineFormatter

try:
    from umonitor._speedups import format_records
except ImportError:
    format_records = None

NOW = time.time_ns()


def encode_stream(count: int) -> bytes:
    base = NOW - count * 1000
    frames = []
    for seq in range(1, count + 1):
        record = Record(
            seq,
            Severity(6 + seq % 2),
            f"request handled: GET /api/items/{seq % 1000} ok",
            mono_ns=seq * 1_000,
            wall_ns=base + seq * 1_000,
            file="server.c",
            line=120,
            function="handle",
            fields=(("status", "200"), ("ms", str(seq % 50))),
        )
        frames.append(fc.encode_record(record))
    return b"".join(frames)


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def run_python(pieces: list[bytes]) -> int:
    decoder = fc.FrameDecoder(fc.Peer.GUEST, expect_preface=False)
    line = LineFormatter().line
    out: list[str] = []
    high = 0
    for piece in pieces:
        decoder.receive_data(piece)
        for record in decoder.next_events():
            assert isinstance(record, Record)
            if record.seq <= high:
                continue
            high = record.seq
            wall = record.wall_ns
            out.append(line(NOW if wall is None else wall, Origin.APP, record))
    return len(out)


def run_c_decoder(pieces: list[bytes]) -> int:
    assert format_records is not None
    decoder = fc.FrameDecoder(fc.Peer.GUEST, expect_preface=False)
    out: list[str] = []
    high = 0
    count = 0

    def consume(buf: bytearray, pos: int, end: int, max_body: int) -> int:
        nonlocal high, count
        stop, text, high, taken = format_records(buf, pos, end, max_body, high, NOW)
        if text:
            out.append(text)
        count += taken
        return int(stop)

    for piece in pieces:
        decoder.receive_data(piece)
        decoder.take_record_run(consume)
        assert not decoder.next_events(limit=1)
    return count


def run_c_raw(data: bytes, chunk: int) -> int:
    assert format_records is not None
    max_body = fc.DEFAULT_MAX_FRAME - 5
    out: list[str] = []
    high = 0
    count = 0
    pos = 0
    size = len(data)
    while pos < size:
        end = min(pos + chunk, size)
        stop, text, high, taken = format_records(data, pos, end, max_body, high, NOW)
        if text:
            out.append(text)
        count += taken
        assert stop > pos, "a frame larger than --chunk"
        pos = stop
    return count


def best(repeat: int, fn: Callable[[], int], expected: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        done = fn()
        times.append(time.perf_counter() - start)
        assert done == expected, (done, expected)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--chunk", type=int, default=65_536)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    data = encode_stream(args.records)
    pieces = chunks(data, args.chunk)
    n = args.records
    print(f"{n} records, {len(data) / n:.0f} bytes per frame, {args.chunk}-byte chunks")
    py = best(args.repeat, lambda: run_python(pieces), n)
    print(f"python     {n / py:12,.0f} records/s")
    if format_records is None:
        print("c          not built (pip install -e . with a C compiler)")
        return
    dec = best(args.repeat, lambda: run_c_decoder(pieces), n)
    print(f"c/decoder  {n / dec:12,.0f} records/s  ({py / dec:.1f}x)")
    raw = best(args.repeat, lambda: run_c_raw(data, args.chunk), n)
    print(f"c/raw      {n / raw:12,.0f} records/s  ({py / raw:.1f}x)")


if __name__ == "__main__":
    main()
