"""Queries over block summaries answer exactly what a full scan of the files answers.

Real files written by the store, rotated and partly indexed at random moments, with
blocks as small as one line; every query (any mix of instances, time range, level,
origin, text, newest N) is checked against a scan of every line of every file with
``parse_line``. Then ``logs -f``'s follower against what was appended after a query.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from umonitor.records import Origin, Record, Severity
from umonitor.store import blocks, index, index_query, layout, segments
from umonitor.store.logfile import BootLine, RecordLine, parse_line
from umonitor.store.retention import Limits
from umonitor.store.writer import FsyncPolicy, Store

NOW = 1_764_164_675_000_000_000
WORDS = ["request", "served", "Disk", "ERROR", "zqvox", "cache", "miss", "seq:", "00123"]
ODD = ["\t", "\\", "é", "\x1b[1m", "K", "\u212a", "ß", "\n", '"', "="]
NAMES = ["web", "db", "cache"]

Key = tuple[int, int, int]


def message(rng: random.Random) -> str:
    parts = [rng.choice(WORDS) for _ in range(rng.randint(0, 6))]
    if rng.random() < 0.3:
        parts.insert(rng.randint(0, len(parts)), rng.choice(ODD))
    return " ".join(parts) + (str(rng.randint(0, 999)) if rng.random() < 0.5 else "")


def fill(store: Store, rng: random.Random, seqs: dict[str, int], count: int) -> None:
    for _ in range(count):
        name = rng.choice(NAMES)
        origin = rng.choice([Origin.APP, Origin.APP, Origin.CONSOLE, Origin.SYSLOG])
        file = {
            Origin.APP: layout.APP_LOG,
            Origin.CONSOLE: layout.CONSOLE_LOG,
            Origin.SYSLOG: layout.SYSLOG_LOG,
        }[origin]
        log = store.log(name, file)
        if log.context == "" or rng.random() < 0.02:
            boot = f"{rng.getrandbits(128):032x}"
            store.begin_boot(log, boot, "lib/1", "10.0.0.9:4000", name)
        batch = []
        for _ in range(rng.randint(1, 12)):
            seqs[name] += 1
            wall = NOW + rng.randint(-5, 60) * 10**9  # not in order: clocks jump
            batch.append(Record(seqs[name], Severity(rng.randrange(8)), message(rng), wall_ns=wall))
        store.add_records(log, log.context, batch, origin, NOW)
        store.commit()
        if rng.random() < 0.1:
            index.catch_up(index.connect(store.root), store.root)


def full_scan(root: Path, query: index_query.Query) -> list[tuple[Key, str, int, str]]:
    """Every matching record of every file, with the key queries order by."""
    out = []
    rank = 0
    for name in list(query.names) or index.instance_names(root):
        for seg in segments.list_segments(layout.instance_dir(root, name)):
            boot = ""
            offset = 0
            for raw in seg.path.read_bytes().split(b"\n")[:-1]:
                parsed = parse_line(raw.decode("utf-8", "replace"))
                if isinstance(parsed, BootLine):
                    boot = parsed.boot
                elif isinstance(parsed, RecordLine) and query.matches(parsed):
                    key = (blocks.clamp64(parsed.time_ns), rank, offset)
                    out.append((key, name, parsed.record.seq, boot))
                offset += len(raw) + 1
            rank += 1
    return sorted(out)


def random_query(rng: random.Random) -> index_query.Query:
    grep = None
    if rng.random() < 0.5:
        text = message(rng)
        start = rng.randrange(len(text) + 1)
        grep = text[start : start + rng.randint(1, 12)]
        grep = "".join(c.upper() if rng.random() < 0.3 else c for c in grep) or None
    since = NOW + rng.randint(-10, 70) * 10**9 if rng.random() < 0.3 else None
    until = NOW + rng.randint(-10, 70) * 10**9 if rng.random() < 0.3 else None
    return index_query.Query(
        names=rng.sample(NAMES, rng.randint(0, 2)),
        since_ns=since,
        until_ns=until,
        max_severity=rng.choice([7, 7, 3, 4, 0]),
        grep=grep,
        origins=rng.sample(["app", "console", "syslog"], rng.choice([0, 0, 1, 2])),
    )


@pytest.mark.parametrize("seed", range(12))
def test_queries_answer_what_a_full_scan_answers(
    tmp_path: Path, seed: int, line_parser: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(seed)
    monkeypatch.setattr(blocks, "BLOCK_BYTES", rng.choice([1, 300, 2048, 64 << 10]))
    monkeypatch.setattr(index_query, "TAIL_SCAN", rng.choice([0, 1 << 30]))
    monkeypatch.setattr(index, "CHUNK", rng.choice([64, 4096, 4 << 20]))  # 64: under a line
    monkeypatch.setattr(index_query, "TAIL_PIECE", rng.choice([64, 1000, 4 << 20]))
    store = Store(tmp_path, FsyncPolicy.NEVER, Limits(rotate_size=6000, retain_files=0))
    seqs = dict.fromkeys(NAMES, 0)
    fill(store, rng, seqs, 150)
    conn = index.connect(tmp_path)
    for _ in range(25):
        query = random_query(rng)
        last = rng.choice([None, None, 0, 1, 5, 40])
        expected = full_scan(tmp_path, query)
        if last is not None:
            expected = expected[max(0, len(expected) - last) :]
        got = index_query.select(conn, tmp_path, query, last=last)
        assert [(r.stored.instance, r.stored.record.seq, r.boot) for r in got] == [
            (name, seq, boot) for _, name, seq, boot in expected
        ], query
        if rng.random() < 0.3:
            fill(store, rng, seqs, 10)  # tails the index has not seen
    store.close()


def test_grams_leave_out_blocks_without_the_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The summaries do their job: a rare word's query reads the blocks that hold it."""
    store = Store(tmp_path, FsyncPolicy.NEVER, Limits(rotate_size=1 << 30, retain_files=0))
    log = store.log("web")
    store.begin_boot(log, "aa", "", "", "web")
    for first in range(0, 20_000, 1000):
        batch = [
            Record(
                i, Severity.INFO, f"request {i:08d} served" + (" zqvoxrare" if i == 12345 else "")
            )
            for i in range(first, first + 1000)
        ]
        store.add_records(log, "aa", batch, Origin.APP, NOW)
    store.close()
    conn = index.connect(tmp_path)
    index.catch_up(conn, tmp_path)
    blocks_total = conn.execute("SELECT count(*) FROM blocks").fetchone()[0]
    read: list[int] = []
    real_read = index_query._Reader.read

    def counting_read(self: index_query._Reader, span: index_query._Span) -> bytes:
        read.append(span.offset)
        return real_read(self, span)

    monkeypatch.setattr(index_query._Reader, "read", counting_read)
    rows = index_query.select(conn, tmp_path, index_query.Query(grep="ZQVOXrare"))
    assert [r.stored.record.seq for r in rows] == [12345]
    assert blocks_total > 5 and len(read) == 1  # only the block that holds it
    read.clear()
    rows = index_query.select(conn, tmp_path, index_query.Query(), last=3)
    assert [r.stored.record.seq for r in rows] == [19997, 19998, 19999]
    assert len(read) == 1


