"""One instance over HTTP: its records, rate, crash reports and console, and the
actions the CLI has (``level``, ``stop``, ``restart``) through the CLI's own calls.

Reads are the queries of ``umonitor logs`` (store/index_query.py ``select``), run in
a thread with a connection of the server's pool (reading.py). Actions go over the
control socket exactly as the CLI sends them: ``collector.control.set_level`` for
``umonitor level``, ``fleet.daemon.request`` for ``stop`` and ``restart``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import sqlite3
import time
from typing import Any

from aiohttp import web

from umonitor.errors import UsageError
from umonitor.records import SEVERITY_NAMES, Origin, Severity
from umonitor.store.index_query import Query, Row, select, select_then_follow
from umonitor.store.names import is_instance_name
from umonitor.timeparse import rfc3339
from umonitor.web import crashes, params
from umonitor.web.answers import fail, record_json, reply
from umonitor.web.fleet_view import fleet_instances
from umonitor.web.reading import READER

LIMIT_DEFAULT = 200
LIMIT_MAX = 1000
RATE_SPAN_NS = 600 * 1_000_000_000  # the chart's default: the last 10 minutes
RATE_POINTS = 600  # points per series at most
RATE_ROWS = 500_000  # records counted for one chart at most (then "partial")
CONSOLE_DEFAULT = 200
MAX_BODY = 4096  # bytes of a POST body


def _name(request: web.Request) -> str:
    return params.instance(request.app[READER].root, request.match_info["name"])


async def records(request: web.Request) -> web.StreamResponse:
    """Newest first, ``limit`` at a time; ``before_ns`` pages back.

    A page never ends inside a run of records with the same time: those would be
    cut in two by the next page's ``before_ns``, so the run is left for that page,
    or, when the run alone is longer than ``limit``, the page is that whole run.
    """
    reader = request.app[READER]
    name = _name(request)
    query = params.query(request, (name,))
    limit = params.integer(request, "limit", LIMIT_DEFAULT, 1, LIMIT_MAX)
    before = request.query.get("before_ns")
    if before:
        try:
            until = int(before) - 1
        except ValueError:
            raise fail(400, "before_ns must be a whole number of ns") from None
        if query.until_ns is None or until < query.until_ns:
            query = dataclasses.replace(query, until_ns=until)
    root = reader.root
    rows = await reader.run(lambda conn: select(conn, root, query, last=limit + 1))
    more = len(rows) > limit
    page = rows[1:] if more else rows
    if more:
        cut = rows[0].stored.time_ns
        page = [r for r in page if r.stored.time_ns != cut]
        if not page:  # one run longer than the page: all of it (up to LIMIT_MAX)
            run = dataclasses.replace(query, since_ns=cut, until_ns=cut)
            older = dataclasses.replace(query, until_ns=cut - 1)

            def whole_run(conn: sqlite3.Connection) -> tuple[list[Row], bool]:
                return select(conn, root, run, last=LIMIT_MAX), bool(
                    select(conn, root, older, last=1)
                )

            page, more = await reader.run(whole_run)
    return reply({"records": [record_json(r) for r in reversed(page)], "more": more})


def count_by_severity(
    conn: sqlite3.Connection, root: Any, query: Query, start: int, step_ns: int, points: int
) -> tuple[dict[str, list[int]], bool]:
    """Records per step by severity (oldest first); and whether ``RATE_ROWS`` cut it."""
    series = {label: [0] * points for label in SEVERITY_NAMES}
    rows, _ = select_then_follow(conn, root, query)
    seen = 0
    try:
        for row in rows:
            seen += 1
            if seen > RATE_ROWS:
                return series, True
            slot = (row.stored.time_ns - start) // step_ns
            if 0 <= slot < points:
                series[SEVERITY_NAMES[row.stored.record.severity]][slot] += 1
    finally:
        close = getattr(rows, "close", None)
        if close is not None:
            close()  # its files, when cut short
    return series, False


async def rate(request: web.Request) -> web.StreamResponse:
    """Counts per ``step_s`` by severity from ``since`` to ``until``."""
    reader = request.app[READER]
    name = _name(request)
    now = time.time_ns()
    query = params.query(request, (name,), now)
    until = query.until_ns if query.until_ns is not None else now
    since = query.since_ns if query.since_ns is not None else until - RATE_SPAN_NS
    if since >= until:
        raise fail(400, "since must be before until")
    span_s = (until - since) / 1e9
    step = max(params.integer(request, "step", 1, 1, 86400 * 366), math.ceil(span_s / RATE_POINTS))
    step_ns = step * 1_000_000_000
    points = math.ceil((until - since) / step_ns)
    query = dataclasses.replace(query, since_ns=since, until_ns=until - 1)  # [since, until)
    root = reader.root
    series, partial = await reader.run(
        lambda conn: count_by_severity(conn, root, query, since, step_ns, points)
    )
    return reply(
        {
            "start_ns": since,
            "step_s": step,
            "points": points,
            "series": series,
            "total": sum(sum(v) for v in series.values()),
            "partial": partial,
        }
    )


async def crash_list(request: web.Request) -> web.StreamResponse:
    reader = request.app[READER]
    name = _name(request)
    found = await reader.call(lambda: crashes.summary(reader.root, name))
    return reply({"crashes": found})


async def crash_report(request: web.Request) -> web.StreamResponse:
    reader = request.app[READER]
    name = _name(request)
    file = request.match_info["file"]
    report = await reader.call(lambda: crashes.read_report(reader.root, name, file))
    if report is None:
        raise fail(404, f"{name} has no report named {file[:80]!r}")
    return reply(report)


async def console(request: web.Request) -> web.StreamResponse:
    reader = request.app[READER]
    name = _name(request)
    lines = params.integer(request, "lines", CONSOLE_DEFAULT, 1, LIMIT_MAX)
    query = Query(names=(name,), origins=(Origin.CONSOLE.value,))
    root = reader.root
    rows: list[Row] = await reader.run(lambda conn: select(conn, root, query, last=lines))
    return reply(
        {
            "lines": [
                {
                    "time": rfc3339(r.stored.time_ns),
                    "time_ns": r.stored.time_ns,
                    "severity": SEVERITY_NAMES[r.stored.record.severity],
                    "message": r.stored.record.message,
                }
                for r in rows
            ]
        }
    )


async def _body(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise fail(413, f"a request body is at most {MAX_BODY} bytes")
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise fail(413, f"a request body is at most {MAX_BODY} bytes")
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise fail(400, "the request body is not JSON") from None
    if not isinstance(body, dict):
        raise fail(400, "the request body must be a JSON object")
    return body


async def set_level(request: web.Request) -> web.StreamResponse:
    """``umonitor level NAME LEVEL``: the level the guest acknowledged."""
    from umonitor.collector.control import control_alive
    from umonitor.collector.control import set_level as ask

    root = request.app[READER].root
    name = _name(request)
    level = (await _body(request)).get("level")
    if not isinstance(level, str):
        raise fail(400, 'the body must say the level: {"level": "debug"}')
    try:
        Severity.parse(level)
    except ValueError as exc:
        raise fail(400, str(exc)) from None
    try:
        answer = await asyncio.to_thread(ask, root, name, level)
    except UsageError as exc:
        raise fail(409 if control_alive(root) else 503, str(exc)) from None
    return reply(
        {
            "level": answer.get("level"),
            "was": answer.get("was"),
            "confirmed": bool(answer.get("confirmed")),
        }
    )


async def _fleet_action(request: web.Request, op: str) -> web.StreamResponse:
    """``umonitor stop`` / ``restart``: 503 without a fleet, 404 for a name it does not
    run, 409 with the fleet's sentence when it refuses."""
    from umonitor.fleet.daemon import NO_FLEET
    from umonitor.fleet.daemon import request as ask

    root = request.app[READER].root
    name = request.match_info["name"]
    if not is_instance_name(name):
        raise fail(404, f"no instance named {name[:80]!r}")
    running = await asyncio.to_thread(fleet_instances, root)
    if running is None:
        raise fail(503, NO_FLEET.format(root=root))
    if name not in {str(r.get("name")) for r in running}:
        raise fail(404, f"the fleet runs no instance named {name!r}; 'umonitor ps' lists them")
    try:
        await asyncio.to_thread(ask, root, {"op": op, "name": name})
    except UsageError as exc:
        raise fail(409, str(exc)) from None
    return reply({})


async def stop(request: web.Request) -> web.StreamResponse:
    return await _fleet_action(request, "stop")


async def restart(request: web.Request) -> web.StreamResponse:
    return await _fleet_action(request, "restart")
