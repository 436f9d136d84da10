"""Times as users type them: ``10m``, ``2h``, ``1d``, ``now``, ``today`` or ISO 8601."""

from __future__ import annotations

import datetime as dt
import re
import time

from umonitor.errors import UsageError

_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hour|d|day|w|week)s?(?:\s+ago)?")
_UNIT_SECONDS = {
    "s": 1,
    "sec": 1,
    "m": 60,
    "min": 60,
    "h": 3600,
    "hour": 3600,
    "d": 86400,
    "day": 86400,
    "w": 604800,
    "week": 604800,
}


def parse_time(text: str, *, now_ns: int | None = None) -> int:
    """Nanoseconds since the epoch for ``text``; a relative time counts back from now.

    ISO times without a zone are local time, as journalctl reads them.
    """
    now = time.time_ns() if now_ns is None else now_ns
    value = text.strip().lower()
    if value == "now":
        return now
    if value in ("today", "yesterday"):
        midnight = dt.datetime.fromtimestamp(now / 1e9).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        if value == "yesterday":
            midnight -= dt.timedelta(days=1)
        return int(midnight.timestamp()) * 1_000_000_000
    match = _RELATIVE.fullmatch(value.lstrip("-"))
    if match:
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        return now - int(seconds * 1e9)
    try:
        parsed = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"cannot read the time {text!r}; use e.g. 10m, 2h, 1d, today, or 2026-11-26T13:00:00"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.astimezone()
    return int(parsed.timestamp() * 1_000_000) * 1000


def rfc3339(time_ns: int) -> str | None:
    """RFC 3339 UTC with microseconds (``2026-11-26T16:10:10.123456Z``), in integers so
    it is exact; None for a time outside years 1 to 9999. The store's lines use the same
    format through a per-second cache (store/logfile.py ``LineFormatter``)."""
    seconds, nanos = divmod(time_ns, 1_000_000_000)
    try:
        t = time.gmtime(seconds)
    except (OverflowError, OSError, ValueError):
        return None
    if not 1 <= t.tm_year <= 9999:
        return None
    return (
        f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{nanos // 1000:06d}Z"
    )


def format_time(time_ns: int) -> str:
    """RFC 3339 UTC with microseconds; ValueError outside years 1 to 9999."""
    text = rfc3339(time_ns)
    if text is None:
        raise ValueError(f"time {time_ns} ns is outside years 1 to 9999")
    return text


def format_age(time_ns: int | None, *, now_ns: int | None = None) -> str:
    """``5s ago``, ``3m ago``, ``2h ago``, ``4d ago``, or ``-``."""
    if time_ns is None:
        return "-"
    now = time.time_ns() if now_ns is None else now_ns
    seconds = max(0, (now - time_ns) // 1_000_000_000)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"
