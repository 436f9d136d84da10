"""The fleet as the dashboard shows it (``GET /api/fleet``) and its live updates.

How this works: one ``FleetView`` per server builds the object from what the CLI
reads — ``ls`` (overview.py: the index, the collector's status file, the exporters'
status files) and, when a fleet runs, ``ps`` over the control socket — in a thread,
at most once a second however many browsers watch: every request and every event
stream within that second gets the same object. Record rates come from successive
counts: each build keeps the instance's count, and the rate is the growth since the
oldest count of the last ``RATE_WINDOW_S`` seconds.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from umonitor.errors import UsageError
from umonitor.overview import read_overview
from umonitor.procs import process_running
from umonitor.records import SEVERITY_NAMES
from umonitor.web.crashes import report_names
from umonitor.web.events import HEARTBEAT_S, EventStream
from umonitor.web.reading import Reader

log = logging.getLogger(__name__)

REFRESH_S = 1.0  # the object is built at most this often
RATE_WINDOW_S = 10.0  # records/s over this many seconds
PS_TIMEOUT_S = 5.0


def fleet_instances(root: Path) -> list[dict[str, Any]] | None:
    """``ps``'s rows from the fleet on ``root``; None when no fleet runs there (no
    collector, or a collector of ``serve``)."""
    from umonitor.collector.control import control_alive
    from umonitor.fleet.daemon import request

    if not control_alive(root):
        return None
    try:
        reply = request(root, {"op": "ps"}, timeout=PS_TIMEOUT_S)
    except UsageError:
        return None
    rows = reply.get("instances")
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else None


def _rss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _collector(status: dict[str, Any]) -> dict[str, Any]:
    pid = status.get("pid")
    running = isinstance(pid, int) and process_running(pid)
    connected = status.get("connected", {})
    return {
        "pid": pid if running else None,
        "running": running,
        "rss_bytes": _rss_bytes(pid) if running and isinstance(pid, int) else None,
        "connections": sum(len(p) for p in connected.values() if isinstance(p, list)),
        "listening": status.get("listening", []) if running else [],
        "refused": status.get("refused", 0),
        "protocol_errors": status.get("protocol_errors", 0),
        "limits": status.get("limits", {}),
    }


def _exporter(status: dict[str, object]) -> dict[str, object]:
    return {
        "name": status.get("exporter"),
        "target": status.get("target"),
        "state": status.get("state"),
        "backlog": status.get("backlog_bytes", 0),
        "sent": status.get("sent", 0),
        "dropped": status.get("dropped", 0),
        "error": status.get("error") or None,
    }


class RateMeter:
    """Records/s per instance from the counts seen at successive looks."""

    def __init__(self, window_s: float = RATE_WINDOW_S) -> None:
        self.window_ns = int(window_s * 1e9)
        self._seen: dict[str, collections.deque[tuple[int, int]]] = {}

    def add(self, name: str, now_ns: int, records: int) -> float:
        """The rate of ``name`` given its count now: the growth since the last count
        at or before the window's start (or the oldest one kept, at first)."""
        seen = self._seen.setdefault(name, collections.deque())
        if seen and (now_ns < seen[-1][0] or records < seen[-1][1]):
            seen.clear()  # the clock went back, or retention took records: start over
        seen.append((now_ns, records))
        while len(seen) > 2 and now_ns - seen[1][0] >= self.window_ns:
            seen.popleft()  # keep one count at or before the window's start
        then, before = seen[0]
        if now_ns <= then:
            return 0.0
        return round((records - before) / ((now_ns - then) / 1e9), 2)

    def keep(self, names: set[str]) -> None:
        """Forget instances that are gone."""
        for gone in set(self._seen) - names:
            del self._seen[gone]


class FleetView:
    """The shared, at most once-a-second fleet object."""

    def __init__(self, reader: Reader) -> None:
        self._reader = reader
        self._lock = asyncio.Lock()
        self._built: dict[str, Any] | None = None
        self._built_at = -REFRESH_S
        self._rates = RateMeter()

    async def get(self) -> dict[str, Any]:
        """The fleet object, rebuilt when the last one is a second old."""
        async with self._lock:
            if self._built is None or time.monotonic() - self._built_at >= REFRESH_S:
                self._built = await self._reader.run(self._build)
                self._built_at = time.monotonic()
            return self._built

    def _build(self, conn: sqlite3.Connection) -> dict[str, Any]:
        root = self._reader.root
        seen = read_overview(conn, root)
        fleet = fleet_instances(root)
        now = time.time_ns()
        rows = {inst.name: seen.row(inst) for inst in seen.instances}
        by_fleet = {str(r.get("name")): r for r in fleet or []}
        out = []
        for name in sorted(set(rows) | set(by_fleet)):
            row = rows.get(name)
            ps = by_fleet.get(name)
            connected = bool(row and row["connected"])
            counts = row["counts"] if row else dict.fromkeys(SEVERITY_NAMES, 0)
            records = row["records"] if row else 0
            out.append(
                {
                    "name": name,
                    "state": ps.get("state")
                    if ps
                    else ("connected" if connected else "disconnected"),
                    "connected": connected,
                    "address": (ps.get("address") if ps else None)
                    or (row["address"] if row else None)
                    or None,
                    "uptime_s": ps.get("uptime_s") if ps else None,
                    "restarts": ps.get("restarts", 0) if ps else 0,
                    "last_exit": ps.get("last_exit") if ps else None,
                    "level": (ps.get("level") if ps else None) or (row["level"] if row else None),
                    "counts": counts,
                    "records": records,
                    "rate": self._rates.add(name, now, records),
                    "dropped": row["dropped"] if row else 0,
                    "crashes": len(report_names(root, name)),
                    "last_seen": row["last_seen"] if row else None,
                    "fleet": ps is not None,
                }
            )
        self._rates.keep(set(rows) | set(by_fleet))
        return {
            "updated_ns": now,
            "fleet": fleet is not None,
            "instances": out,
            "collector": _collector(seen.status),
            "exporters": [_exporter(s) for s in seen.exporters],
            "behind_bytes": seen.behind,
        }


FLEET_VIEW = web.AppKey("fleet_view", FleetView)


async def get_fleet(request: web.Request) -> web.StreamResponse:
    from umonitor.web.answers import reply

    return reply(await request.app[FLEET_VIEW].get())


async def fleet_events(request: web.Request) -> web.StreamResponse:
    """``fleet`` events: the object at once, then whenever it changed (a second apart
    at most), and a comment line when nothing was sent for ``HEARTBEAT_S``."""
    view = request.app[FLEET_VIEW]
    async with EventStream(request) as stream:
        await stream.start()
        last: dict[str, Any] | None = None
        quiet_since = time.monotonic()
        try:
            while not stream.closing.is_set():
                built = await view.get()
                same = last is not None and _without_time(built) == _without_time(last)
                if not same:
                    await stream.send("fleet", built)
                    last, quiet_since = built, time.monotonic()
                elif time.monotonic() - quiet_since >= HEARTBEAT_S:
                    await stream.comment()
                    quiet_since = time.monotonic()
                if await stream.wait_closing(REFRESH_S):
                    break
        except ConnectionError:
            pass  # the browser went away
        except Exception:  # the headers are sent: end the stream, say why in the log
            log.exception("the fleet's event stream failed")
    return stream.response


def _without_time(built: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in built.items() if k != "updated_ns"}
