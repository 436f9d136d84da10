"""Rotation, retention and the quota: files, the index and exporters stay exact.

Everything runs on real files in a temporary directory. The partial write is made
real with RLIMIT_FSIZE (the kernel writes up to the limit, then refuses with EFBIG),
in a child process so that the limit cannot touch pytest's own files.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from umonitor.export.config import parse_export
from umonitor.export.follower import Follower
from umonitor.records import Origin, Record, Severity
from umonitor.sizes import parse_size
from umonitor.store import index, index_query, segments
from umonitor.store.logfile import BootLine, DroppedLine, RecordLine, parse_line
from umonitor.store.reindex import reindex
from umonitor.store.retention import Limits, count_records
from umonitor.store.writer import FsyncPolicy, Store

NOW = 1_764_164_675_000_000_000
KEEP_ALL = Limits(rotate_size=4096, retain_files=0)


def recs(first: int, last: int, text: str = "record") -> list[Record]:
    return [
        Record(i, Severity(i % 8), f"{text} {i} " + "x" * (i % 50), mono_ns=i)
        for i in range(first, last + 1)
    ]


def write(store: Store, name: str, boot: str, first: int, last: int, step: int = 20) -> None:
    log = store.log(name)
    if log.context != boot:
        store.begin_boot(log, boot, "lib/1", "10.0.0.9:4000", name)
    for start in range(first, last + 1, step):
        store.add_records(log, boot, recs(start, min(last, start + step - 1)), Origin.APP, NOW)
        store.commit()


def on_disk(root: Path, name: str) -> list[tuple[str, int, int]]:
    """(boot, seq, severity) of every record in the instance's files, in order.

    Also checks that every line parses and that each segment starts with its header.
    """
    out = []
    for seg in segments.list_segments(root / "instances" / name):
        boot = ""
        lines = seg.path.read_bytes().split(b"\n")
        assert lines.pop() == b"", f"{seg.path} does not end with a newline"
        if seg.generation:
            assert segments.parse_header(lines[0]) == (seg.family, seg.generation)
        for raw in lines:
            parsed = parse_line(raw.decode())
            if isinstance(parsed, BootLine):
                boot = parsed.boot
            elif isinstance(parsed, RecordLine):
                out.append((boot, parsed.record.seq, int(parsed.record.severity)))
            else:
                assert parsed is None or isinstance(parsed, DroppedLine)
    return out


def indexed(conn: sqlite3.Connection, root: Path, name: str) -> list[tuple[str, int, int]]:
    rows = index_query.select(conn, root, index_query.Query(names=[name]))
    return sorted((r.boot, r.stored.record.seq, int(r.stored.record.severity)) for r in rows)


def assert_index_matches_files(conn: sqlite3.Connection, root: Path) -> None:
    index.catch_up(conn, root)
    counts = {s.name: s.counts for s in index_query.instances(conn, root)}
    for name in index.instance_names(root):
        files = on_disk(root, name)
        assert indexed(conn, root, name) == sorted(files)
        per_severity = Counter(sev for _, _, sev in files)
        assert counts.get(name, (0,) * 8) == tuple(per_severity.get(i, 0) for i in range(8))


def test_rotation_names_headers_and_boot_carried_over(tmp_path: Path) -> None:
    store = Store(tmp_path, FsyncPolicy.NEVER, KEEP_ALL)
    write(store, "web", "aa", 1, 400)
    store.close()
    directory = tmp_path / "instances" / "web"
    names = sorted(p.name for p in directory.glob("app.log*"))
    rotated = sorted(int(n.rsplit(".", 1)[1]) for n in names if n != "app.log")
    assert len(rotated) >= 5 and rotated == list(range(1, len(rotated) + 1))
    for path in directory.glob("app.log*"):
        head, boot = path.read_text().splitlines()[:2]
        generation = segments.parse_header(head.encode())
        assert generation is not None and generation[0] == "app.log"
        # Every file starts with the boot its records belong to, as the first did.
        assert boot == "# boot aa lib=lib/1 peer=10.0.0.9:4000 name=web"
        assert path.stat().st_size < 4096 + 20 * 120  # rotated at the size, by one batch
    assert [seq for _, seq, _ in on_disk(tmp_path, "web")] == list(range(1, 401))
    assert {boot for boot, _, _ in on_disk(tmp_path, "web")} == {"aa"}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_index_follows_rotation_exactly_once(tmp_path: Path, seed: int, line_parser: str) -> None:
    """Index at random moments between writes and rotations, from two connections."""
    rng = random.Random(seed)
    store = Store(tmp_path, FsyncPolicy.NEVER, Limits(rotate_size=4096, retain_files=3))
    conns = [index.connect(tmp_path), index.connect(tmp_path)]
    seq = {"a": 0, "b": 0}
    for _ in range(60):
        name = rng.choice(["a", "b"])
        count = rng.randint(1, 40)
        write(store, name, "boot-" + name, seq[name] + 1, seq[name] + count, step=count)
        seq[name] += count
        if rng.random() < 0.5:
            index.catch_up(rng.choice(conns), tmp_path)
    store.close()
    for conn in conns:
        assert_index_matches_files(conn, tmp_path)
    # What retention deleted left the index too, counted where ls finds it.
    losses = store.disk.losses
    for name in ("a", "b"):
        kept = [s for _, s, _ in on_disk(tmp_path, name)]
        assert kept == list(range(seq[name] - len(kept) + 1, seq[name] + 1))
        assert losses[name].deleted_records == seq[name] - len(kept)
        saved = json.loads((tmp_path / "instances" / name / "retention.json").read_text())
        assert saved["deleted_records"] == seq[name] - len(kept)
        assert len(list((tmp_path / "instances" / name).glob("app.log.*"))) == 3


def test_high_marks_survive_a_crash_at_each_step_of_a_rotation(tmp_path: Path) -> None:
    store = Store(tmp_path, FsyncPolicy.NEVER, Limits(rotate_size=0))
    write(store, "g", "aa", 1, 30)
    store.close()
    directory = tmp_path / "instances" / "g"
    stale_state = (directory / "state.json").read_text()
    # Died right after the rename, before the new file had its first line:
    os.rename(directory / "app.log", directory / "app.log.1")
    (directory / "app.log").write_bytes(b"# file app.lo")  # a torn header
    (directory / "state.json").write_text(stale_state)  # state still names app.log.1
    again = Store(tmp_path, FsyncPolicy.NEVER, Limits(rotate_size=0))
    log = again.log("g")
    assert log.high == {"aa": 30} and log.key == "app.log.2"
    assert again.begin_boot(log, "aa", "", "", "g") == 30
    again.add_records(log, "aa", recs(20, 35), Origin.APP, NOW)  # a replay, then new
    again.close()
    assert [s for _, s, _ in on_disk(tmp_path, "g")] == list(range(1, 36))
    first_two = (directory / "app.log").read_text().splitlines()[:2]
    assert first_two[0].startswith("# file app.log.2 ")
    assert first_two[1].startswith("# boot aa ")


def test_state_naming_a_rotated_file_is_read_on_from_there(tmp_path: Path) -> None:
    store = Store(tmp_path, FsyncPolicy.NEVER, KEEP_ALL)
    write(store, "g", "aa", 1, 10)
    store.close()
    directory = tmp_path / "instances" / "g"
    early = (directory / "state.json").read_text()
    again = Store(tmp_path, FsyncPolicy.NEVER, KEEP_ALL)
    write(again, "g", "aa", 11, 300)
    again.close()
    (directory / "state.json").write_text(early)  # as if no state was saved since
    third = Store(tmp_path, FsyncPolicy.NEVER, KEEP_ALL)
    log = third.log("g")
    assert log.high == {"aa": 300}
    third.close()


def test_retain_days_deletes_only_old_rotated_files(tmp_path: Path) -> None:
    store = Store(tmp_path, FsyncPolicy.NEVER, Limits(rotate_size=4096, retain_files=0))
    write(store, "g", "aa", 1, 200)
    store.close()
    directory = tmp_path / "instances" / "g"
    rotated = sorted(directory.glob("app.log.*"), key=lambda p: int(p.suffix[1:]))
    old = rotated[:2]
    month_ago = time.time() - 30 * 86400
    for path in [*old, directory / "app.log"]:
        os.utime(path, (month_ago, month_ago))
    records_in_old = sum(count_records(p) for p in old)
    again = Store(tmp_path, FsyncPolicy.NEVER, Limits(4096, 0, retain_days=14))
    left = {p.name for p in directory.glob("app.log*")}
    assert left == {p.name for p in [*rotated[2:], directory / "app.log"]}
    assert again.disk.losses["g"].deleted_files == 2
    assert again.disk.losses["g"].deleted_records == records_in_old
    assert (directory / "app.log").exists()  # the live file stays, whatever its age
    again.close()


def test_quota_takes_from_the_biggest_first_then_refuses_it(tmp_path: Path) -> None:
    limits = Limits(rotate_size=4096, retain_files=0, quota=24 * 1024)
    store = Store(tmp_path, FsyncPolicy.NEVER, limits)
    write(store, "quiet", "q", 1, 80)  # about two files
    quiet_before = on_disk(tmp_path, "quiet")
    write(store, "chatty", "c", 1, 2000)
    store.disk.settle()  # deletions are finished (and counted) by a worker thread
    # The chatty guest lost its oldest files; the quiet one kept all its history.
    assert on_disk(tmp_path, "quiet") == quiet_before
    chatty = [s for _, s, _ in on_disk(tmp_path, "chatty")]
    assert chatty == list(range(chatty[0], 2001)) and chatty[0] > 1
    assert store.disk.losses["chatty"].deleted_records == chatty[0] - 1
    assert "quiet" not in store.disk.losses
    assert store.disk.refused is None
    assert store.disk.total <= limits.quota
    # Eight more guests: now the live files alone are over the quota. Every rotated
    # file goes, and then the instance using the most space is refused.
    for n in range(8):
        write(store, f"n{n}", "n", 1, 36)
    assert not any(store.disk.rotated.values())
    big = store.disk.refused
    assert big is not None and store.disk.usage[big] == max(store.disk.usage.values())
    before = store.disk.losses[big].refused if big in store.disk.losses else 0
    held = on_disk(tmp_path, big)
    write(store, big, "other-boot", 5000, 5099)
    assert store.disk.losses[big].refused == before + 100
    assert on_disk(tmp_path, big) == held  # none of it was written
    status = store.status()
    losses = status["losses"]
    assert status["refused"] == big and isinstance(losses, dict) and big in losses
    store.close()
    conn = index.connect(tmp_path)
    assert_index_matches_files(conn, tmp_path)


PARTIAL = """
import json, resource, signal, sys, time
from pathlib import Path
from umonitor.records import Origin, Record, Severity
from umonitor.store.retention import Limits
from umonitor.store.writer import FsyncPolicy, Store

