"""The store writes files once per record and the index follows them exactly once."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from umonitor.records import Origin, Record, Severity
from umonitor.store import index, index_query
from umonitor.store.index_query import Query
from umonitor.store.instance_log import MAX_BOOTS
from umonitor.store.writer import FsyncPolicy, Store

NOW = 1_764_164_675_000_000_000


def recs(first: int, last: int) -> list[Record]:
    return [Record(i, Severity(i % 8), f"record {i}", mono_ns=i) for i in range(first, last + 1)]


def seqs_in_file(path: Path) -> list[int]:
    return [
        int(line.split(" ")[3])
        for line in path.read_text().splitlines()
        if not line.startswith("#")
    ]


def test_replayed_records_are_written_once(tmp_path: Path) -> None:
    store = Store(tmp_path, FsyncPolicy.ALWAYS)
    log = store.log("web-1")
    assert store.begin_boot(log, "aa", "lib", "peer", "web-1") == 0
    assert store.add_records(log, "aa", recs(1, 5), Origin.APP, NOW) == 5
    store.commit()
    assert store.add_records(log, "aa", recs(3, 8), Origin.APP, NOW) == 8
    store.close()
    assert seqs_in_file(log.path) == list(range(1, 9))


def test_high_mark_survives_restart_without_state_file(tmp_path: Path) -> None:
    store = Store(tmp_path)
    log = store.log("web-1")
    store.begin_boot(log, "aa", "", "", "web-1")
    store.add_records(log, "aa", recs(1, 10), Origin.APP, NOW)
    store.commit()
    # No close(): as after a crash, state.json may be stale or missing.
    (log.dir / "state.json").unlink(missing_ok=True)
    again = Store(tmp_path)
    log2 = again.log("web-1")
    assert again.begin_boot(log2, "aa", "", "", "web-1") == 10
    again.add_records(log2, "aa", recs(5, 12), Origin.APP, NOW)
    again.close()
    assert seqs_in_file(log2.path) == list(range(1, 13))


def test_logs_a_crash_left_unsettled_are_recovered_up_front(tmp_path: Path) -> None:
    store = Store(tmp_path)
    for name in ("crashed", "clean"):
        log = store.log(name)
        store.begin_boot(log, "aa", "", "", name)
        store.add_records(log, "aa", recs(1, 10), Origin.APP, NOW)
    store.commit()
    store.close()  # both states reach their files' ends
    (tmp_path / "instances" / "crashed" / "state.json").unlink()  # as if lost in a crash
    (tmp_path / "instances" / "junk name").mkdir()  # not an instance: left alone
    again = Store(tmp_path)
    opened = again.recover_unsettled()
    assert [(log.name, log.file) for log in opened] == [("crashed", "app.log")]
    assert opened[0].high == {"aa": 10}  # learned from the file, before any guest came
    assert again.log("crashed") is opened[0]  # its guest finds it open: no scan then
    assert again.recover_unsettled() == []
    again.close()


def test_new_boot_keeps_history_and_restarts_numbering(tmp_path: Path, line_parser: str) -> None:
    store = Store(tmp_path)
    log = store.log("web-1")
    store.begin_boot(log, "aa", "", "", "web-1")
    store.add_records(log, "aa", recs(1, 3), Origin.APP, NOW)
    assert store.begin_boot(log, "bb", "", "", "web-1") == 0
    store.add_records(log, "bb", recs(1, 2), Origin.APP, NOW)
    store.close()
    assert seqs_in_file(log.path) == [1, 2, 3, 1, 2]
    conn = index.connect(tmp_path)
    index.catch_up(conn, tmp_path)
    [summary] = index_query.instances(conn, tmp_path)
    assert summary.boots == 2 and sum(summary.counts) == 5


def test_torn_last_line_is_cut_and_written_again(tmp_path: Path, line_parser: str) -> None:
    store = Store(tmp_path)
    log = store.log("web-1")
    store.begin_boot(log, "aa", "", "", "web-1")
    store.add_records(log, "aa", recs(1, 3), Origin.APP, NOW)
    store.close()
    # A crash mid-write: record 4 torn inside its message (the line would parse).
    with open(log.path, "ab") as out:
        out.write(b"2025-11-26T13:44:35.000000Z info app 4 +0.000000004 - reco")
    again = Store(tmp_path)
    log2 = again.log("web-1")
    again.begin_boot(log2, "aa", "", "", "web-1")
    again.add_records(log2, "aa", recs(4, 5), Origin.APP, NOW)
    again.close()
    conn = index.connect(tmp_path)
    index.catch_up(conn, tmp_path)
    rows = list(index_query.select(conn, tmp_path, Query(names=["web-1"])))
    assert [r.stored.record.seq for r in rows] == [1, 2, 3, 4, 5]
    assert [r.stored.record.message for r in rows][3] == "record 4"
    bad = conn.execute("SELECT sum(bad) FROM blocks").fetchone()[0]
    assert bad == 0
    assert b"reco\n" not in log2.path.read_bytes()


def test_dropped_notice_counts_and_settles(tmp_path: Path) -> None:
    store = Store(tmp_path)
    log = store.log("g")
    store.begin_boot(log, "aa", "", "", "g")
    assert store.add_dropped(log, "aa", 7, 7) == 7
    store.add_records(log, "aa", recs(8, 9), Origin.APP, NOW)
    assert store.add_dropped(log, "aa", 7, 7) == 9  # a replayed notice changes nothing
    store.close()
    conn = index.connect(tmp_path)
    index.catch_up(conn, tmp_path)
    [summary] = index_query.instances(conn, tmp_path)
    assert summary.dropped == 7


def test_index_catch_up_is_exactly_once_and_rebuildable(tmp_path: Path, line_parser: str) -> None:
    store = Store(tmp_path)
    for name in ("a", "b"):
        log = store.log(name)
        store.begin_boot(log, "aa", "", "", name)
        store.add_records(log, "aa", recs(1, 50), Origin.APP, NOW)
    store.commit()
    conn = index.connect(tmp_path)
    other = index.connect(tmp_path)
    assert index.catch_up(conn, tmp_path) == sum(
        p.stat().st_size for p in tmp_path.glob("instances/*/app.log")
    )
    assert index.catch_up(other, tmp_path) == 0
    assert sum(sum(i.counts) for i in index_query.instances(conn, tmp_path)) == 100
    before = [r.stored for r in index_query.select(conn, tmp_path, Query())]
    conn.close()
    other.close()
    for suffix in ("", "-wal", "-shm"):
        Path(str(tmp_path / "index.sqlite") + suffix).unlink(missing_ok=True)
    rebuilt = index.connect(tmp_path)
    assert index.catch_up(rebuilt, tmp_path) > 0
    assert [r.stored for r in index_query.select(rebuilt, tmp_path, Query())] == before
    store.close()


@pytest.fixture
def filled(tmp_path: Path, line_parser: str) -> sqlite3.Connection:
    store = Store(tmp_path)
    log = store.log("web-1")
    store.begin_boot(log, "aa", "", "", "web-1")
    store.add_records(
        log,
        "aa",
        [
            Record(1, Severity.INFO, "server started on port 80"),
            Record(2, Severity.WARNING, "disk almost full", wall_ns=NOW + 10**9),
            Record(3, Severity.ERR, "Division by zero in compute()", wall_ns=NOW + 2 * 10**9),
            Record(4, Severity.DEBUG, "cache hit ratio 0.93", wall_ns=NOW + 3 * 10**9),
        ],
        Origin.APP,
        NOW,
    )
    log = store.log("db")
    store.begin_boot(log, "bb", "", "", "db")
    store.add_records(log, "bb", [Record(1, Severity.CRIT, "corrupt page 7")], Origin.APP, NOW)
    store.close()
    conn = index.connect(tmp_path)
    index.catch_up(conn, tmp_path)
    return conn


def root_of(conn: sqlite3.Connection) -> Path:
    return Path(conn.execute("PRAGMA database_list").fetchone()[2]).parent


def messages(conn: sqlite3.Connection, query: Query, **kw: int) -> list[str]:
    return [r.stored.record.message for r in index_query.select(conn, root_of(conn), query, **kw)]


def test_query_filters(filled: sqlite3.Connection) -> None:
    assert messages(filled, Query(max_severity=4)) == [
        "corrupt page 7",
        "disk almost full",
        "Division by zero in compute()",
    ]
    assert messages(filled, Query(names=["db"])) == ["corrupt page 7"]
    assert messages(filled, Query(grep="division by")) == ["Division by zero in compute()"]
    assert messages(filled, Query(grep="divis")) == ["Division by zero in compute()"]
    assert messages(filled, Query(grep="compute()")) == ["Division by zero in compute()"]
    assert messages(filled, Query(grep="by zero in")) == ["Division by zero in compute()"]
    assert messages(filled, Query(grep="zero by")) == []
    assert messages(filled, Query(since_ns=NOW + 2 * 10**9, names=["web-1"])) == [
        "Division by zero in compute()",
        "cache hit ratio 0.93",
    ]
    assert messages(filled, Query(until_ns=NOW + 10**9, names=["web-1"])) == [
        "server started on port 80",
        "disk almost full",
    ]
    assert messages(filled, Query(names=["web-1"]), last=2) == [
        "Division by zero in compute()",
        "cache hit ratio 0.93",
    ]


def test_files_never_hold_control_characters(tmp_path: Path) -> None:
    store = Store(tmp_path)
    log = store.log("g")
    store.begin_boot(log, "aa", "\x1b[31mlib", "peer\n", "g\0")
    store.add_records(
        log,
        "aa",
        [Record(1, Severity.INFO, "a\x1b[2Jb\r\nc\0d", fields=(("k\n", "v\x07"),))],
        Origin.APP,
        NOW,
    )
    store.close()
    data = log.path.read_bytes()
    assert all(b >= 0x20 or b in (0x09, 0x0A) for b in data)
    assert os.path.getsize(log.path) == len(data)


def test_high_marks_are_kept_for_the_boots_seen_last(tmp_path: Path) -> None:
    """A guest saying HELLO with ever new boot ids cannot grow the high marks forever."""
    store = Store(tmp_path, FsyncPolicy.NEVER)
    log = store.log("churn")
    store.begin_boot(log, "long-lived", "", "", "churn")
    store.add_records(log, "long-lived", recs(1, 3), Origin.APP, NOW)
    for i in range(MAX_BOOTS + 50):
        boot = f"boot-{i}"
        store.begin_boot(log, boot, "", "", "churn")
        store.add_records(log, boot, recs(1, 1), Origin.APP, NOW)
        if i % 10 == 0:  # the long-lived guest reconnects now and then: it stays known
            assert store.begin_boot(log, "long-lived", "", "", "churn") == 3
        store.commit()
    assert len(log.high) <= MAX_BOOTS + 1
    assert "boot-0" not in log.high and f"boot-{MAX_BOOTS + 49}" in log.high
    # A replay of the long-lived boot is still written once.
    assert store.begin_boot(log, "long-lived", "", "", "churn") == 3
    store.add_records(log, "long-lived", recs(1, 4), Origin.APP, NOW)
    store.close()
    assert seqs_in_file(log.path).count(4) == 1
    assert len(seqs_in_file(log.path)) == 3 + MAX_BOOTS + 50 + 1
