"""What the store counts as it takes records (store/tally.py), on the pure path and on
both C fast paths alike, and the ACK latency histogram's buckets."""

from __future__ import annotations

from pathlib import Path

import pytest

from umonitor.collector.latency import ACK_BUCKETS, LatencyHistogram
from umonitor.protocol import frame_codec as fc
from umonitor.records import Origin, Record, Severity
from umonitor.store import layout
from umonitor.store.writer import Store

BOOT = "ab" * 16


def frames(first: int, last: int) -> bytearray:
    return bytearray(
        b"".join(
            fc.encode(Record(seq, Severity(seq % 8), f"n={seq}")) for seq in range(first, last + 1)
        )
    )


def by_severity(first: int, last: int) -> list[int]:
    counts = [0] * 8
    for seq in range(first, last + 1):
        counts[seq % 8] += 1
    return counts


def test_pure_path_counts_new_records_once(tmp_path: Path) -> None:
    store = Store(tmp_path)
    log = store.log("alpha")
    store.add_records(log, BOOT, [Record(s, Severity(s % 8), "x") for s in range(1, 21)],
                      Origin.APP, 0)  # fmt: skip
    # A replay of 11..20 plus 21..30: only the new ten count.
    store.add_records(log, BOOT, [Record(s, Severity(s % 8), "x") for s in range(11, 31)],
                      Origin.APP, 0)  # fmt: skip
    assert store.tally.counts() == {"alpha": {"app": by_severity(1, 30)}}
    store.close()


def test_fast_path_counts_as_the_pure_path_does(tmp_path: Path) -> None:
    if not Store.fast:
        pytest.fail("the C accelerator is not built (python setup.py build_ext --inplace)")
    store = Store(tmp_path)
    log = store.log("alpha")
    store.begin_boot(log, BOOT, "test", "peer", "alpha")
    buf = frames(1, 50)
    assert store.add_record_run(log, BOOT, buf, 0, len(buf), 65536) == len(buf)
    replay = frames(40, 60)  # 40..50 again: consumed, not counted
    assert store.add_record_run(log, BOOT, replay, 0, len(replay), 65536) == len(replay)
    assert store.tally.counts() == {"alpha": {"app": by_severity(1, 60)}}
    store.close()


def test_syslog_fast_path_counts_by_severity(tmp_path: Path) -> None:
    if not Store.fast:
        pytest.fail("the C accelerator is not built (python setup.py build_ext --inplace)")
    store = Store(tmp_path)
    log = store.log("hosta", layout.SYSLOG_LOG)
    lines = [f"<{8 + pri % 8}>1 - hosta app - - - message {pri}\n" for pri in range(20)]
    buf = bytearray("".join(lines).encode())
    stop, last = store.add_syslog_run(log, BOOT, buf, len(buf), 65536, b"hosta", 0)
    assert (stop, last) == (len(buf), 20)
    expected = [0] * 8
    for pri in range(20):
        expected[pri % 8] += 1
    assert store.tally.counts() == {"hosta": {"syslog": expected}}
    store.close()


def test_guest_drops_count_the_rise_of_each_boot(tmp_path: Path) -> None:
    store = Store(tmp_path)
    log = store.log("alpha")
    store.add_dropped(log, BOOT, 5, 10)
    store.add_dropped(log, BOOT, 5, 10)  # the same report again
    store.add_dropped(log, BOOT, 8, 20)  # three more
    store.add_dropped(log, "cd" * 16, 2, 4)  # another boot
    assert store.tally.dropped == {"alpha": 10}
    store.close()


def test_latency_buckets_are_upper_bounds() -> None:
    histogram = LatencyHistogram()
    for seconds in (0.0, 0.0005, 0.00051, 10.0, 11.0):
        histogram.observe(seconds)
    snapshot = histogram.snapshot()
    cumulative = dict((bound, count) for bound, count in snapshot["buckets"])
    assert [b for b, _ in snapshot["buckets"]] == list(ACK_BUCKETS)
    assert cumulative[0.0005] == 2 and cumulative[0.001] == 3 and cumulative[10.0] == 4
    assert snapshot["count"] == 5