def recs(a, b):
    return [Record(i, Severity.INFO, f"record {i} " + "y" * 40) for i in range(a, b + 1)]

root = Path(sys.argv[1])
store = Store(root, FsyncPolicy.NEVER, Limits(rotate_size=0))
log = store.log("g")
store.begin_boot(log, "aa", "", "", "g")
store.add_records(log, "aa", recs(1, 10), Origin.APP, 0)
store.commit()
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
limit = log.offset + 150  # ends in the middle of a line
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
store.add_records(log, "aa", recs(11, 30), Origin.APP, 0)
store.commit()
out = {"failure": store.failure, "size": log.path.stat().st_size, "limit": limit}
store.add_records(log, "aa", recs(25, 40), Origin.APP, 0)  # a replay and more
store.commit()
out["still"] = store.failure
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
store.commit()
out["after"] = store.failure
store.close()
print(json.dumps(out))
"""


def test_a_partial_write_is_finished_never_repeated(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(PARTIAL), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["failure"] == "File too large" and out["still"] == "File too large"
    assert out["size"] == out["limit"]  # a line was cut by the disk...
    assert out["after"] is None
    # ...and finished, not written again: every record once, every line whole.
    assert [s for _, s, _ in on_disk(tmp_path, "g")] == list(range(1, 41))


def test_follower_finishes_a_rotated_file_before_the_new_one(tmp_path: Path) -> None:
    spec = parse_export("t", "otlp+http://127.0.0.1:9", {"start": "beginning", "batch": "7"})
    store = Store(tmp_path, FsyncPolicy.NEVER, Limits(rotate_size=4096, retain_files=2))
    follower = Follower(tmp_path, spec)
    got: list[int] = []
    written = 0
    rng = random.Random(7)
    while True:
        if written < 600 and rng.random() < 0.4:
            count = rng.randint(1, 30)
            write(store, "web", "aa", written + 1, written + count, step=count)
            written += count
            continue
        batch = follower.next_batch()
        if batch is None:
            if written >= 600:
                break
            continue
        got.extend(item.stored.record.seq for item in batch.items)
        assert all(item.file == "app.log" and item.boot == "aa" for item in batch.items)
        follower.commit(batch.key, *batch.done)
    store.close()
    # Retention runs in the disk worker: a file it deleted after the follower's last
    # look is forgotten on the follower's next look, which comes now (nothing is left).
    assert follower.next_batch() is None
    # Retention may delete a file before it was read: its records are then gone for
    # the exporter too. None is read twice, the order holds, nothing kept is missed.
    assert got == sorted(set(got))
    kept = [s for _, s, _ in on_disk(tmp_path, "web")]
    assert kept[-1] == written and set(kept) <= set(got)
    assert set(follower.positions) == {
        f"web/{s.key}" for s in segments.list_segments(tmp_path / "instances" / "web")
    }


def test_follower_misses_nothing_when_it_keeps_pace(tmp_path: Path) -> None:
    spec = parse_export("t", "otlp+http://127.0.0.1:9", {"start": "beginning", "batch": "5"})
    store = Store(tmp_path, FsyncPolicy.NEVER, KEEP_ALL)
    follower = Follower(tmp_path, spec)
    got: list[int] = []
    last = 0
    for first in range(1, 1000, 37):
        last = first + 36
        write(store, "web", "aa", first, last, step=37)
        while (batch := follower.next_batch()) is not None:
            got.extend(item.stored.record.seq for item in batch.items)
            follower.commit(batch.key, *batch.done)
    store.close()
    assert len(list((tmp_path / "instances" / "web").glob("app.log.*"))) > 10
    assert got == list(range(1, last + 1))


def test_reindex_while_another_connection_reads(tmp_path: Path, line_parser: str) -> None:
    store = Store(tmp_path, FsyncPolicy.NEVER, Limits(rotate_size=4096, retain_files=2))
    for name in ("a", "b", "c"):
        write(store, name, "boot-" + name, 1, 150)
    reader = index.connect(tmp_path)
    index.catch_up(reader, tmp_path)
    query = index_query.Query()
    before = [(r.stored, r.boot) for r in index_query.select(reader, tmp_path, query)]
    done = reindex(tmp_path)
    assert done.instances == 3 and done.records == len(before)
    assert [(r.stored, r.boot) for r in index_query.select(reader, tmp_path, query)] == before
    assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    write(store, "b", "boot-b", 151, 200)  # the writer goes on; the index follows
    done = reindex(tmp_path, ["b"])
    assert done.instances == 1
    assert_index_matches_files(reader, tmp_path)
    store.close()
    assert not list(tmp_path.glob("index.sqlite.rebuild*"))


def test_an_index_of_the_old_schema_is_rebuilt(tmp_path: Path) -> None:
    store = Store(tmp_path, FsyncPolicy.NEVER, KEEP_ALL)
    write(store, "g", "aa", 1, 50)
    store.close()
    old = sqlite3.connect(tmp_path / "index.sqlite")
    old.execute("CREATE TABLE records(id INTEGER PRIMARY KEY, junk TEXT)")
    old.execute("INSERT INTO records(junk) VALUES ('x')")
    old.commit()
    old.close()
    conn = index.connect(tmp_path)
    assert_index_matches_files(conn, tmp_path)


def test_a_file_from_before_rotation_keeps_its_index_position(tmp_path: Path) -> None:
    """An app.log without header is keyed "app.log" before and after its rotation."""
    store = Store(tmp_path, FsyncPolicy.NEVER, Limits(rotate_size=0))
    write(store, "g", "aa", 1, 40)
    store.close()
    path = tmp_path / "instances" / "g" / "app.log"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[1:]))  # as the writer before rotation left it
    (tmp_path / "instances" / "g" / "state.json").unlink()
    conn = index.connect(tmp_path)
    index.catch_up(conn, tmp_path)
    again = Store(tmp_path, FsyncPolicy.NEVER, KEEP_ALL)
    write(again, "g", "aa", 30, 300)
    again.close()
    assert (tmp_path / "instances" / "g" / "app.log.1").exists()
    assert_index_matches_files(conn, tmp_path)
    assert [s for _, s, _ in on_disk(tmp_path, "g")] == list(range(1, 301))


def test_a_recreated_segment_key_is_not_mistaken_for_the_old_one(tmp_path: Path) -> None:
    store = Store(tmp_path, FsyncPolicy.NEVER, Limits(rotate_size=0))
    write(store, "g", "aa", 1, 40)
    store.close()
    conn = index.connect(tmp_path)
    index.catch_up(conn, tmp_path)
    shutil.rmtree(tmp_path / "instances" / "g")  # gone, and started afresh
    time.sleep(0.001)
    again = Store(tmp_path, FsyncPolicy.NEVER, Limits(rotate_size=0))
    write(again, "g", "bb", 1, 5)
    again.close()
    assert_index_matches_files(conn, tmp_path)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("64MiB", 64 << 20),
        ("10G", 10 << 30),
        ("512KiB", 512 << 10),
        ("4096", 4096),
        ("0", 0),
        ("1Gi", 1 << 30),
        ("2MB", 2 << 20),
        ("1.5K", 1536),
        ("3 t", 3 << 40),
    ],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "ten", "5 parsecs", "-1"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


def test_an_indexer_step_after_a_reindex_does_not_use_stale_instance_ids(
    tmp_path: Path,
) -> None:
    """An indexer listed an instance, then ``reindex`` ran, then the indexer went on."""
    store = Store(tmp_path, FsyncPolicy.NEVER, KEEP_ALL)
    write(store, "b", "bb", 1, 30)  # b first: in the live index b has the smaller id
    indexer = index.connect(tmp_path)
    index.catch_up(indexer, tmp_path)
    write(store, "a", "aa", 1, 30)
    last = 30
    for names in ((), ("a",)):
        listing = index._segments(indexer, tmp_path, "a")
        assert listing is not None
        reindex(tmp_path, names)  # every instance (new ids), then "a" alone (dropped)
        write(store, "a", "aa", last + 1, last + 30)
        last += 30
        for seg in listing.segments:
            step = index._catch_up_file(indexer, "a", listing.instance_id, seg, None)
            assert step == (0, 0)
    store.close()
    orphans = indexer.execute(
        "SELECT count(*) FROM blocks WHERE instance_id NOT IN (SELECT id FROM instances)"
    ).fetchone()[0]
    assert orphans == 0
    assert_index_matches_files(indexer, tmp_path)
