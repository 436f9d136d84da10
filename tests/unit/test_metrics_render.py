"""/metrics rendering (web/metrics.py): plain data in, Prometheus text out, read back
with prometheus_client's own parser; the fold that bounds instance labels."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from umonitor.collector.latency import ACK_BUCKETS, LatencyHistogram
from umonitor.records import SEVERITY_NAMES
from umonitor.store.tally import OTHER, fold
from umonitor.web.metrics import render


def samples(text: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample as (name, labels) -> value."""
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            out[sample.name, frozenset(sample.labels.items())] = sample.value
    return out


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          **labels: str) -> float:  # fmt: skip
    return found[name, frozenset(labels.items())]


def answer(**overrides: Any) -> dict[str, Any]:
    histogram = LatencyHistogram()
    for seconds in (0.0004, 0.0005, 0.003, 20.0):
        histogram.observe(seconds)
    base: dict[str, Any] = {
        "ok": True,
        "fleet": False,
        "pid": 42,
        "started_ns": 1_764_790_200_000_000_000,
        "rss_bytes": 41_000_000,
        "connections": 3,
        "records": {
            "demo-1": {"app": [0, 0, 0, 2, 3, 0, 10, 1], "syslog": [0, 0, 0, 0, 0, 0, 4, 0]},
            "demo-2": {"console": [0, 0, 1, 0, 0, 0, 7, 0]},
        },
        "dropped": {"demo-1": 5},
        "folded": 0,
        "rejected": {"protocol": 1, "datagram": 2, "syslog": 3},
        "refused": 4,
        "limits": {"rate": 6, "idle": 1},
        "datagrams_dropped": {"rate": 7, "disk": 0},
        "ack_latency": histogram.snapshot(),
    }
    base.update(overrides)
    return base


def test_no_collector_is_up_zero_and_nothing_else() -> None:
    families = list(text_string_to_metric_families(render({"collector": None}).decode()))
    assert [f.name for f in families] == ["umonitor_collector_up"]
    assert families[0].samples[0].value == 0


def test_counters_by_instance_origin_and_severity() -> None:
    found = samples(render({"collector": answer(), "exporters": []}))
    assert value(found, "umonitor_collector_up") == 1
    assert value(found, "umonitor_records_stored_total", instance="demo-1", origin="app",
                 severity="warning") == 3  # fmt: skip
    assert value(found, "umonitor_records_stored_total", instance="demo-1", origin="syslog",
                 severity="info") == 4  # fmt: skip
    assert value(found, "umonitor_records_stored_total", instance="demo-2", origin="console",
                 severity="crit") == 1  # fmt: skip
    assert ("umonitor_records_stored_total",
            frozenset({("instance", "demo-2"), ("origin", "app"), ("severity", "info")})
            ) not in found  # fmt: skip
    assert value(found, "umonitor_guest_dropped_records_total", instance="demo-1") == 5
    assert value(found, "umonitor_rejected_total", reason="syslog") == 3
    assert value(found, "umonitor_refused_total") == 4
    assert value(found, "umonitor_limit_hits_total", reason="rate") == 6
    assert value(found, "umonitor_limit_hits_total", reason="connections") == 0
    assert value(found, "umonitor_datagrams_dropped_total", reason="rate") == 7
    assert value(found, "umonitor_collector_resident_memory_bytes") == 41_000_000
    assert value(found, "umonitor_connections_open") == 3
    assert value(found, "umonitor_collector_start_time_seconds") == 1_764_790_200
    assert value(found, "umonitor_instances_folded") == 0


def test_ack_latency_histogram_buckets_are_cumulative_and_le_inclusive() -> None:
    found = samples(render({"collector": answer()}))
    bucket = "umonitor_ack_latency_seconds_bucket"
    assert value(found, bucket, le="0.0005") == 2  # 0.4 ms and exactly 0.5 ms
    assert value(found, bucket, le="0.005") == 3
    assert value(found, bucket, le="10.0") == 3
    assert value(found, bucket, le="+Inf") == 4  # 20 s is above every bound
    assert value(found, "umonitor_ack_latency_seconds_count") == 4
    assert abs(value(found, "umonitor_ack_latency_seconds_sum") - 20.0039) < 1e-9
    les = {dict(labels)["le"] for name, labels in found if name == bucket}
    assert les == {repr(b) for b in ACK_BUCKETS} | {"+Inf"}


