"""Times as users type them."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from umonitor.errors import UsageError
from umonitor.store.logfile import LineFormatter
from umonitor.timeparse import format_age, format_time, parse_time, rfc3339

NOW = 1_764_164_675_000_000_000


@pytest.mark.parametrize(
    ("text", "seconds_back"),
    [
        ("10m", 600),
        ("2h", 7200),
        ("1d", 86400),
        ("30s", 30),
        ("1.5h", 5400),
        ("5 min", 300),
        ("3 days ago", 259200),
        ("now", 0),
        ("1w", 604800),
    ],
)
def test_relative(text: str, seconds_back: int) -> None:
    assert parse_time(text, now_ns=NOW) == NOW - seconds_back * 1_000_000_000


def test_iso_with_zone() -> None:
    assert parse_time("2025-11-26T13:44:35Z") == 1764164675 * 1_000_000_000
    assert parse_time("2025-11-26T14:44:35+01:00") == 1764164675 * 1_000_000_000
    assert parse_time("2025-11-26T13:44:35.5Z") == 1764164675_500_000_000


def test_today_is_before_now() -> None:
    assert parse_time("yesterday") < parse_time("today") <= parse_time("now")


@pytest.mark.parametrize("bad", ["soon", "10 parsecs", "2026-13-45", ""])
def test_bad_times_are_usage_errors(bad: str) -> None:
    with pytest.raises(UsageError, match="cannot read the time"):
        parse_time(bad)


def test_formatting() -> None:
    assert format_time(1764164675_123456_789) == "2025-11-26T13:44:35.123456Z"
    assert format_age(NOW - 5_000_000_000, now_ns=NOW) == "5s ago"
    assert format_age(NOW - 7200_000_000_000, now_ns=NOW) == "2h ago"
    assert format_age(None) == "-"


FIRST_NS = int(dt.datetime(1, 1, 1, tzinfo=dt.UTC).timestamp()) * 1_000_000_000
LAST_NS = int(dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC).timestamp() + 1) * 10**9 - 1


@given(st.integers(FIRST_NS, LAST_NS))
def test_rfc3339_is_exact_and_the_stores_lines_agree(time_ns: int) -> None:
    seconds, nanos = divmod(time_ns, 1_000_000_000)
    whole = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=seconds)
    expected = f"{whole.year:04d}" + whole.strftime("-%m-%dT%H:%M:%S") + f".{nanos // 1000:06d}Z"
    assert rfc3339(time_ns) == format_time(time_ns) == expected
    assert LineFormatter().time_text(time_ns) == expected  # the cached fast path too


@pytest.mark.parametrize("time_ns", [FIRST_NS - 1, LAST_NS + 1, -(10**30), 10**30])
def test_rfc3339_outside_years_1_to_9999(time_ns: int) -> None:
    assert rfc3339(time_ns) is None
    with pytest.raises(ValueError, match="outside years 1 to 9999"):
        format_time(time_ns)
