"""How the API writes records: JSON only, every field, one line whatever the text."""

from __future__ import annotations

import json

from umonitor.records import Kind, Origin, Record, Severity, StoredRecord
from umonitor.store.index_query import Row
from umonitor.web.answers import dumps, record_json


def test_a_record_as_the_api_gives_it() -> None:
    record = Record(
        7, Severity.WARNING, "<script>alert(1)</script>", Kind.CRASH,
        file="app.c", line=88, function="tick", fields=(("k", "1"), ("k", "2")),
    )  # fmt: skip
    row = Row(StoredRecord("demo-1", 1_764_790_200_123_456_000, Origin.CONSOLE, record), "b00t")
    assert record_json(row) == {
        "instance": "demo-1",
        "time": "2025-12-03T19:30:00.123456Z",
        "time_ns": 1_764_790_200_123_456_000,
        "severity": "warning",
        "origin": "console",
        "kind": "crash",
        "message": "<script>alert(1)</script>",
        "fields": [["k", "1"], ["k", "2"]],  # repeated keys kept, in order
        "file": "app.c",
        "line": 88,
        "function": "tick",
        "boot": "b00t",
        "seq": 7,
    }


def test_json_text_stays_on_one_line() -> None:
    text = "a\nb\u2028c\u2029d\u0085e\x00f"
    out = dumps({"message": text})
    assert "\n" not in out and "\u2028" not in out and "\u2029" not in out
    assert json.loads(out) == {"message": text}
