"""The log file line format: readable, free of control characters, parseable back."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from umonitor.records import Kind, Origin, Record, Severity
from umonitor.store.logfile import (
    BootLine,
    DroppedLine,
    LineError,
    RecordLine,
    format_boot_line,
    format_dropped_line,
    format_record_line,
    parse_line,
)

T = 1764164675_123456_000


def test_line_shape() -> None:
    record = Record(
        42,
        Severity.WARNING,
        "division by zero",
        Kind.LOG,
        1_234_567_890,
        None,
        "main.c",
        120,
        "divide",
        (("a", "10"), ("op", "a / b")),
    )
    line = format_record_line(T, Origin.APP, record)
    assert line == (
        "2025-11-26T13:44:35.123456Z warning app 42 +1.234567890 "
        'main.c:120:divide division by zero\ta=10 op="a / b"'
    )


def test_escapes_make_hostile_text_inert() -> None:
    record = Record(1, Severity.INFO, "red \x1b[31m\nnext\tline\\ \x9b", file="a b:c")
    line = format_record_line(T, Origin.CONSOLE, record)
    assert "\n" not in line and "\x1b" not in line and "\x9b" not in line
    assert line.count("\t") == 0
    parsed = parse_line(line)
    assert isinstance(parsed, RecordLine)
    assert parsed.record.message == record.message
    assert parsed.record.file == "a b:c"
    assert parsed.origin is Origin.CONSOLE


def test_meta_lines_round_trip() -> None:
    boot = BootLine("00ff", "umonitor-c/1.0.0", "10.77.0.5:4000", "web 1")
    assert parse_line(format_boot_line(boot)) == boot
    dropped = DroppedLine("00ff", 12, 99)
    assert parse_line(format_dropped_line(dropped)) == dropped
    assert parse_line("# some other comment") is None


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "garbage",
        "2026-11-26T13:44:35.123456Z loud app 1 - - x",
        "2026-11-26 13:44:35 info app 1 - - x",
        "2026-11-26T13:44:35.123456Z info app x - - x",
        "2026-11-26T13:44:35.123456Z info nowhere 1 - - x",
    ],
)
def test_bad_lines_raise_line_error(bad: str) -> None:
    with pytest.raises(LineError):
        parse_line(bad)


records = st.builds(
    Record,
    seq=st.integers(1, 2**64 - 1),
    severity=st.sampled_from(list(Severity)),
    message=st.text(),
    kind=st.sampled_from(list(Kind)),
    mono_ns=st.none() | st.integers(0, 2**64 - 1),
    wall_ns=st.none(),
    file=st.text(max_size=20),
    line=st.integers(0, 2**32 - 1),
    function=st.text(max_size=20),
    fields=st.lists(
        st.tuples(st.text(min_size=1, max_size=8), st.text(max_size=12)), max_size=4
    ).map(tuple),
)


@given(records, st.integers(0, 253402300799), st.sampled_from(list(Origin)))
def test_format_then_parse_is_identity(record: Record, seconds: int, origin: Origin) -> None:
    time_ns = seconds * 1_000_000_000 + 123_456_000
    line = format_record_line(time_ns, origin, record)
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    parsed = parse_line(line)
    assert isinstance(parsed, RecordLine)
    assert parsed == RecordLine(time_ns, origin, record)
