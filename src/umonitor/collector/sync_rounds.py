"""``--fsync always``: acknowledgements wait for an fsync that the event loop does not.

How this works: each commit writes what arrived and hands its acknowledgements (each
connection with its ACK mark, and the connections to close after) to ``SyncRounds``.
One round at a time runs in the store's disk worker: it fsyncs every file written
since the last round, then the loop sends the acknowledgements of every commit made
before the round started. Commits that come while a round runs wait for the next one,
so however fast commits come, the disk sees one fsync per file per round (group
commit) and the loop never waits for it. A round that fails acknowledges nothing; the
collector's next commit reports the disk and its retry acknowledges later.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from umonitor.collector.base import Acknowledger
from umonitor.store.writer import Store

# What one commit acknowledges: (connection, ACK mark) pairs, then connections to close.
Batch = tuple[list[tuple[Acknowledger, int]], set[Acknowledger]]


class SyncRounds:
    def __init__(
        self,
        store: Store,
        answer: Callable[[Batch], None],
        failed: Callable[[list[Batch]], None],
    ) -> None:
        self.store = store
        self.answer = answer
        self.failed = failed
        self.waiting: list[Batch] = []
        self.running = False
        self._idle: list[asyncio.Future[None]] = []

    def add(self, batch: Batch) -> None:
        """Acknowledge ``batch`` once a round that starts from now has synced."""
        self.waiting.append(batch)
        if not self.running:
            self._start()

    def _start(self) -> None:
        batches, self.waiting = self.waiting, []
        self.running = True
        loop = asyncio.get_running_loop()

        def synced(ok: bool) -> None:  # in the disk worker's thread
            with contextlib.suppress(RuntimeError):  # the loop is gone: stopping
                loop.call_soon_threadsafe(self._done, ok, batches)

        self.store.sync_in_worker(synced)

    def _done(self, ok: bool, batches: list[Batch]) -> None:
        self.running = False
        if ok:
            for batch in batches:
                self.answer(batch)
        else:
            self.failed(batches)
        if self.waiting:
            self._start()
            return
        idle, self._idle = self._idle, []
        for waiter in idle:
            if not waiter.done():
                waiter.set_result(None)

    async def idle(self) -> None:
        """Until no round runs and none waits (everything committed is answered)."""
        while self.running or self.waiting:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._idle.append(waiter)
            await waiter
