"""Blocking reads of the data directory, off the event loop and few at a time.

Every query of the index (SQLite) and every scan of log files blocks, so each runs in
a thread (``asyncio.to_thread``) with a connection of its own borrowed from a small
pool: a connection is never in two transactions at once, and at most ``THREADS``
reads run together however many browsers ask; the others wait their turn.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from aiohttp import web

from umonitor.overview import open_index

log = logging.getLogger(__name__)

T = TypeVar("T")
THREADS = 3  # reads at once (the host has other work: the collector comes first)


class Reader:
    """Runs blocking reads of ``root`` in threads, each with an index connection."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._idle: list[sqlite3.Connection] = []
        self._turns = asyncio.Semaphore(THREADS)
        self._warned = False

    def check(self) -> None:
        """UsageError now when ``root`` holds no umonitor data (before listening)."""
        self._idle.append(self._connect())

    def _connect(self) -> sqlite3.Connection:
        return open_index(self.root, self._warn)

    def _warn(self, text: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning("%s", text)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` in a thread, when a turn is free."""
        async with self._turns:
            return await asyncio.to_thread(self._with_connection, fn)

    def _with_connection(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        # In the thread: a read cancelled by its browser still ends here, and only
        # then is its connection free for another.
        try:
            conn = self._idle.pop()
        except IndexError:
            conn = self._connect()
        try:
            return fn(conn)
        finally:
            self._idle.append(conn)

    async def call(self, fn: Callable[[], T]) -> T:
        """``fn()`` in a thread, without a connection, in turn with the reads."""
        async with self._turns:
            return await asyncio.to_thread(fn)

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()


READER = web.AppKey("reader", Reader)
