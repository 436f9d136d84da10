"""Server-sent events: one stream to one browser, and how many may be open at once.

A stream is written by one coroutine; a write waits for the socket (aiohttp's
``drain``), so a browser that reads slowly slows only its own coroutine, whose
producer then drops and counts instead of queueing (tail.py). Every stream ends when
the server shuts down (``closing``), so SIGTERM does not wait for browsers.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiohttp import web

from umonitor.web.answers import dumps, fail

HEARTBEAT_S = 15.0  # a comment line this often keeps proxies from closing an idle stream
MAX_STREAMS = 64  # open event streams per server: each costs a coroutine and a follower

CLOSING = web.AppKey("closing", asyncio.Event)
STREAMS = web.AppKey("streams", list[int])  # [open streams]: a cell the handlers share


class EventStream:
    """One open ``text/event-stream`` response."""

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        self.closing = request.app[CLOSING]
        self._open = request.app[STREAMS]
        self._counted = False

    async def __aenter__(self) -> EventStream:
        """Take a place among the open streams (503 when none is left)."""
        if self._open[0] >= MAX_STREAMS:
            raise fail(503, f"{MAX_STREAMS} live streams are open already; close a page")
        self._open[0] += 1
        self._counted = True
        return self

    async def start(self) -> None:
        """Send the headers: from here on, errors can only end the stream."""
        await self.response.prepare(self.request)

    async def __aexit__(self, *exc: object) -> None:
        if self._counted:
            self._open[0] -= 1
            self._counted = False

    async def send(self, event: str, data: Any) -> None:
        await self.response.write(f"event: {event}\ndata: {dumps(data)}\n\n".encode())

    async def comment(self) -> None:
        await self.response.write(b": keep-alive\n\n")

    async def wait_closing(self, seconds: float) -> bool:
        """Sleep ``seconds``, or less if the server shuts down; whether it does."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.closing.wait()
        return self.closing.is_set()
