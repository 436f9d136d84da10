"""Micro-benchmark: log file lines to index rows, C accelerator vs ``parse_line``.

Formats typical record lines once (with and without fields), then times, best of
--repeat runs over the whole text read in --chunk byte pieces as the indexer does:

* python: ``parse_line`` on every line plus the row tuple, as ``_catch_up_file``
  builds it;
* c: ``parse_record_lines`` alone;
* c+ids: ``parse_record_lines`` plus prepending (instance_id, boot_id) to each row,
  what the indexer has to add before ``executemany``.

    python bench/index_micro.py --lines 200000
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from umonitor.records import Kind, Origin, Record, Severity
from umonitor.store.index_schema import record_row
from umonitor.store.logfile import LineFormatter, RecordLine, parse_line

try:
    from umonitor._speedups import parse_record_lines
except ImportError:
    parse_record_lines = None  # type: ignore[assignment]

NOW = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z


def make_text(count: int, with_fields: bool) -> bytes:
    formatter = LineFormatter()
    lines = [b"# boot 000102030405060708090a0b0c0d0e0f lib=umonitor-c/1.0.0 peer=- name=web-1"]
    for seq in range(1, count + 1):
        record = Record(
            seq,
            Severity(6 + seq % 2),
            f"request handled: GET /api/items/{seq % 1000} ok",
            Kind.LOG,
            mono_ns=seq * 1_000_017,
            file="server.c",
            line=120,
            function="handle",
            fields=(("status", "200"), ("ms", str(seq % 50)), ("path", "/api/items"))
            if with_fields
            else (),
        )
        lines.append(formatter.line(NOW + seq * 1_000_003, Origin.APP, record).encode())
    return b"\n".join(lines) + b"\n"


def pieces(data: bytes, chunk: int) -> list[bytes]:
    """data cut after the last newline within every ``chunk`` bytes, as read() gives it."""
    out = []
    pos = 0
    while pos < len(data):
        end = data.rfind(b"\n", pos, pos + chunk) + 1
        out.append(data[pos:end])
        pos = end
    return out


def run_python(parts: list[bytes]) -> int:
    rows: list[tuple[object, ...]] = []
    for data in parts:
        for raw in data.split(b"\n")[:-1]:
            parsed = parse_line(raw.decode("utf-8", "replace"))
            if isinstance(parsed, RecordLine):
                rows.append(record_row(parsed))
    return len(rows)


def run_c(parts: list[bytes], with_ids: bool) -> int:
    assert parse_record_lines is not None
    count = 0
    for data in parts:
        pos = 0
        end = len(data)
        while pos < end:
            pos, rows = parse_record_lines(data, pos, end)
            if with_ids:
                count += len([(1, 1, *row) for row in rows])
            else:
                count += len(rows)
            if pos < end:  # the line it left to Python: here, the boot line
                newline = data.index(b"\n", pos)
                parse_line(data[pos:newline].decode("utf-8", "replace"))
                pos = newline + 1
    return count


def best(repeat: int, fn: Callable[[], int], expected: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        done = fn()
        times.append(time.perf_counter() - start)
        assert done == expected, (done, expected)
    return min(times)


def measure(data: bytes, n: int, with_fields: bool, chunk: int, repeat: int) -> None:
    parts = pieces(data, chunk)
    label = "with fields" if with_fields else "no fields"
    print(f"{n} lines {label}, {len(data) / n:.0f} bytes per line")
    py = best(repeat, lambda: run_python(parts), n)
    print(f"  python  {n / py:12,.0f} lines/s")
    if parse_record_lines is None:
        print("  c       not built (pip install -e . with a C compiler)")
        return
    c = best(repeat, lambda: run_c(parts, False), n)
    print(f"  c       {n / c:12,.0f} lines/s  ({py / c:.1f}x)")
    ids = best(repeat, lambda: run_c(parts, True), n)
    print(f"  c+ids   {n / ids:12,.0f} lines/s  ({py / ids:.1f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--chunk", type=int, default=4 << 20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n = args.lines

    for with_fields in (False, True):
        measure(make_text(n, with_fields), n, with_fields, args.chunk, args.repeat)


if __name__ == "__main__":
    main()
