"""What bounds the dashboard's streams and what its numbers mean, without a server:
the tail's budget and queue, record rates from successive counts, report names."""

from __future__ import annotations

from pathlib import Path

from umonitor.records import Origin, Record, Severity, StoredRecord
from umonitor.store import layout
from umonitor.store.index_query import Row
from umonitor.web.crashes import report_names
from umonitor.web.fleet_view import RateMeter
from umonitor.web.tail import Budget, Gate

S = 1_000_000_000


def rows(count: int) -> list[Row]:
    return [
        Row(StoredRecord("a", i, Origin.APP, Record(i + 1, Severity.INFO, f"m{i}")), "b")
        for i in range(count)
    ]


def test_the_budget_allows_its_rate_and_no_more() -> None:
    budget = Budget(200, now=0.0)
    assert sum(budget.take(0.0) for _ in range(1000)) == 200  # one burst
    assert sum(budget.take(0.5) for _ in range(1000)) == 100  # half a second later
    assert sum(budget.take(10.0) for _ in range(1000)) == 200  # never more than a burst


def test_the_gate_counts_what_it_leaves_out() -> None:
    gate = Gate(rate=200, size=400, now=0.0)
    gate.offer(rows(1000), now=0.0)
    assert gate.queue.qsize() == 200 and gate.take_skipped() == 800
    assert gate.take_skipped() == 0
    gate.offer(rows(1000), now=1.0)
    assert gate.queue.qsize() == 400 and gate.take_skipped() == 800
    gate.offer(rows(1000), now=5.0)  # the budget is back, but nobody reads: the queue is full
    assert gate.queue.qsize() == 400 and gate.take_skipped() == 1000


def test_the_gate_keeps_order() -> None:
    gate = Gate(rate=10, size=10, now=0.0)
    gate.offer(rows(3), now=0.0)
    assert [gate.queue.get_nowait().stored.record.message for _ in range(3)] == ["m0", "m1", "m2"]


def test_a_rate_is_the_growth_over_the_window() -> None:
    meter = RateMeter(window_s=10)
    assert meter.add("a", 0, 100) == 0.0  # the first look knows no rate
    assert meter.add("a", 1 * S, 110) == 10.0
    for t in range(2, 20):
        meter.add("a", t * S, 100 + 10 * t)
    assert meter.add("a", 20 * S, 300) == 10.0  # steady: 10 a second over the last 10 s
    # A burst of 1,000 on top: spread over the window it came in.
    assert meter.add("a", 21 * S, 1310) == 110.0  # (1310 - 210 at 11 s) / 10 s
    assert meter.add("a", 22 * S, 1310) == 109.0  # (1310 - 220 at 12 s) / 10 s
    assert meter.add("a", 40 * S, 1310) == 0.0  # quiet for a whole window


def test_a_count_that_goes_down_starts_the_rate_over() -> None:
    meter = RateMeter(window_s=10)
    meter.add("a", 0, 500)
    assert meter.add("a", 1 * S, 20) == 0.0  # retention deleted records
    assert meter.add("a", 2 * S, 30) == 10.0


def test_gone_instances_are_forgotten() -> None:
    meter = RateMeter()
    meter.add("a", 0, 1)
    meter.add("b", 0, 1)
    meter.keep({"b"})
    assert meter.add("a", 1 * S, 100) == 0.0  # a new start for a
    assert meter.add("b", 1 * S, 11) == 10.0


def test_only_report_files_are_listed_newest_first(tmp_path: Path) -> None:
    reports = layout.instance_dir(tmp_path, "i-1") / "crashes"
    reports.mkdir(parents=True)
    names = [
        "crash-20260101T000100.000000Z.json",
        "start-failure-20260101T000200.000000Z.json",
        "crash-20251231T235959.999999Z.json",
        "crash-20260101T000300.000000Z.json.tmp",
        "notes.txt",
        ".crash-20260101T000100.000000Z.json",
        "crash-../x.json",
    ]
    for name in names[:-1]:
        (reports / name).write_text("{}")
    assert report_names(tmp_path, "i-1") == [names[1], names[0], names[2]]
    assert report_names(tmp_path, "nobody") == []
