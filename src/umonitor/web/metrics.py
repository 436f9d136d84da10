"""``/metrics``: the collector's counters in the Prometheus text format (docs/metrics.md).

How this works: ``exposition`` gathers a snapshot — the collector's counters (the
control operation ``metrics``, collector/counters.py), with a fleet its instances
(``ps``) and their crash reports, and the exporters' status files — and ``render``
turns that plain data into the text format through prometheus_client (a collector
class on a private registry, so nothing of this process's own is mixed in). The two
are apart so that rendering is tested with data in and text out.

Label values are bounded whatever the guests do: instances beyond ``MAX_INSTANCES``
are summed under ``instance="_other"`` (store/tally.py ``fold``, applied by the
collector and again here), and every other label takes its values from a fixed set.
When no collector answers, the output is ``umonitor_collector_up 0`` alone: the rest
would be stale.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

from umonitor.collector import control
from umonitor.collector.base import LIMIT_NAMES
from umonitor.collector.counters import DATAGRAM_DROP_REASONS, MAX_INSTANCES, REJECT_REASONS
from umonitor.errors import UmonitorError
from umonitor.export.status import read_statuses
from umonitor.fleet.instance import State
from umonitor.records import SEVERITY_NAMES, Origin
from umonitor.store import layout
from umonitor.store.names import is_instance_name
from umonitor.store.tally import OTHER, fold

CONTROL_SECONDS = 5.0  # how long a scrape waits for the collector's answer
ORIGINS = tuple(origin.value for origin in Origin)
INSTANCE_STATES = (*(state.value for state in State), "paused", "debugging")
EXPORTER_STATES = ("starting", "sending", "retrying", "idle", "stopped", "not running")
UNKNOWN = "unknown"

Snapshot = dict[str, Any]


def exposition(root: Path) -> bytes:
    """The Prometheus text exposition for the data directory ``root``."""
    return render(gather(root))


def gather(root: Path, timeout: float = CONTROL_SECONDS) -> Snapshot:
    """What ``render`` shows, read from the collector running on ``root`` (if any)."""
    try:
        answer = control.request(root, {"op": "metrics"}, timeout)
    except (UmonitorError, OSError, ValueError):  # none runs, or it did not answer
        return {"collector": None}
    snapshot: Snapshot = {"collector": answer, "exporters": read_statuses(root)}
    if answer.get("fleet"):
        try:
            rows = control.request(root, {"op": "ps"}, timeout).get("instances", [])
        except (UmonitorError, OSError, ValueError):
            rows = []
        snapshot["fleet"] = [
            {**row, "crashes": crash_reports(root, str(row.get("name", "")))}
            for row in rows
            if isinstance(row, dict)
        ]
    return snapshot


def crash_reports(root: Path, name: str) -> int:
    """How many crash reports (fleet/crash_report.py) ``name``'s directory keeps."""
    if not is_instance_name(name):
        return 0
    try:
        return sum(1 for _ in (layout.instance_dir(root, name) / "crashes").glob("crash-*.json"))
    except OSError:
        return 0


def render(snapshot: Snapshot, limit: int = MAX_INSTANCES) -> bytes:
    """The text exposition of a snapshot (the shape ``gather`` returns)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(snapshot, limit))
    return generate_latest(registry)


class _Families:
    """The metric families of one snapshot, for one ``generate_latest``."""

    def __init__(self, snapshot: Snapshot, limit: int) -> None:
        self.snapshot = snapshot
        self.limit = limit

    def collect(self) -> Iterator[Metric]:
        answer = self.snapshot.get("collector")
        up = GaugeMetricFamily(
            "umonitor_collector_up", "1 when a collector answered on the data directory, else 0"
        )
        up.add_metric([], 1 if isinstance(answer, dict) else 0)
        yield up
        if not isinstance(answer, dict):
            return
        yield from _collector(answer, self.limit)
        yield from _fleet(self.snapshot.get("fleet"))
        yield from _exporters(self.snapshot.get("exporters") or [])


def _number(value: object) -> float:
    """A counter's value from the collector's answer; anything else counts as 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value)


def _instance_label(name: object) -> str:
    text = str(name)
    return text if text == OTHER or is_instance_name(text) else OTHER


