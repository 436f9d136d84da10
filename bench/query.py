"""The reading side, side by side with its anchors: one instance, N records, one run.

Starts ``umonitor serve`` (with its index helper, as by default) in a subprocess on a
fresh data directory, keeping every rotated file (``--retain-files 0``), and sends N
records to ONE instance over --guests native-protocol connections at full speed
(bench/ingest.py's pre-encoded streams and sender). Each message is ~100 bytes of
varied words with its number in the text (``seq: 0000123456``); every 10,000th
record is at severity err, the rest info; four records carry one RARE token and every
record the COMMON word. The records carry no guest wall time, so the collector stamps
each with the time it arrived: the files' order is the records' time order, and
``logs -n 20`` and ``tail -n 20`` must show the same records.

Then, with the guests done:

* index: the time from the last ACK until the index holds every record, polled every
  0.1 s over a separate read-only SQLite connection (the records its block summaries
  count), which does not index anything itself;
  records/s indexed = records / (ingest start .. index complete), beside the ingest
  rate (records acknowledged / ingest time).
* queries: the real CLI as a user runs it (``python -m umonitor logs NAME ... --data
  DIR``, the whole subprocess's wall time, including Python's start-up), one warm-up
  then --repeat runs; median and max, beside an anchor on the instance's log files run
  the same way (GNU tail, grep, awk with ``LC_ALL=C``, over every generation oldest
  first), and a check that both answered the same. First, the start-up every command
  pays (``umonitor --version``) beside the interpreter's (``python -c pass``). The
  CLI runs with its compiled modules cached, as installed (``PYTHONDONTWRITEBYTECODE``
  is left out of its environment).
* ``logs -f``: ``umonitor logs NAME -f -o json`` runs while 200 more records are sent
  one at a time on a new connection, each with a unique message; the latency of each
  is from its ACK arriving to its line appearing on the follower's stdout.
* sizes of the instance's log files and of the index (``index.sqlite`` with its
  ``-wal`` and ``-shm``), and the collector's and indexer's peak RSS (VmHWM).

    python bench/query.py --records 10000000 --guests 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from pathlib import Path

from ingest import child_pids, guest, start_serve
from procstat import status_kib

from umonitor.protocol import frame_codec as fc
from umonitor.records import Record, Severity
from umonitor.store import segments

NAME = "query-bench"
RARE = "zqvoxrare"
COMMON = "request"
ERR_EVERY = 10_000
WORDS = [
    "alpha",
    "bravo",
    "cache",
    "commit",
    "disk",
    "entry",
    "fetch",
    "group",
    "heap",
    "index",
    "journal",
    "kernel",
    "lookup",
    "merge",
    "node",
    "offset",
    "page",
    "queue",
    "route",
    "shard",
    "table",
    "update",
    "vector",
    "window",
    "yield",
    "zone",
    "accept",
    "buffer",
    "client",
    "daemon",
    "event",
    "frame",
    "gateway",
    "handler",
    "inode",
    "lease",
    "mount",
    "packet",
]
SEQ = re.compile(r"seq: (\d{10})")


def message(seq: int, rng: random.Random, rare: bool) -> str:
    words = " ".join(rng.choices(WORDS, k=9))
    text = f"seq: {seq:010d} {COMMON} {words} id={rng.randrange(1 << 32):08x}"
    if rare:
        text += f" {RARE}"
    return text


def encode_guest(index: int, guests: int, total: int, rare: set[int]) -> tuple[bytes, array[int]]:
    """Guest ``index`` sends global seq index+1, index+1+guests, ...; its byte stream."""
    rng = random.Random(index)
    hello = fc.encode_hello(fc.Hello(NAME, os.urandom(16), b"", "bench/1"))
    parts = [fc.PREFACE, hello]
    size = len(fc.PREFACE) + len(hello)
    ends = array("q")
    for own, seq in enumerate(range(index + 1, total + 1, guests), 1):
        frame = fc.encode_record(
            Record(
                own,
                Severity.ERR if seq % ERR_EVERY == 0 else Severity.INFO,
                message(seq, rng, seq in rare),
                mono_ns=seq * 1000,
                file="bench.c",
                line=42,
                function="handle",
            )
        )
        parts.append(frame)
        size += len(frame)
        ends.append(size)
    return b"".join(parts), ends


def log_files(data: Path) -> list[Path]:
    """Every log file of the instance, rotated generations oldest first, then live."""
    folder = data / "instances" / NAME
    rotated: list[tuple[str, int, Path]] = []
    live: list[Path] = []
    for path in folder.iterdir():
        parsed = segments.rotated_name(path.name)
        if parsed is not None:
            rotated.append((parsed[0], parsed[1], path))
        elif path.name in ("app.log", "console.log", "syslog.log"):
            live.append(path)
    return [p for _, _, p in sorted(rotated)] + sorted(live)


def time_of_last(files: list[str], n: int) -> str:
    """The time of the ``n``th record line from the end of the files, as written."""
    lines: list[bytes] = []
    for name in reversed(files):
        data = Path(name).read_bytes()[-(n * 400) :]
        lines = [x for x in data.splitlines()[1:] if x and not x.startswith(b"#")] + lines
        if len(lines) >= n:
            break
    return lines[-n].split(b" ", 1)[0].decode()


def seqs(text: str) -> list[int]:
    return [int(m) for m in SEQ.findall(text)]


# The CLI as installed: Python's compiled modules cached (pip writes them at install;
# an environment with PYTHONDONTWRITEBYTECODE would compile every module every run).
CLI_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env or CLI_ENV, check=False)
    took = time.perf_counter() - start
    if done.returncode not in ((0, 1) if env else (0,)):  # the anchors' grep: 1 = no match
        raise SystemExit(f"{argv[:6]} failed ({done.returncode}): {done.stderr[-500:]}")
    return took, done.stdout


def wait_index(db_path: Path, total: int, timeout: float) -> tuple[float, int]:
    """When (perf_counter) the index first held ``total`` records, read-only polling."""
    deadline = time.perf_counter() + timeout
    while not db_path.exists() and time.perf_counter() < deadline:
        time.sleep(0.05)  # the indexer makes it on its first round
    conn = sqlite3.connect(f"{db_path.absolute().as_uri()}?mode=ro", uri=True)
    try:
        while time.perf_counter() < deadline:
            try:
                held = conn.execute("SELECT coalesce(sum(records), 0) FROM blocks").fetchone()[0]
            except sqlite3.Error:
                held = 0
            if held >= total:
                return time.perf_counter(), int(held)
            time.sleep(0.1)
    finally:
        conn.close()
    raise SystemExit(f"the index did not reach {total} records in {timeout:.0f} s")


def follow_latency(port: int, data: Path, count: int, base_seq: int) -> list[float]:
    """ACK-to-stdout latency of ``count`` records sent one at a time to ``logs -f``."""
    follower = subprocess.Popen(
        [sys.executable, "-m", "umonitor", "logs", NAME, "-f", "-o", "json", "--data", str(data)],
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    assert follower.stdout is not None
    seen: dict[int, float] = {}
    lock = threading.Condition()

    def reader() -> None:
        assert follower.stdout is not None
        for line in follower.stdout:
            now = time.perf_counter()
            match = re.search(r"follow (\d+) sent=", line)
            with lock:
                if match:
                    seen[int(match.group(1))] = now
                else:
                    seen.setdefault(-1, now)  # the last 10 it starts with
                lock.notify_all()

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    with lock:  # it has printed its first lines: it is following
        if not lock.wait_for(lambda: -1 in seen, timeout=120):
            raise SystemExit("logs -f printed nothing")
    sock = socket.create_connection(("127.0.0.1", port))
    decoder = fc.FrameDecoder(fc.Peer.HOST, expect_preface=False)
    hello = fc.encode_hello(fc.Hello(NAME, os.urandom(16), b"", "bench/1"))
    sock.sendall(fc.PREFACE + hello)
    acked_at: dict[int, float] = {}
    for i in range(1, count + 1):
        sent = time.time_ns()
        text = f"seq: {base_seq + i:010d} follow {i} sent={sent} {COMMON}"
        sock.sendall(
            fc.encode_record(
                Record(i, Severity.INFO, text, mono_ns=i, wall_ns=sent, file="bench.c", line=1)
            )
        )
        acked = 0
        while acked < i:
            data_in = sock.recv(65536)
            if not data_in:
                raise SystemExit("collector closed the follow connection")
            decoder.receive_data(data_in)
            for event in decoder.next_events():
                if isinstance(event, fc.Ack):
                    acked = max(acked, event.seq)
        acked_at[i] = time.perf_counter()
        time.sleep(0.01)
    with lock:
        lock.wait_for(lambda: all(i in seen for i in acked_at), timeout=30)
    sock.close()
    follower.send_signal(signal.SIGINT)
    try:
        follower.wait(timeout=10)
    except subprocess.TimeoutExpired:
        follower.kill()
        follower.wait()
    missing = [i for i in acked_at if i not in seen]
    if missing:
        raise SystemExit(f"logs -f never showed {len(missing)} of {count} records")
    return sorted(seen[i] - acked_at[i] for i in acked_at)


def mib(n: float) -> str:
    return f"{n / (1 << 20):,.1f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000, help="in all, one instance")
    parser.add_argument("--guests", type=int, default=4, help="connections sending them")
    parser.add_argument("--window", type=int, default=4 << 20, help="unacked bytes per guest")
    parser.add_argument("--rotate-size", default="64MiB", help="the collector's --rotate-size")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per query")
    parser.add_argument("--follow", type=int, default=200, help="records for the logs -f test")
    parser.add_argument("--data", type=Path, help="data directory (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    parser.add_argument("--json", action="store_true", help="print one JSON line as well")
    args = parser.parse_args()

    total, guests = args.records, args.guests
    rng = random.Random(7)
    rare = set(rng.sample(range(1, total + 1), 4))
    t0 = time.perf_counter()
    streams = [encode_guest(g, guests, total, rare) for g in range(guests)]
    print(f"encoded {total:,} records for {guests} guests in {time.perf_counter() - t0:.1f} s")

    if args.data:
        args.data.mkdir(parents=True, exist_ok=False)
        data = args.data
    else:
        data = Path(tempfile.mkdtemp(prefix="umon-query-"))
    serve, port = start_serve(data, "--retain-files", "0", "--rotate-size", args.rotate_size)
    try:
        run(args, data, serve, port, streams)
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(timeout=120)
        except subprocess.TimeoutExpired:
            serve.kill()
        if not args.keep:
            shutil.rmtree(data, ignore_errors=True)
        else:
            print(f"data kept in {data}")


def run(
    args: argparse.Namespace,
    data: Path,
    serve: subprocess.Popen[str],
    port: int,
    streams: list[tuple[bytes, array[int]]],
) -> None:
    total = args.records
    latencies: list[float] = []

    async def run_all() -> list[tuple[int, float]]:
        return await asyncio.gather(
            *(guest("127.0.0.1", port, s, e, args.window, latencies) for s, e in streams)  # type: ignore[arg-type]
        )

    start = time.perf_counter()
    results = asyncio.run(run_all())
    last_ack = max(t for _, t in results)
    acked = sum(a for a, _ in results)
    streams.clear()
    if acked != total:
        raise SystemExit(f"acknowledged {acked} of {total}")
    ingest_s = last_ack - start
    indexers = child_pids(serve.pid)
    index_at, indexed = wait_index(data / "index.sqlite", total, 3600)
    index_lag = index_at - last_ack
    index_s = index_at - start
    rss_indexer = max((status_kib(p) for p in indexers), default=0)
    print(
        f"ingest: {total:,} records to one instance over {args.guests} connections in "
        f"{ingest_s:.2f} s = {total / ingest_s:,.0f} records/s acked"
    )
    print(
        f"index: complete {index_lag:.2f} s after the last ACK ({index_s:.2f} s after the "
        f"start) = {indexed / index_s:,.0f} records/s indexed "
        "(read-only polling of the records the block summaries count, 0.1 s)"
    )

    files = [str(p) for p in log_files(data)]
    live = str(data / "instances" / NAME / "app.log")
    cli = [sys.executable, "-m", "umonitor"]
    dd = ["--data", str(data)]
    c_env = dict(os.environ, LC_ALL="C")
    since_iso = time_of_last(files, 5000)  # the 5,000th record from the end
    since_prefix = since_iso[:-1]  # log lines' times: 2026-11-26T13:44:35.123456Z
    n_err = total // ERR_EVERY
    files_sh = " ".join(files)

    def sh(script: str) -> list[str]:
        return ["sh", "-c", script]

    # (label, umonitor argv, anchor label, anchor argv, check(umon_out, anchor_out))
    def same_tail(u: str, a: str) -> tuple[bool, str]:
        us, as_ = seqs(u), seqs(a)
        ok = us == as_ and len(us) > 0
        return ok, f"{len(us)} / {len(as_)} records, same seqs: {us == as_}"

    def same_count(u: str, a: str) -> tuple[bool, str]:
        un = len(seqs(u))
        an = sum(int(x) for x in a.split())
        return un == an == 4, f"{un} / {an} hits"

    def ls_check(u: str, a: str) -> tuple[bool, str]:
        row = next((json.loads(x) for x in u.splitlines() if f'"{NAME}"' in x), {})
        an = sum(int(x) for x in a.split())
        ok = row.get("records") == an
        return ok, f"{row.get('records')} / {an} records"

    def started(u: str, a: str) -> tuple[bool, str]:
        return "umonitor" in u and not a, "printed its version"

    queries = [
        (
            "umonitor --version (start-up)",
            [*cli, "--version"],
            "python -c pass (the interpreter)",
            [sys.executable, "-c", "pass"],
            started,
        ),
        (
            "logs NAME -n 20",
            [*cli, "logs", NAME, "-n", "20", *dd],
            "tail -n 20 app.log",
            ["tail", "-n", "20", live],
            same_tail,
        ),
        (
            f"logs NAME --grep {RARE}",
            [*cli, "logs", NAME, "--grep", RARE, *dd],
            "grep -c -F RARE (all files)",
            ["grep", "-c", "-h", "-F", RARE, *files],
            same_count,
        ),
        (
            f"logs NAME --grep {COMMON} -n 10",
            [*cli, "logs", NAME, "--grep", COMMON, "-n", "10", *dd],
            "grep -h -F COMMON | tail -n 10",
            sh(f"grep -h -F {COMMON} {files_sh} | tail -n 10"),
            same_tail,
        ),
        (
            "logs NAME --since T -n 20",
            [*cli, "logs", NAME, "--since", since_iso, "-n", "20", *dd],
            "awk '$1 >= T' | tail -n 20",
            sh(f"awk '$1 >= \"{since_prefix}\"' {files_sh} | tail -n 20"),
            same_tail,
        ),
        (
            "logs NAME -p err -n 20",
            [*cli, "logs", NAME, "-p", "err", "-n", "20", *dd],
            "grep -E ' (emerg..err) ' | tail -n 20",
            sh(f"grep -h -E '^[^ #]+ (emerg|alert|crit|err) ' {files_sh} | tail -n 20"),
            same_tail,
        ),
        (
            "ls (-o json)",
            [*cli, "ls", "-o", "json", *dd],
            "grep -c -v '^#' (all files)",
            ["grep", "-c", "-h", "-v", "^#", *files],
            ls_check,
        ),
    ]
    rows = []
    checks = []
    for label, u_argv, a_label, a_argv, check in queries:
        u_times, a_times = [], []
        u_out = a_out = ""
        for i in range(args.repeat + 1):  # run 0 is the warm-up
            tu, u_out = timed(u_argv)
            ta, a_out = timed(a_argv, c_env)
            if i:
                u_times.append(tu)
                a_times.append(ta)
        ok, detail = check(u_out, a_out)
        rows.append((label, u_times, a_label, a_times))
        checks.append((label, ok, detail))
    print(
        f"\nqueries: whole subprocess wall time, {args.repeat} runs after one warm-up "
        f"(--since {since_iso}: the 5,000th record from the end; -p err: {n_err:,} records)"
    )
    table = [("query", "umonitor median", "max", "anchor", "anchor median", "max", "ratio")]
    for label, ut, a_label, at in rows:
        um, am = statistics.median(ut), statistics.median(at)
        table.append(
            (
                label,
                f"{um * 1000:,.0f} ms",
                f"{max(ut) * 1000:,.0f} ms",
                a_label,
                f"{am * 1000:,.1f} ms",
                f"{max(at) * 1000:,.1f} ms",
                f"{um / am:,.1f}",
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for r in table:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    print("\ncorrectness (umonitor / anchor):")
    for label, ok, detail in checks:
        print(f"  {'ok  ' if ok else 'DIFF'} {label}: {detail}")

    lat = follow_latency(port, data, args.follow, total)
    p50 = statistics.median(lat) * 1000
    p99 = lat[max(0, int(len(lat) * 0.99) - 1)] * 1000
    print(
        f"\nlogs -f: {len(lat)} records sent one at a time; ACK to the follower's stdout "
        f"p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {lat[-1] * 1000:.0f} ms"
    )

    log_bytes = sum(Path(f).stat().st_size for f in files)
    index_bytes = sum(
        p.stat().st_size
        for p in (data / "index.sqlite", data / "index.sqlite-wal", data / "index.sqlite-shm")
        if p.exists()
    )
    rss_collector = status_kib(serve.pid)
    rss_indexer = max([rss_indexer, *(status_kib(p) for p in indexers)])
    print(
        f"sizes: log files {mib(log_bytes)} in {len(files)} files, index {mib(index_bytes)} "
        f"(with -wal/-shm), index / logs = {index_bytes / log_bytes:.2f}"
    )
    print(
        f"peak RSS: collector {rss_collector / 1024:.1f} MiB, indexer {rss_indexer / 1024:.1f} MiB"
    )
    if args.json:
        print(
            json.dumps(
                {
                    "records": total,
                    "guests": args.guests,
                    "ingest_records_per_s": round(total / ingest_s),
                    "index_after_last_ack_s": round(index_lag, 2),
                    "index_records_per_s": round(indexed / index_s),
                    "queries": {
                        label: {
                            "umonitor_median_s": round(statistics.median(ut), 4),
                            "umonitor_max_s": round(max(ut), 4),
                            "anchor": a_label,
                            "anchor_median_s": round(statistics.median(at), 4),
                            "anchor_max_s": round(max(at), 4),
                        }
                        for label, ut, a_label, at in rows
                    },
                    "checks_ok": all(ok for _, ok, _ in checks),
                    "follow_p50_ms": round(p50, 1),
                    "follow_p99_ms": round(p99, 1),
                    "log_bytes": log_bytes,
                    "index_bytes": index_bytes,
                    "collector_peak_rss_kib": rss_collector,
                    "indexer_peak_rss_kib": rss_indexer,
                }
            )
        )


if __name__ == "__main__":
    main()
