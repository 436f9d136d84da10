"""The QMP client's event wait (fleet/qmp.py): a cancelled wait loses no event."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from umonitor.fleet.qmp import QmpClient, QmpEvent


class _Writer:
    def write(self, data: bytes) -> None:
        pass

    async def drain(self) -> None:
        pass


def client() -> QmpClient:
    return QmpClient(asyncio.StreamReader(), cast(Any, _Writer()))


def test_a_cancelled_wait_leaves_the_next_event_to_the_next_call() -> None:
    async def scenario() -> QmpEvent | None:
        qmp = client()
        waiting = asyncio.ensure_future(qmp.next_event())
        await asyncio.sleep(0.01)  # it waits on the queue
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        qmp.events.put_nowait(QmpEvent("STOP", {}, 0.0))
        await asyncio.sleep(0.01)  # a leaked getter would take it now
        return await qmp.next_event(timeout=1)

    got = asyncio.run(scenario())
    assert got is not None and got.name == "STOP"


def test_an_event_taken_while_the_wait_was_cancelled_is_kept() -> None:
    async def scenario() -> list[str]:
        qmp = client()
        waiting = asyncio.ensure_future(qmp.next_event())
        await asyncio.sleep(0.01)
        qmp.events.put_nowait(QmpEvent("RESUME", {}, 0.0))
        waiting.cancel()  # in the same turn as the event's arrival
        results = await asyncio.gather(waiting, return_exceptions=True)
        names = [r.name for r in results if isinstance(r, QmpEvent)]
        again = await qmp.next_event(timeout=0.2)
        if again is not None:
            names.append(again.name)
        return names

    assert asyncio.run(scenario()) == ["RESUME"]  # exactly once, never lost or doubled
