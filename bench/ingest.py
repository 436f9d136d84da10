"""Ingest benchmark: N guests x M records over TCP into a real collector.

Starts ``umonitor serve`` in a subprocess on a fresh data directory, drives it with N
native-protocol connections (pre-encoded ~100-byte records, at most --window bytes
unacknowledged per connection, as a guest's ring buffer would), and prints records/s,
ACK latency percentiles, the collector's and indexer's peak RSS, and how long the index
took to catch up. Then it checks every instance's log file: every sequence number
exactly once, in order.

    python bench/ingest.py --guests 8 --records 250000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from procstat import status_kib

from umonitor.protocol import frame_codec as fc
from umonitor.records import Record, Severity

MESSAGE = (
    "request handled: GET /api/v1/items/4711 status=200 bytes=5120 "
    "elapsed_ms=12 worker=3 cache=hit ok!!!"
)


def start_serve(
    data: Path, *options: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], int]:
    """``umonitor serve`` into ``data`` on loopback (no UDP) with ``options``: the
    process and its native TCP port."""
    serve = subprocess.Popen(
        [sys.executable, "-m", "umonitor", "serve", "--data", str(data), "-l", "127.0.0.1:0",
         "--no-udp", *options],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )  # fmt: skip
    assert serve.stderr is not None
    ready, match = "", None
    for _ in range(5):  # a warning (a data directory narrowed, say) may come first
        ready = serve.stderr.readline()
        match = re.search(r"tcp://127\.0\.0\.1:(\d+)", ready)
        if match or not ready:
            break
    if match is None:
        serve.kill()
        raise SystemExit(f"collector did not start: {ready}")
    return serve, int(match.group(1))


def encode_stream(name: str, count: int) -> tuple[bytes, list[int]]:
    """The whole byte stream of one guest, and the end offset of every record."""
    parts = [fc.PREFACE, fc.encode_hello(fc.Hello(name, os.urandom(16), b"", "bench/1"))]
    ends = []
    size = len(parts[0]) + len(parts[1])
    base = time.time_ns()
    for seq in range(1, count + 1):
        frame = fc.encode_record(
            Record(
                seq,
                Severity(seq % 8),
                MESSAGE,
                mono_ns=seq * 1000,
                wall_ns=base + seq * 1000,
                file="bench.c",
                line=42,
                function="handle",
            )
        )
        parts.append(frame)
        size += len(frame)
        ends.append(size)
    return b"".join(parts), ends


async def guest(
    host: str, port: int, stream: bytes, ends: list[int], window: int, latencies: list[float]
) -> tuple[int, float]:
    reader, writer = await asyncio.open_connection(host, port)
    decoder = fc.FrameDecoder(fc.Peer.HOST, expect_preface=False)
    count = len(ends)
    acked = 0
    sent_upto = 0  # bytes
    sent_seq = 0
    pending: list[tuple[int, float]] = []  # (seq, time sent)
    chunk = 64 * 1024
    done = asyncio.Event()

    async def read_acks() -> None:
        nonlocal acked
        while acked < count:
            data = await reader.read(65536)
            if not data:
                raise ConnectionError("collector closed the connection")
            decoder.receive_data(data)
            now = time.perf_counter()
            for event in decoder.next_events():
                if isinstance(event, fc.Ack):
                    acked = max(acked, event.seq)
            while pending and pending[0][0] <= acked:
                latencies.append(now - pending.pop(0)[1])
            done.set()

    task = asyncio.get_running_loop().create_task(read_acks())
    ack_offset = 0
    while sent_upto < len(stream):
        ack_offset = ends[acked - 1] if acked else 0
        if sent_upto - ack_offset >= window:
            done.clear()
            await done.wait()
            continue
        stop = min(len(stream), sent_upto + chunk, ack_offset + window)
        # Cut at a record boundary so latency is per whole record.
        lo, hi = sent_seq, count
        while lo < hi:
            mid = (lo + hi) // 2
            if ends[mid] <= stop:
                lo = mid + 1
            else:
                hi = mid
        if lo == sent_seq:
            lo = sent_seq + 1
        stop = ends[lo - 1]
        writer.write(stream[sent_upto:stop])
        pending.append((lo, time.perf_counter()))
        sent_upto, sent_seq = stop, lo
        await writer.drain()
    await task
    writer.close()
    return acked, time.perf_counter()


def child_pids(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def check_files(data: Path, names: list[str], count: int) -> int:
    """Every instance file holds seq 1..count once, in order; returns records seen."""
    total = 0
    for name in names:
        expected = 1
        for line in (data / "instances" / name / "app.log").read_text().splitlines():
            if line.startswith("#"):
                continue
            seq = int(line.split(" ", 4)[3])
            if seq != expected:
                raise SystemExit(f"{name}: expected seq {expected}, found {seq}")
            expected += 1
        if expected - 1 != count:
            raise SystemExit(f"{name}: {expected - 1} records on disk, sent {count}")
        total += count
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guests", type=int, default=8)
    parser.add_argument("--records", type=int, default=250_000, help="per guest")
    parser.add_argument("--window", type=int, default=4 << 20, help="unacked bytes per guest")
    parser.add_argument("--fsync", default="batch", choices=["always", "batch", "never"])
    parser.add_argument("--json", action="store_true", help="print one JSON line as well")
    parser.add_argument(
        "--pure-python", action="store_true", help="collector without its C accelerator"
    )
    args = parser.parse_args()

    names = [f"bench-{i}" for i in range(args.guests)]
    streams = [encode_stream(name, args.records) for name in names]
    record_bytes = (len(streams[0][0]) - streams[0][1][0]) / max(1, args.records - 1)
    with tempfile.TemporaryDirectory(prefix="umon-bench-") as tmp:
        data = Path(tmp)
        env = dict(os.environ)
        if args.pure_python:
            env["UMONITOR_PURE_PYTHON"] = "1"
        serve, port = start_serve(data, "--fsync", args.fsync, env=env)
        latencies: list[float] = []

        async def run_all() -> list[tuple[int, float]]:
            return await asyncio.gather(
                *(
                    guest("127.0.0.1", port, stream, ends, args.window, latencies)
                    for stream, ends in streams
                )
            )

        start = time.perf_counter()
        results = asyncio.run(run_all())
        end = max(t for _, t in results)
        total = sum(a for a, _ in results)
        elapsed = end - start
        rss_collector = status_kib(serve.pid)
        indexer = child_pids(serve.pid)
        db = sqlite3.connect(data / "index.sqlite")
        index_start = time.perf_counter()
        indexed = 0
        while time.perf_counter() - index_start < 600:
            try:
                indexed = db.execute("SELECT coalesce(sum(records), 0) FROM blocks").fetchone()[0]
            except sqlite3.Error:
                indexed = 0
            if indexed >= total:
                break
            time.sleep(0.1)
        index_done = time.perf_counter() - start
        rss_indexer = max((status_kib(p) for p in indexer), default=0)
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=120)
        on_disk = check_files(data, names, args.records)

    lat = sorted(latencies)
    p50 = statistics.median(lat) * 1000 if lat else 0.0
    p99 = lat[int(len(lat) * 0.99) - 1] * 1000 if lat else 0.0
    figures = {
        "guests": args.guests,
        "records": total,
        "record_bytes": round(record_bytes, 1),
        "seconds": round(elapsed, 3),
        "records_per_s": round(total / elapsed),
        "ack_p50_ms": round(p50, 2),
        "ack_p99_ms": round(p99, 2),
        "collector_peak_rss_mib": round(rss_collector / 1024, 1),
        "indexer_peak_rss_mib": round(rss_indexer / 1024, 1),
        "indexed": indexed,
        "index_caught_up_s": round(index_done, 2),
        "on_disk_checked": on_disk,
        "lost": args.guests * args.records - on_disk,
        "fsync": args.fsync,
        "pure_python": args.pure_python,
    }
    print(
        f"ingest{' (pure Python collector)' if args.pure_python else ''}: "
        f"{args.guests} guests x {args.records} records "
        f"({record_bytes:.0f} B frames, fsync={args.fsync})"
    )
    print(f"  acked:    {total} records in {elapsed:.2f} s = {total / elapsed:,.0f} records/s")
    print(f"  ack latency: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    print(
        f"  peak RSS: collector {rss_collector / 1024:.1f} MiB, "
        f"indexer {rss_indexer / 1024:.1f} MiB"
    )
    print(
        f"  index: {indexed} records indexed {index_done:.2f} s after start "
        f"({indexed / index_done:,.0f} records/s)"
    )
    print(
        f"  files: {on_disk} records checked, every seq once and in order; lost {figures['lost']}"
    )
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