def test_label_values_come_from_fixed_sets_whatever_the_answer_says() -> None:
    hostile = answer(
        records={
            "../etc": {"app": [1, 0, 0, 0, 0, 0, 0, 0]},  # not an instance name
            "ok-1": {"made-up": [9] * 8, "app": [0, 0, 0, 0, 0, 0, 0, 2, 99]},
        },
        dropped={"../etc": 1},
        limits={"rate": 1, "invented": 5},
        rejected={"whatever": 3},
    )
    text = render({"collector": hostile})
    found = samples(text)
    labels = {k: v for _, ls in found for k, v in ls}
    instances = {dict(ls)["instance"] for _, ls in found if "instance" in dict(ls)}
    assert instances == {OTHER, "ok-1"}
    origins = {dict(ls)["origin"] for _, ls in found if "origin" in dict(ls)}
    assert origins == {"app"}
    assert "invented" not in text.decode() and "whatever" not in text.decode()
    assert value(found, "umonitor_records_stored_total", instance="ok-1", origin="app",
                 severity="debug") == 2  # fmt: skip
    assert {dict(ls).get("severity") for _, ls in found} - {None} == set(SEVERITY_NAMES)
    assert "made-up" not in labels.values()


def test_fleet_and_exporters() -> None:
    fleet = [
        {"name": "web", "state": "running", "restarts": 2, "crashes": 1},
        {"name": "db", "state": "something new", "restarts": 0, "crashes": 0},
    ]
    exporters = [{"exporter": "siem", "state": "sending", "sent": 130, "dropped": 2,
                  "backlog_bytes": 4096}]  # fmt: skip
    found = samples(render({"collector": answer(fleet=True), "fleet": fleet,
                            "exporters": exporters}))  # fmt: skip
    assert value(found, "umonitor_instance_state", instance="web", state="running") == 1
    assert value(found, "umonitor_instance_state", instance="db", state="unknown") == 1
    assert value(found, "umonitor_instance_restarts_total", instance="web") == 2
    assert value(found, "umonitor_instance_crashes_total", instance="web") == 1
    assert value(found, "umonitor_exporter_state", exporter="siem", state="sending") == 1
    assert value(found, "umonitor_exporter_sent_records_total", exporter="siem") == 130
    assert value(found, "umonitor_exporter_dropped_records_total", exporter="siem") == 2
    assert value(found, "umonitor_exporter_backlog_bytes", exporter="siem") == 4096


def test_many_instances_fold_into_other() -> None:
    records = {f"g{i}": {"syslog": [0, 0, 0, 0, 0, 0, 1 + i % 3, 0]} for i in range(2000)}
    found = samples(render({"collector": answer(records=records, dropped={})}, limit=50))
    instances = {dict(ls)["instance"] for name, ls in found
                 if name == "umonitor_records_stored_total"}  # fmt: skip
    assert len(instances) == 51 and OTHER in instances
    assert value(found, "umonitor_instances_folded") == 1950
    total = sum(v for (name, _), v in found.items() if name == "umonitor_records_stored_total")
    assert total == sum(1 + i % 3 for i in range(2000))
    # The kept ones are those with the most records.
    assert all(int(name[1:]) % 3 == 2 for name in instances - {OTHER})


counts = st.lists(st.integers(0, 1000), min_size=8, max_size=8)
names = st.text("abc123-", min_size=1, max_size=4).filter(lambda n: n[0] not in "-")


@given(
    st.dictionaries(names, st.dictionaries(st.sampled_from(["app", "console", "syslog"]), counts)),
    st.dictionaries(names, st.integers(0, 1000)),
    st.integers(0, 20),
)
def test_fold_keeps_totals_bounds_names_and_is_idempotent(
    records: dict[str, dict[str, list[int]]], dropped: dict[str, int], limit: int
) -> None:
    once = fold(records, dropped, limit)
    assert len(set(once.records) | set(once.dropped) - {OTHER}) <= limit + 1
    assert len((set(once.records) | set(once.dropped)) - {OTHER}) <= limit
    assert once.folded == max(0, len(set(records) | set(dropped)) - limit)

    def total(r: dict[str, dict[str, list[int]]]) -> int:
        return sum(sum(c) for by_origin in r.values() for c in by_origin.values())

    assert total(once.records) == total(records)
    assert sum(once.dropped.values()) == sum(dropped.values())
    twice = fold(once.records, once.dropped, limit)
    assert twice.records == once.records and twice.dropped == once.dropped
    assert twice.folded == 0