@pytest.mark.parametrize("chunk", [64, 4 << 20])  # 64: a read shorter than a line
def test_follow_shows_what_was_appended_across_rotation(
    tmp_path: Path, line_parser: str, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(index_query.Follow, "CHUNK", chunk)
    rng = random.Random(7)
    store = Store(tmp_path, FsyncPolicy.NEVER, Limits(rotate_size=4096, retain_files=0))
    seqs = dict.fromkeys(NAMES, 0)
    fill(store, rng, seqs, 40)
    conn = index.connect(tmp_path)
    index.catch_up(conn, tmp_path)
    fill(store, rng, seqs, 5)  # a tail
    query = index_query.Query(max_severity=5)
    rows, follow = index_query.select_then_follow(conn, tmp_path, query, last=10)
    shown = list(rows)
    before = {(name, seq) for _, name, seq, _ in full_scan(tmp_path, query)}
    got = []
    for _ in range(6):
        fill(store, rng, seqs, 8)  # rotates several times
        got.extend(follow.poll())
    store.close()
    for _ in range(3000):  # a poll reads at most CHUNK (and a whole line) per file
        got.extend(follow.poll())
    assert follow.poll() == []
    after = [(name, seq) for _, name, seq, _ in full_scan(tmp_path, query)]
    assert len(shown) == 10
    assert len(after) > len(before) + 20
    assert sorted((r.stored.instance, r.stored.record.seq) for r in got) == sorted(
        set(after) - before
    )


def test_grep_finds_text_spelled_otherwise_in_an_edited_file(
    tmp_path: Path, line_parser: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``\\x41`` for A, a raw control byte, a lone backslash: read as text, found as it."""
    monkeypatch.setattr(blocks, "BLOCK_BYTES", 4096)
    store = Store(tmp_path, FsyncPolicy.NEVER, Limits(rotate_size=0, retain_files=0))
    log = store.log("web")
    store.begin_boot(log, "aa", "", "", "web")
    store.add_records(
        log, "aa", [Record(i, Severity.INFO, f"plain {i}") for i in range(1, 3000)], Origin.APP, NOW
    )
    store.close()
    t = "2026-11-26T13:44:35.000000Z"
    with open(log.path, "ab") as out:
        out.write(f"{t} info app 3000 - - say \\x41bcdef\n".encode())
        out.write(f"{t} info app 3001 - - raw x\x1by here\n".encode())
        out.write(f"{t} info app 3002 - - tail\\\n".encode())
    index.catch_up(index.connect(tmp_path), tmp_path)
    conn = index.connect(tmp_path)
    assert conn.execute("SELECT count(*) FROM blocks").fetchone()[0] > 1
    for grep, seq in (("abcdef", 3000), ("SAY A", 3000), ("x\x1by", 3001), ("tail\\", 3002)):
        rows = index_query.select(conn, tmp_path, index_query.Query(grep=grep))
        assert [r.stored.record.seq for r in rows] == [seq], grep


@pytest.mark.parametrize("seed", range(4))
def test_ls_counts_what_the_files_hold(
    tmp_path: Path, seed: int, line_parser: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under rotation and retention, indexed or not: every record on disk counted once."""
    rng = random.Random(seed)
    monkeypatch.setattr(blocks, "BLOCK_BYTES", 2048)
    monkeypatch.setattr(index_query, "TAIL_PIECE", rng.choice([200, 4 << 20]))
    store = Store(tmp_path, FsyncPolicy.NEVER, Limits(rotate_size=4096, retain_files=2))
    seqs = dict.fromkeys(NAMES, 0)
    fill(store, rng, seqs, 120)  # indexes at random moments, then more not indexed
    store.close()
    conn = index.connect(tmp_path)
    for _ in range(2):
        listed = {s.name: s for s in index_query.instances(conn, tmp_path)}
        for name in NAMES:
            on_disk = full_scan(tmp_path, index_query.Query(names=[name]))
            severities = [0] * 8
            times = []
            for key, _, _, _ in on_disk:
                times.append(key[0])
            for raw_name in [name]:
                for seg in segments.list_segments(layout.instance_dir(tmp_path, raw_name)):
                    for raw in seg.path.read_bytes().split(b"\n")[:-1]:
                        parsed = parse_line(raw.decode("utf-8", "replace"))
                        if isinstance(parsed, RecordLine):
                            severities[parsed.record.severity] += 1
            assert list(listed[name].counts) == severities, name
            assert (listed[name].first_ns, listed[name].last_ns) == (min(times), max(times))
            assert listed[name].behind == 0
        index.catch_up(conn, tmp_path)
