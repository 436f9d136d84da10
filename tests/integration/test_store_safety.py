"""The store under stress: reindex, SIGKILL under load, and a disk that fills up.

Real collectors (subprocesses), real Python guests (``umonitor.guest.client.Client``), real
files; the disk-full test mounts a 2 MiB tmpfs as the data directory. What is
checked is always the same: every log file parses line by line, every acknowledged
record is in the files exactly once, and the index says exactly what the files say.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from tests.integration.conftest import (
    Collector,
    free_port,
    start_collector,
    umonitor,
    wait_for,
)
from tests.integration.test_otlp_http import OtlpServer
from umonitor.guest.client import Client
from umonitor.records import Severity
from umonitor.store import segments
from umonitor.store.logfile import BootLine, DroppedLine, RecordLine, parse_line

# -- what the files say ---------------------------------------------------------------


def file_records(data: Path, name: str) -> list[tuple[str, int, int, str]]:
    """(boot, seq, severity, message) of every record of ``name``, oldest file first.

    Fails on any line that does not parse, or a file that does not end with a newline.
    """
    out = []
    for seg in segments.list_segments(data / "instances" / name):
        boot = ""
        raw = seg.path.read_bytes()
        assert raw.endswith(b"\n"), f"{seg.path} ends in a torn line"
        for line in raw[:-1].split(b"\n"):
            parsed = parse_line(line.decode())  # raises LineError on a bad line
            if isinstance(parsed, BootLine):
                boot = parsed.boot
            elif isinstance(parsed, RecordLine):
                rec = parsed.record
                out.append((boot, rec.seq, int(rec.severity), rec.message))
            else:
                assert parsed is None or isinstance(parsed, DroppedLine), line
    return out


def instances(data: Path) -> list[str]:
    return sorted(p.name for p in (data / "instances").iterdir() if p.is_dir())


def assert_index_matches_files(data: Path) -> int:
    """What ``ls`` counts and ``logs`` shows must be exactly what the files hold."""
    out = umonitor("ls", "-o", "json", "--data", str(data))
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in map(json.loads, out.stdout.splitlines()) if "name" in r}
    conn = sqlite3.connect(data / "index.sqlite")
    total = 0
    try:
        bad = conn.execute("SELECT coalesce(sum(bad), 0) FROM blocks").fetchone()
        assert bad == (0,)
    finally:
        conn.close()
    for name in instances(data):
        files = file_records(data, name)
        total += len(files)
        per_severity = Counter(sev for _, _, sev, _ in files)
        assert rows[name]["records"] == len(files)
        assert list(rows[name]["counts"].values()) == [per_severity[i] for i in range(8)]
        shown = umonitor("logs", name, "-o", "json", "--data", str(data))
        assert shown.returncode == 0, shown.stderr
        pairs = [(r["boot"], r["seq"]) for r in map(json.loads, shown.stdout.splitlines())]
        assert sorted(pairs) == sorted((boot, seq) for boot, seq, _, _ in files)
    return total


# -- guests that run in their own processes ---------------------------------------------


def message(name: str, seq: int) -> str:
    words = ("request served", "disk error on sda", "cache miss", "user login", "timeout")
    return f"{name} {seq} {words[seq % len(words)]}{seq % 3} " + "z" * (seq % 97)


GUEST = f"""
import random, sys, time
from pathlib import Path
from tests.integration.test_otlp_http import OtlpServer
from umonitor.guest.client import Client
from umonitor.records import Severity

{inspect.getsource(message)}

port, name, acked_path, stop = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
limit, pace = int(sys.argv[5]), float(sys.argv[6])
client = Client("127.0.0.1", port, name, capacity=10**7)
rng = random.Random(name)
with open(acked_path, "a") as acked:
    while not stop.exists() and client.session.seq < limit:
        for _ in range(min(rng.randint(20, 300), limit - client.session.seq)):
            seq = client.session.seq + 1
            client.log(Severity(seq % 8), message(name, seq), fields={{"n": seq}})
        if client.flush(0.2):  # True: every record so far is acknowledged
            acked.write(f"{{client.session.acked}}\\n")
            acked.flush()
        time.sleep(pace)
    ok = client.flush(120)
    acked.write(f"final {{client.session.seq}} {{int(ok)}} {{client.session.dropped}}\\n")
