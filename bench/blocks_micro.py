"""Micro-benchmark: block summaries and the line scan, C accelerator vs pure Python.

Formats typical record lines (about --line-bytes each: a message of about 40 bytes and
three fields) once, repeats them
to --mb megabytes, then times, best of --repeat runs:

* summarize: ``blocks.summarize`` with the C path, and without it over the first
  --python-mb megabytes (it is slow);
* scan: ``scan_lines`` over every block (BLOCK_BYTES) with a rare key (one line in
  about 5,000), a common key (every line), and none; the pure-Python reference over
  --python-mb megabytes;
* grep: ``grep -c -F`` for the same keys (as spelled, and lowercased with ``-i``) on
  the same bytes in a file.

    python bench/blocks_micro.py --mb 200
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable

from umonitor.records import Kind, Origin, Record, Severity
from umonitor.store import blocks
from umonitor.store.logfile import LineFormatter

NOW = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
DISTINCT = 50_000
RARE = "Timeout"  # in one message of every 5,000
COMMON = "Request"  # in every message
FILLER = ["user=42", "from", "10.0.3.7", "agent=curl/8.5", "bytes=1532", "cache=miss", "api-2"]


def make_text(megabytes: int, line_bytes: int) -> bytes:
    formatter = LineFormatter()
    lines = []
    for seq in range(1, DISTINCT + 1):
        word = "Timeout" if seq % 5000 == 0 else "handled"
        message = f"Request {word}: GET /api/items/{seq % 1000} ok"
        # Pad the message (its grams are what costs) with words that vary.
        words = iter(FILLER[(seq * 7 + i) % len(FILLER)] for i in range(100))
        while len(message) < line_bytes - 116:
            message += " " + next(words)
        record = Record(
            seq,
            Severity(6 + seq % 2),
            message,
            Kind.LOG,
            mono_ns=seq * 1_000_017,
            file="server.c",
            line=120,
            function="handle",
            fields=(("status", "200"), ("ms", str(seq % 50)), ("path", "/api/items")),
        )
        lines.append(formatter.line(NOW + seq * 1_000_003, Origin.APP, record).encode())
    chunk = b"".join(line + b"\n" for line in lines)
    boot = b"# boot 000102030405060708090a0b0c0d0e0f lib=umonitor-c/1.0.0 peer=- name=web-1\n"
    return boot + chunk * max(1, (megabytes << 20) // len(chunk))


def head(data: bytes, megabytes: float) -> bytes:
    return data[: data.rfind(b"\n", 0, int(megabytes * (1 << 20))) + 1]


def best(repeat: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def report(label: str, data: bytes, seconds: float, base: float | None = None) -> None:
    lines = data.count(b"\n")
    speed = f"{lines / seconds:13,.0f} lines/s {len(data) / seconds / 1e6:8,.0f} MB/s"
    ratio = f"  ({base / seconds * len(data):.1f}x)" if base else ""
    print(f"  {label:28} {speed}{ratio}")


def scan_all(data: bytes, key: bytes, fast: bool) -> int:
    kept = 0
    pos = 0
    end = len(data)
    i64 = (blocks.I64_MIN, blocks.I64_MAX)
    while pos < end:
        stop = data.rfind(b"\n", pos, pos + blocks.BLOCK_BYTES) + 1 or end
        kept += len(blocks.scan_lines(data, pos, stop, *i64, 7, 7, key, fast=fast))
        pos = stop
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--python-mb", type=float, default=8)
    parser.add_argument("--line-bytes", type=int, default=150)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    data = make_text(args.mb, args.line_bytes)
    small = head(data, args.python_mb)
    lines = data.count(b"\n")
    print(f"{len(data) / 1e6:,.0f} MB, {lines:,} lines of {len(data) / lines:.0f} bytes")
    if blocks.summarize_lines is None or blocks.scan_lines_fast is None:
        print("  C path not built (pip install -e . with a C compiler)")

    print("summarize")
    py = best(1, lambda: blocks.summarize(small, 0, len(small), "", fast=False))
    report("python", small, py)
    c = best(args.repeat, lambda: blocks.summarize(data, 0, len(data), ""))
    report("c", data, c, py / len(small))

    print("scan_lines (every block)")
    keys = (("rare", blocks.search_key(RARE)), ("common", blocks.search_key(COMMON)))
    for label, key in (*keys, ("no", b"")):
        py = best(1, lambda key=key: scan_all(small, key, False))
        report(f"python, {label} key", small, py)
        c = best(args.repeat, lambda key=key: scan_all(data, key, True))
        report(f"c, {label} key", data, c, py / len(small))

    grep = shutil.which("grep")
    if grep is None:
        return
    print("grep -c -F (file in the page cache)")
    with tempfile.NamedTemporaryFile(suffix=".log", delete=False) as out:
        out.write(data)
    try:
        for label, key in (("rare", RARE), ("common", COMMON)):
            for flags in (["-c", "-F"], ["-c", "-F", "-i"]):
                text = key.lower() if "-i" in flags else key
                command = [grep, *flags, text, out.name]
                subprocess.run(command, check=True, capture_output=True)  # warm the cache
                seconds = best(
                    args.repeat, lambda c=command: subprocess.run(c, capture_output=True)
                )
                report(f"grep {' '.join(flags[1:])}, {label} key", data, seconds)
    finally:
        os.unlink(out.name)


if __name__ == "__main__":
    main()