def _collector(answer: dict[str, Any], limit: int) -> Iterator[Metric]:
    gauges = (
        ("umonitor_collector_start_time_seconds", "When the collector started (Unix time); "
         "every counter counts from then", _number(answer.get("started_ns")) / 1e9),
        ("umonitor_collector_resident_memory_bytes", "The collector process's resident memory",
         _number(answer.get("rss_bytes"))),
        ("umonitor_connections_open", "Guest streams open now (native, syslog TCP/TLS, RELP)",
         _number(answer.get("connections"))),
    )  # fmt: skip
    for name, doc, value in gauges:
        gauge = GaugeMetricFamily(name, doc)
        gauge.add_metric([], value)
        yield gauge

    records = answer.get("records") if isinstance(answer.get("records"), dict) else {}
    dropped = answer.get("dropped") if isinstance(answer.get("dropped"), dict) else {}
    clean_records: dict[str, dict[str, list[int]]] = {}
    for name, by_origin in (records or {}).items():
        if not isinstance(by_origin, dict):
            continue
        into = clean_records.setdefault(_instance_label(name), {})
        for origin, counts in by_origin.items():
            if origin not in ORIGINS or not isinstance(counts, list):
                continue
            have = into.setdefault(origin, [0] * len(SEVERITY_NAMES))
            for i, count in enumerate(counts[: len(SEVERITY_NAMES)]):
                have[i] += int(_number(count))
    clean_dropped: dict[str, int] = {}
    for name, count in (dropped or {}).items():
        label = _instance_label(name)
        clean_dropped[label] = clean_dropped.get(label, 0) + int(_number(count))
    folded = fold(clean_records, clean_dropped, limit)

    stored = CounterMetricFamily(
        "umonitor_records_stored_total",
        "Records the store took, by instance, origin and severity",
        labels=["instance", "origin", "severity"],
    )
    for name in sorted(folded.records):
        for origin in ORIGINS:
            counts = folded.records[name].get(origin)
            if counts is None:
                continue
            for severity, count in zip(SEVERITY_NAMES, counts, strict=True):
                stored.add_metric([name, origin, severity], count)
    yield stored

    lost = CounterMetricFamily(
        "umonitor_guest_dropped_records_total",
        "Records guests reported they dropped (DROPPED frames), by instance",
        labels=["instance"],
    )
    for name in sorted(folded.dropped):
        lost.add_metric([name], folded.dropped[name])
    yield lost

    other = GaugeMetricFamily(
        "umonitor_instances_folded",
        f'Instances beyond the first {limit} (by records) counted under instance="{OTHER}"',
    )
    other.add_metric([], _number(answer.get("folded")) + folded.folded)
    yield other

    yield _by_reason(
        "umonitor_rejected_total",
        "Input refused as malformed: native protocol errors, bad native datagrams, "
        "syslog frames not stored",
        answer.get("rejected"),
        REJECT_REASONS,
    )
    refused = CounterMetricFamily(
        "umonitor_refused_total",
        "Guests refused admission (a connection, a datagram or a syslog message)",
    )
    refused.add_metric([], _number(answer.get("refused")))
    yield refused
    yield _by_reason(
        "umonitor_limit_hits_total",
        "Times a guest limit was hit (connections closed or refused, reads paused)",
        answer.get("limits"),
        LIMIT_NAMES,
    )
    yield _by_reason(
        "umonitor_datagrams_dropped_total",
        "Datagrams dropped by the collector: over the instance's rate, or the disk refusing",
        answer.get("datagrams_dropped"),
        DATAGRAM_DROP_REASONS,
    )
    yield from _histogram(answer.get("ack_latency"))


def _by_reason(
    name: str, doc: str, values: object, reasons: tuple[str, ...]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=["reason"])
    table = values if isinstance(values, dict) else {}
    for reason in reasons:
        family.add_metric([reason], _number(table.get(reason)))
    return family


def _histogram(latency: object) -> Iterator[Metric]:
    if not isinstance(latency, dict) or not isinstance(latency.get("buckets"), list):
        return
    buckets: list[tuple[str, float]] = []
    for pair in latency["buckets"]:
        if isinstance(pair, list) and len(pair) == 2:
            buckets.append((repr(float(_number(pair[0]))), _number(pair[1])))
    buckets.append(("+Inf", _number(latency.get("count"))))
    yield HistogramMetricFamily(
        "umonitor_ack_latency_seconds",
        "From a read of native records to the ACK that covers them being sent",
        buckets=buckets,
        sum_value=_number(latency.get("sum")),
    )


def _fleet(rows: object) -> Iterator[Metric]:
    if not isinstance(rows, list):
        return
    state = GaugeMetricFamily(
        "umonitor_instance_state",
        "1 for the state the fleet shows an instance in ('umonitor ps')",
        labels=["instance", "state"],
    )
    restarts = CounterMetricFamily(
        "umonitor_instance_restarts_total",
        "Times the fleet restarted an instance",
        labels=["instance"],
    )
    crashes = CounterMetricFamily(
        "umonitor_instance_crashes_total",
        "Crash reports an instance's directory keeps (crash-*.json)",
        labels=["instance"],
    )
    for row in rows:
        name = str(row.get("name", ""))
        if not is_instance_name(name):
            continue
        shown = str(row.get("state"))
        state.add_metric([name, shown if shown in INSTANCE_STATES else UNKNOWN], 1)
        restarts.add_metric([name], _number(row.get("restarts")))
        crashes.add_metric([name], _number(row.get("crashes")))
    yield state
    yield restarts
    yield crashes


def _exporters(statuses: list[dict[str, Any]]) -> Iterator[Metric]:
    state = GaugeMetricFamily(
        "umonitor_exporter_state", "1 for the state an exporter is in", labels=["exporter", "state"]
    )
    backlog = GaugeMetricFamily(
        "umonitor_exporter_backlog_bytes",
        "Bytes of log an exporter has yet to send",
        labels=["exporter"],
    )
    sent = CounterMetricFamily(
        "umonitor_exporter_sent_records_total",
        "Records an exporter delivered (kept across its restarts)",
        labels=["exporter"],
    )
    dropped = CounterMetricFamily(
        "umonitor_exporter_dropped_records_total",
        "Records an exporter gave up on (kept across its restarts)",
        labels=["exporter"],
    )
    for status in statuses:
        name = status.get("exporter")
        if not isinstance(name, str) or not name:
            continue
        shown = str(status.get("state"))
        state.add_metric([name, shown if shown in EXPORTER_STATES else UNKNOWN], 1)
        backlog.add_metric([name], _number(status.get("backlog_bytes")))
        sent.add_metric([name], _number(status.get("sent")))
        dropped.add_metric([name], _number(status.get("dropped")))
    yield state
    yield backlog
    yield sent
    yield dropped
