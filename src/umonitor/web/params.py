"""Reading the API's parameters: each bad one is a 400 (or 404 for a name) with one
sentence, in the words ``umonitor logs`` uses for the same mistake."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from umonitor.errors import UsageError
from umonitor.records import Origin, Severity
from umonitor.store import layout
from umonitor.store.index_query import Query
from umonitor.store.names import is_instance_name
from umonitor.timeparse import parse_time
from umonitor.web.answers import fail

ORIGINS = tuple(o.value for o in Origin)


def instance(root: Path, name: str) -> str:
    """``name`` when it is an instance of ``root``; 404 otherwise (``..`` included)."""
    if not is_instance_name(name) or not layout.instance_dir(root, name).is_dir():
        raise fail(404, f"no instance named {name[:80]!r}; 'umonitor ls' lists the instances")
    return name


def max_severity(text: str | None) -> int:
    if not text:
        return 7
    try:
        return int(Severity.parse(text))
    except ValueError as exc:
        raise fail(400, str(exc)) from None


def origins(values: list[str]) -> tuple[str, ...]:
    wanted = tuple(dict.fromkeys(v for v in values if v and v != "all"))
    for value in wanted:
        if value not in ORIGINS:
            raise fail(400, f"unknown origin {value[:40]!r}; use app, console or syslog")
    return wanted


def time_ns(text: str | None, what: str, now_ns: int | None = None) -> int | None:
    if not text:
        return None
    try:
        return parse_time(text, now_ns=now_ns)
    except UsageError as exc:
        raise fail(400, f"{what}: {exc}") from None


def integer(request: web.Request, key: str, default: int, low: int, high: int) -> int:
    text = request.query.get(key)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise fail(400, f"{key} must be a whole number") from None
    if not low <= value <= high:
        raise fail(400, f"{key} must be from {low} to {high}")
    return value


def query(request: web.Request, names: tuple[str, ...], now_ns: int | None = None) -> Query:
    """The ``Query`` (as ``logs`` builds it) of a request's severity, origin, q, since
    and until (relative times count back from ``now_ns``)."""
    q = request.query
    since = time_ns(q.get("since"), "since", now_ns)
    until = time_ns(q.get("until"), "until", now_ns)
    if since is not None and until is not None and since > until:
        raise fail(400, "since is after until")
    return Query(
        names=names,
        since_ns=since,
        until_ns=until,
        max_severity=max_severity(q.get("severity")),
        grep=q.get("q") or None,
        origins=origins(q.getall("origin", [])),
    )