"""


class Guests:
    """Guest processes logging as fast as acknowledgements let them."""

    def __init__(
        self, port: int, names: list[str], work: Path, limit: int = 10**9, pace: float = 0.0
    ) -> None:
        self.stop_file = work / "stop-guests"
        self.stop_file.unlink(missing_ok=True)
        self.names = names
        self.acked = {name: work / f"{name}.acked" for name in names}
        self.procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    GUEST,
                    str(port),
                    name,
                    str(self.acked[name]),
                    str(self.stop_file),
                    str(limit),
                    str(pace),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name in names
        ]

    def acknowledged(self, name: str) -> list[int]:
        lines = self.acked[name].read_text().splitlines() if self.acked[name].exists() else []
        return [int(line) for line in lines if not line.startswith("final")]

    def finish(self, stop: bool = True) -> dict[str, int]:
        """Stop logging (or let each reach its limit); wait for each guest's last flush.

        Returns the number of records each logged.
        """
        if stop:
            self.stop_file.touch()
        finals = {}
        for name, proc in zip(self.names, self.procs, strict=True):
            _, err = proc.communicate(timeout=180)
            assert proc.returncode == 0, err
            last = self.acked[name].read_text().splitlines()[-1].split()
            assert last[0] == "final" and last[2] == "1", f"{name} was not acknowledged"
            assert last[3] == "0", f"{name} had to drop records"
            finals[name] = int(last[1])
        return finals

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


def check_every_record_once(data: Path, finals: dict[str, int]) -> int:
    for name, last in finals.items():
        records = file_records(data, name)
        assert [seq for _, seq, _, _ in records] == list(range(1, last + 1)), name
        assert len({boot for boot, _, _, _ in records}) == 1
        for _, seq, severity, text in records:
            assert severity == seq % 8 and text == message(name, seq), (name, seq)
    return sum(finals.values())


# -- 1. reindex ---------------------------------------------------------------------------


def run_guest(port: int, name: str, count: int, work: Path) -> None:
    guests = Guests(port, [name], work, limit=count)
    assert guests.finish(stop=False) == {name: count}


QUERIES: list[tuple[str, ...]] = [
    ("logs", "-o", "json"),
    ("logs", "web", "-o", "json"),
    ("logs", "db", "cache", "-o", "json"),
    ("logs", "-p", "warning", "-o", "json"),
    ("logs", "--grep", "disk error", "-o", "json"),
    ("logs", "web", "-p", "err", "--grep", "sda1", "-o", "json"),
    ("logs", "-n", "50", "-o", "json"),
    ("logs", "--origin", "app", "-p", "notice", "-o", "json"),
]


def answers(collector: Collector, queries: list[tuple[str, ...]]) -> list[list[str]]:
    out = []
    for query in queries:
        result = collector.cli(*query)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        times = [json.loads(line)["time"] for line in lines]
        assert times == sorted(times)
        out.append(lines)
    return out


def same_answers(before: list[list[str]], after: list[list[str]]) -> None:
    """Identical, except that records of different instances with the same time may
    come in another order (they are ordered by time, then by index row)."""
    for old, new in zip(before, after, strict=True):
        assert sorted(old) == sorted(new)
        for name in {json.loads(line)["instance"] for line in old}:
            mine = [line for line in old if json.loads(line)["instance"] == name]
            assert mine == [line for line in new if json.loads(line)["instance"] == name]


def test_reindex_answers_every_query_as_before(tmp_path: Path) -> None:
    data = tmp_path / "data"
    collector = start_collector(data, "--rotate-size", "64KiB", "--retain-files", "0")
    try:
        for name, count in (("web", 3000), ("db", 1200), ("cache", 700)):
            run_guest(collector.port, name, count, tmp_path)
    finally:
        assert collector.stop() == 0
    assert len(list((data / "instances" / "web").glob("app.log.*"))) >= 3
    records = collector.records("web")
    middle = records[len(records) // 2]["time"]
    queries = [*QUERIES, ("logs", "--since", middle, "-o", "json")]
    cache = collector.records("cache")
    since, until = cache[100]["time"], cache[-100]["time"]
    queries.append(("logs", "cache", "--since", since, "--until", until, "-o", "json"))
    before = answers(collector, queries)
    ls_before = collector.cli("ls", "-o", "json").stdout
    assert len(before[0]) == 4900 and before[-2]
    for suffix in ("", "-wal", "-shm"):
        Path(f"{data / 'index.sqlite'}{suffix}").unlink(missing_ok=True)
    out = collector.cli("reindex")
    assert out.returncode == 0, out.stderr
    match = re.fullmatch(
        r"reindexed 3 instances: 4900 records from (\d+) files in ([0-9.]+) s "
        r"\((\d+) records/s\)\n",
        out.stdout,
    )
    assert match, out.stdout
    segment_count = sum(
        len(segments.list_segments(data / "instances" / n)) for n in instances(data)
    )
    assert int(match.group(1)) == segment_count
    print(f"reindex: 4900 records, {segment_count} files, {match.group(3)} records/s")
    same_answers(before, answers(collector, queries))
    assert collector.cli("ls", "-o", "json").stdout == ls_before
    # One instance alone, too.
    out = collector.cli("reindex", "db")
    assert out.stdout.startswith("reindexed 1 instance: 1200 records from ")
    same_answers(before, answers(collector, queries))
    out = collector.cli("reindex", "nosuch")
    assert out.returncode != 0 and "no instance named nosuch" in out.stderr


def test_reindex_while_the_collector_receives(tmp_path: Path) -> None:
    data = tmp_path / "data"
    collector = start_collector(data, "--rotate-size", "128KiB", "--retain-files", "0")
    guests = Guests(collector.port, ["web", "db", "cache"], tmp_path, pace=0.05)
    try:
        wait_for(lambda: all(guests.acknowledged(n) for n in guests.names), what="first ACKs")
        for args in (("reindex",), ("reindex", "web"), ("reindex",), ("reindex", "db", "cache")):
            out = collector.cli(*args)
            assert out.returncode == 0, out.stderr
            assert out.stdout.startswith("reindexed ")
            assert collector.cli("logs", "-n", "5", "-o", "json").returncode == 0
        finals = guests.finish()
        total = check_every_record_once(data, finals)

        def indexed() -> int:
            # No catch-up of our own: the collector's indexer got on with the new index.
            with contextlib.closing(sqlite3.connect(data / "index.sqlite")) as conn:
                row = conn.execute("SELECT coalesce(sum(records), 0) FROM blocks").fetchone()
                return int(row[0])

        wait_for(lambda: indexed() == total, timeout=60, what="the indexer to catch up")
        assert assert_index_matches_files(data) == total
    finally:
        guests.kill()
        assert collector.stop() == 0


def test_an_exporter_follows_rotation_and_retention_exactly_once(tmp_path: Path) -> None:
    """Files rotate under a live exporter (and a restart of it): each record sent once."""
    server = OtlpServer().start()
    args = ("--rotate-size", "16KiB", "--retain-files", "50")
    export = ("--export", f"otel=otlp+{server.url}?start=beginning&batch=50")
    collector = start_collector(tmp_path / "data", *args, *export)
    try:
        run_guest(collector.port, "web", 1500, tmp_path)
        assert collector.stop() == 0
        collector = start_collector(tmp_path / "data", *args, *export)
        guests = Guests(collector.port, ["db"], tmp_path, limit=1500)
        assert guests.finish(stop=False) == {"db": 1500}

        def received() -> Counter[tuple[str, str]]:
            with server.lock:
                return Counter(rec for post in server.posted for rec in post.records())

        want = Counter(("web", message("web", n)) for n in range(1, 1501))
        want += Counter(("db", message("db", n)) for n in range(1, 1501))
        wait_for(lambda: received() == want, timeout=60, what="every record, once")
        assert len(list((tmp_path / "data" / "instances" / "web").glob("app.log.*"))) > 5
    finally:
        collector.stop()
        server.stop()


# -- 2. SIGKILL -----------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def tear_a_line(data: Path, name: str) -> bool:
    """Append half of the record line that comes next, as a crash mid-write leaves it.

    That record cannot be acknowledged yet (an ACK follows the write of its line).
    """
    path = data / "instances" / name / "app.log"
    if not path.exists():
        return False  # killed in the middle of a rotation
    raw = path.read_bytes()
    last = raw[:-1].rsplit(b"\n", 1)[-1]
    if not raw.endswith(b"\n") or last.startswith(b"#"):
        return False
    words = last.split(b" ")
    seq = int(words[3]) + 1
    torn = f"{words[0].decode()} info app {seq} +0.000000001 - {message(name, seq)}"
    with open(path, "ab") as out:
        out.write(torn[: len(torn) - 3].encode())
    return True


def test_sigkill_under_load_corrupts_and_loses_nothing(tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("UMONITOR_TEST_SEED", "20261126")))
    data = tmp_path / "data"
    port = free_port()
    args = ("--rotate-size", "256KiB", "--retain-files", "0")
    collector = start_collector(data, *args, port=port)
    names = ["g1", "g2", "g3", "g4"]
    guests = Guests(port, names, tmp_path)
    kills = torn_found = torn_made = mid_rotation = 0
    acked_at_kill: dict[str, int] = {}
    try:
        for _ in range(6):
            time.sleep(rng.uniform(0.3, 2.5))
            for pid in [collector.proc.pid, *children(collector.proc.pid)]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)  # the collector and its indexer
            collector.proc.wait()
            kills += 1
            for name in names:
                acked = guests.acknowledged(name)
                acked_at_kill[name] = max(acked, default=0)
                live = data / "instances" / name / "app.log"
                if not live.exists() or live.stat().st_size == 0:
                    mid_rotation += any(live.parent.glob("app.log.*"))
                elif not live.read_bytes().endswith(b"\n"):
                    torn_found += 1
            if rng.random() < 0.5:
                torn_made += tear_a_line(data, rng.choice(names))
            collector = start_collector(data, *args, port=port)
        finals = guests.finish()
        # Whatever was acknowledged before a kill was not lost by it.
        for name in names:
            held = {seq for _, seq, _, _ in file_records(data, name)}
            assert set(range(1, acked_at_kill[name] + 1)) <= held
        total = check_every_record_once(data, finals)
        assert total > 10_000  # it was under load
        assert assert_index_matches_files(data) == total
    finally:
        guests.kill()
        collector.stop()
    rotated = sum(len(list((data / "instances" / n).glob("app.log.*"))) for n in names)
    print(
        f"kills {kills}, records {total}, rotated files {rotated}, torn lines found "
        f"{torn_found}, made {torn_made}, killed mid-rotation {mid_rotation}"
    )


# -- 3. a full disk ----------------------------------------------------------------------------


def unread_bytes(port: int) -> int:
    """Bytes waiting in the collector's sockets on ``port`` that it has not read."""
    total = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, queues = fields[1], fields[3], fields[4]
        if state == "01" and int(local.split(":")[1], 16) == port:
            total += int(queues.split(":")[1], 16)
    return total


