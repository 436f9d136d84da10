"""OTLP logs bodies: the hand-written encoder against the official opentelemetry-proto classes.

Encodes the same batches both ways and times them, best of --repeat runs:

* hand-written: ``protocol.otlp_logs.LogsEncoder.encode``, as the sink does;
* official: the same ``ExportLogsServiceRequest`` built with the generated classes
  (``logs_service_pb2`` and friends, on whatever protobuf backend is installed) and
  ``SerializeToString``, with the same mapping (a ResourceLogs per instance, the same
  attributes in the same order).

Before timing, it checks that the two agree: the hand-written bytes parsed by the
official classes must equal the official message, and it reports whether the bytes
are identical. Then it prints what each path costs to carry: the installed size of
the protobuf and opentelemetry-proto distributions, and each path's import time in a
fresh interpreter (best of --imports runs).

    python bench/otlp_encode.py --repeat 5
"""

from __future__ import annotations

import argparse
import importlib.metadata
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.internal import api_implementation
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.logs.v1 import logs_pb2

from umonitor.protocol import otlp_logs as ol
from umonitor.records import Kind, Origin, Record, Severity, StoredRecord

HOST = "bench-host"
VERSION = "0.1.0"
T0 = 1_760_000_000_000_000_000


@dataclass(frozen=True, slots=True)
class Entry:
    """What the encoder takes (export's ExportItem has the same two members)."""

    stored: StoredRecord
    boot: str


def make_batch(count: int, instances: int) -> list[Entry]:
    """Records like a busy service's: ~50-byte messages, four fields, a code location."""
    out = []
    for seq in range(1, count + 1):
        record = Record(
            seq,
            Severity(6 + seq % 2),
            f"request handled: GET /api/items/{seq % 1000} ok",
            wall_ns=T0 + seq * 1_000,
            file="server.c",
            line=120,
            function="handle",
            fields=(
                ("status", "200"),
                ("ms", str(seq % 50)),
                ("route", "/api/items"),
                ("peer", f"10.0.0.{seq % 250}"),
            ),
        )
        stored = StoredRecord(f"web{seq % instances}", T0 + seq * 1_100, Origin.APP, record)
        out.append(Entry(stored, "b00t"))
    return out


def official_attributes(entry: Entry) -> dict[str, str | int]:
    """The attributes in the encoder's order (protocol/otlp_logs.py's docstring)."""
    record = entry.stored.record
    attributes: dict[str, str | int] = dict(record.fields)
    attributes[ol.ATTR_ORIGIN] = entry.stored.origin.value
    attributes[ol.ATTR_SEQ] = record.seq
    if entry.boot:
        attributes[ol.ATTR_BOOT] = entry.boot
    if record.kind != Kind.LOG:
        attributes[ol.ATTR_KIND] = Kind(record.kind).name.lower()
    if record.file:
        attributes[ol.ATTR_CODE_FILE] = record.file
    if record.line > 0:
        attributes[ol.ATTR_CODE_LINE] = record.line
    if record.function:
        attributes[ol.ATTR_CODE_FUNCTION] = record.function
    return attributes


def official_request(entries: Sequence[Entry]) -> logs_service_pb2.ExportLogsServiceRequest:
    request = logs_service_pb2.ExportLogsServiceRequest()
    groups: dict[str, logs_pb2.ScopeLogs] = {}
    for entry in entries:
        stored = entry.stored
        scope_logs = groups.get(stored.instance)
        if scope_logs is None:
            resource_logs = request.resource_logs.add()
            attributes = resource_logs.resource.attributes
            for key in ("service.name", "service.instance.id", ol.ATTR_INSTANCE):
                attributes.add(key=key).value.string_value = stored.instance
            attributes.add(key="host.name").value.string_value = HOST
            scope_logs = groups[stored.instance] = resource_logs.scope_logs.add()
            scope_logs.scope.name = ol.SCOPE_NAME
            scope_logs.scope.version = VERSION
        record = stored.record
        log = scope_logs.log_records.add()
        log.time_unix_nano = record.wall_ns if record.wall_ns is not None else stored.time_ns
        log.severity_number = ol.SEVERITY_NUMBERS[Severity(record.severity)]
        log.severity_text = Severity(record.severity).label
        log.body.string_value = record.message
        for key, value in official_attributes(entry).items():
            kv = log.attributes.add(key=key)
            if isinstance(value, str):
                kv.value.string_value = value
            else:
                kv.value.int_value = value
        log.observed_time_unix_nano = stored.time_ns
    return request


def official_encode(entries: Sequence[Entry]) -> bytes:
    body: bytes = official_request(entries).SerializeToString()
    return body


def best_rate(
    encode: Callable[[Sequence[Entry]], bytes], entries: list[Entry], repeat: int
) -> float:
    """Records per second, best of ``repeat`` runs of at least ~0.2 s each."""
    rounds = max(1, 20_000 // len(entries))
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(rounds):
            encode(entries)
        best = min(best, (time.perf_counter() - start) / rounds)
    return len(entries) / best


def installed_size(distribution: str) -> int:
    """Bytes of every file the distribution installed (its RECORD), caches included."""
    dist = importlib.metadata.distribution(distribution)
    total = 0
    for file in dist.files or ():
        path = Path(file.locate())
        if path.is_file():
            total += path.stat().st_size
    return total


def import_time(statement: str, runs: int) -> float:
    """Seconds to run ``statement`` in a fresh interpreter, best of ``runs``.

    The interpreter has imported ``umonitor.records`` first, untimed: either path
    needs it (and the standard modules it pulls in, ``re``, ``enum``, ``dataclasses``),
    so what is timed is what each path adds.
    """
    code = (
        "import time, umonitor.records; t = time.perf_counter(); "
        f"{statement}; print(time.perf_counter() - t)"
    )
    times = []
    for _ in range(runs):
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        times.append(float(done.stdout))
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--imports", type=int, default=5)
    args = parser.parse_args()

    encoder = ol.LogsEncoder(HOST, VERSION)
    batches = {
        "512 records, 4 instances": make_batch(512, 4),
        "20,000 records, 16 instances": make_batch(20_000, 16),
    }
    print(f"protobuf {importlib.metadata.version('protobuf')} ({api_implementation.Type()})")
    for name, entries in batches.items():
        mine, theirs = encoder.encode(entries), official_encode(entries)
        parsed = logs_service_pb2.ExportLogsServiceRequest.FromString(mine)
        assert parsed == official_request(entries), f"{name}: the two encoders disagree"
        same = "byte-identical" if mine == theirs else "same message, different bytes"
        print(f"\n{name}: {len(mine):,} bytes, {same}")
        for label, encode in (("hand-written", encoder.encode), ("official", official_encode)):
            print(f"  {label:13} {best_rate(encode, entries, args.repeat):12,.0f} records/s")

    print("\ninstalled size:")
    for distribution in ("protobuf", "opentelemetry-proto", "h11"):
        print(f"  {distribution:20} {installed_size(distribution) / (1 << 20):6.2f} MiB")
    print(f"\nimport time on top of umonitor.records, best of {args.imports}:")
    for label, statement in (
        ("hand-written", "import umonitor.protocol.otlp_logs"),
        ("official", "from opentelemetry.proto.collector.logs.v1 import logs_service_pb2"),
    ):
        print(f"  {label:13} {import_time(statement, args.imports) * 1000:6.1f} ms")


if __name__ == "__main__":
    main()
