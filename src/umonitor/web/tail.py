"""The live tail (``GET /api/tail``): the last matching records, then each new one.

How this works. The records come from ``select_then_follow`` and its ``Follow``, the
very query and follower of ``umonitor logs -n N -f``: the newest N first, then what
is appended to the files, poll by poll. Per browser, two coroutines meet at a
bounded queue:

- the poller asks the follower for new records every ``POLL_S`` (in a thread) and
  admits at most ``RATE`` a second (a token bucket) while the queue has room; every
  other record is counted as skipped, never kept;
- the writer sends what is queued; before the next record (or when idle), a
  ``skipped`` event says how many were left out since the last one.

So a browser that reads slowly, or a fleet that logs faster than a page can show,
costs a fixed amount of memory and never delays the poller, the collector, or any
other browser: it loses records, and is told how many.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time

from aiohttp import web

from umonitor.store import index_query
from umonitor.store.index_query import Follow, Row
from umonitor.web import params
from umonitor.web.answers import fail, record_json
from umonitor.web.events import HEARTBEAT_S, EventStream
from umonitor.web.reading import READER

log = logging.getLogger(__name__)

RATE = 2000  # records a second per browser, at most
QUEUE = 2 * RATE  # records waiting for one browser, at most
POLL_S = 0.25  # seconds between looks at the files
LAST_DEFAULT = 100
LAST_MAX = 1000
MAX_NAMES = 100  # instances chosen by name in one tail


class Budget:
    """A token bucket: ``rate`` records a second, bursts of at most ``rate``."""

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.at = now

    def take(self, now: float) -> bool:
        self.tokens = min(self.rate, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class Gate:
    """Between the poller and the writer of one browser: what passes, what is skipped."""

    def __init__(self, rate: float = RATE, size: int = QUEUE, now: float | None = None) -> None:
        self.queue: asyncio.Queue[Row] = asyncio.Queue(size)
        self.budget = Budget(rate, time.monotonic() if now is None else now)
        self.skipped = 0

    def offer(self, rows: list[Row], now: float) -> None:
        for row in rows:
            if not self.queue.full() and self.budget.take(now):
                self.queue.put_nowait(row)
            else:
                self.skipped += 1

    def take_skipped(self) -> int:
        count, self.skipped = self.skipped, 0
        return count


async def _poll(follower: Follow, gate: Gate) -> None:
    while True:
        try:
            rows = await asyncio.to_thread(follower.poll)
        except Exception:  # a file that vanished mid-read, say: look again next time
            log.exception("the live tail could not read the files")
            rows = []
        gate.offer(rows, time.monotonic())
        await asyncio.sleep(POLL_S)


async def tail(request: web.Request) -> web.StreamResponse:
    reader = request.app[READER]
    root = reader.root
    chosen = request.query.getall("instance", [])
    if len(chosen) > MAX_NAMES:
        raise fail(400, f"at most {MAX_NAMES} instances at once")
    names = tuple(dict.fromkeys(params.instance(root, n) for n in chosen))
    query = params.query(request, names)
    last = params.integer(request, "last", LAST_DEFAULT, 0, LAST_MAX)

    def start(conn: sqlite3.Connection) -> tuple[list[Row], Follow]:
        rows, follower = index_query.select_then_follow(conn, root, query, last=last)
        return list(rows), follower

    async with EventStream(request) as stream:
        first, follower = await reader.run(start)
        await stream.start()
        gate = Gate()
        poller = asyncio.create_task(_poll(follower, gate))
        try:
            for row in first:
                await stream.send("record", record_json(row))
            quiet_since = time.monotonic()
            while not stream.closing.is_set():
                skipped = gate.take_skipped()
                if skipped:
                    await stream.send("skipped", {"count": skipped})
                    quiet_since = time.monotonic()
                try:
                    async with asyncio.timeout(POLL_S * 2):
                        row = await gate.queue.get()
                except TimeoutError:
                    if time.monotonic() - quiet_since >= HEARTBEAT_S:
                        await stream.comment()
                        quiet_since = time.monotonic()
                    continue
                await stream.send("record", record_json(row))
                quiet_since = time.monotonic()
        except ConnectionError:
            pass  # the browser went away
        except Exception:  # the headers are sent: end the stream, say why in the log
            log.exception("the live tail failed")
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
    return stream.response