def fill(directory: Path) -> Path:
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 4096)
    return filler


def store_status(data: Path) -> dict[str, object]:
    for _ in range(5):  # rewritten in place while the disk is full: a read may see a mix
        with contextlib.suppress(ValueError):
            store = json.loads((data / "collector.json").read_text())["store"]
            assert isinstance(store, dict)
            return store
        time.sleep(0.05)
    raise AssertionError("collector.json does not parse")


def test_a_full_disk_stops_acks_and_reading_then_everything_arrives_once(
    tmp_path: Path, small_disk: Path
) -> None:
    collector = start_collector(small_disk, "--no-index")
    err = tmp_path / "data-collector.err"
    names = ["web", "db", "push"]
    clients = {n: Client("127.0.0.1", collector.port, n, capacity=100_000) for n in names}
    sent = dict.fromkeys(names, 0)

    def log(name: str, count: int, pad: int = 0) -> None:
        for _ in range(count):
            sent[name] += 1
            text = message(name, sent[name]) + " " + "p" * pad
            clients[name].log(Severity(sent[name] % 8), text)

    try:
        for name in names:
            log(name, 200)
            assert clients[name].flush(10)
        assert collector.cli("ls").returncode == 0  # the index exists before the disk fills
        filler = fill(small_disk)
        for name in names:
            log(name, 300)
        wait_for(lambda: store_status(small_disk)["state"] == "disk", what="the disk state")
        full_since = time.monotonic()
        assert store_status(small_disk)["error"] == "No space left on device"
        out = collector.cli("ls")
        assert "collector: cannot write (No space left on device)" in out.stdout, out
        out = collector.cli("ls", "-o", "json")
        rows = [json.loads(line) for line in out.stdout.splitlines()]
        assert {r["store"] for r in rows if "name" in r} == {"disk"}
        # Not acknowledged: the guests keep their records...
        assert not any(clients[n].flush(0.5) for n in names)
        assert collector.proc.poll() is None
        # ...and what they send now stays in the sockets: the collector stopped reading.
        log("push", 1500, pad=300)
        for _ in range(20):
            clients["push"].flush(0.1)
        wait_for(lambda: unread_bytes(collector.port) > 30_000, what="unread bytes")
        before = unread_bytes(collector.port)
        clients["push"].flush(1.5)  # a retry or more later, still nothing read
        assert unread_bytes(collector.port) >= before
        # Loud, but not once per retry (every second): at most once every 10 s.
        time.sleep(max(0.0, full_since + 4 - time.monotonic()))
        said = err.read_text().count("cannot write to")
        assert 1 <= said <= 2 + (time.monotonic() - full_since) / 10, err.read_text()
        filler.unlink()
        for name in names:
            assert clients[name].flush(60), name
        assert unread_bytes(collector.port) == 0
        wait_for(lambda: store_status(small_disk)["state"] == "ok", what="the ok state")
        assert f"writing to {small_disk} again" in err.read_text()
        for name in names:
            log(name, 50)
            assert clients[name].flush(10)
    finally:
        for client in clients.values():
            client.close()
        assert collector.stop() == 0
    for name in names:
        records = file_records(small_disk, name)
        assert [seq for _, seq, _, _ in records] == list(range(1, sent[name] + 1)), name
    # The index takes more room than this disk has left: check it on a copy.
    copy = tmp_path / "copy"
    shutil.copytree(small_disk, copy, ignore=shutil.ignore_patterns("filler"))
    assert assert_index_matches_files(copy) == sum(sent.values())
