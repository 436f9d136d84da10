"""A small asyncio QMP client: commands, replies and events over a unix socket.

How this works: after the greeting and ``qmp_capabilities``, one reader task reads
JSON lines. A line with ``return`` or ``error`` completes the oldest command waiting
(QMP answers in order); a line with ``event`` goes to the event queue. Everything
from the socket is untrusted and malformed input ends the session with ``QmpError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from umonitor.errors import UmonitorError

MAX_LINE = 1 << 20


class QmpError(UmonitorError):
    """QEMU refused a command, or the QMP session broke."""


@dataclass(frozen=True, slots=True)
class QmpEvent:
    name: str
    data: dict[str, Any]
    timestamp: float


class QmpClient:
    """One QMP session; use ``await QmpClient.connect(path)``."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._waiting: deque[asyncio.Future[dict[str, Any]]] = deque()
        self.events: asyncio.Queue[QmpEvent] = asyncio.Queue(maxsize=1024)
        self._ahead: deque[QmpEvent] = deque()  # taken from the queue, not yet returned
        self._task: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()

    @classmethod
    async def connect(cls, path: Path, timeout: float = 5.0) -> QmpClient:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_unix_connection(str(path), limit=MAX_LINE)
                client = cls(reader, writer)
                greeting = _parse_untrusted(await reader.readline())
                if "QMP" not in greeting:
                    raise QmpError(f"{path} did not greet with QMP")
                client._task = asyncio.get_running_loop().create_task(client._read_loop())
                await client.execute("qmp_capabilities")
        except (OSError, TimeoutError) as exc:
            raise QmpError(f"cannot talk QMP on {path}: {exc}") from exc
        return client

    async def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Run ``command``; returns its ``return`` value or raises QmpError."""
        if self.closed.is_set():
            raise QmpError("QMP session is closed")
        message: dict[str, Any] = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        self._writer.write(json.dumps(message).encode() + b"\n")
        await self._writer.drain()
        reply = await future
        if "error" in reply:
            error = reply["error"]
            desc = error.get("desc", error) if isinstance(error, dict) else error
            raise QmpError(f"QEMU refused {command}: {desc}")
        return reply.get("return")

    async def _read_loop(self) -> None:
        failure: Exception = QmpError("QEMU closed the QMP socket")
        try:
            while True:
                line = await self._reader.readline()
                if not line:
                    break
                message = _parse_untrusted(line)
                if "event" in message:
                    stamp = message.get("timestamp", {})
                    when = 0.0
                    if isinstance(stamp, dict):
                        when = (
                            float(stamp.get("seconds", 0))
                            + float(stamp.get("microseconds", 0)) / 1e6
                        )
                    data = message.get("data", {})
                    event = QmpEvent(str(message["event"]), data if isinstance(data, dict) else {},
                                     when)  # fmt: skip
                    with contextlib.suppress(asyncio.QueueFull):
                        self.events.put_nowait(event)
                elif ("return" in message or "error" in message) and self._waiting:
                    future = self._waiting.popleft()
                    if not future.done():
                        future.set_result(message)
        except (OSError, ValueError, QmpError) as exc:
            failure = exc if isinstance(exc, QmpError) else QmpError(f"QMP session broke: {exc}")
        finally:
            self.closed.set()
            while self._waiting:
                future = self._waiting.popleft()
                if not future.done():
                    future.set_exception(failure)

    async def next_event(self, timeout: float | None = None) -> QmpEvent | None:
        """The next event, or None when the session closed or ``timeout`` passed.

        A caller cancelled while it waits loses no event: the queue's getter is
        cancelled with it, or the event it already took is kept for the next call.
        """
        if self._ahead:
            return self._ahead.popleft()
        getter = asyncio.ensure_future(self.events.get())
        closed = asyncio.ensure_future(self.closed.wait())
        try:
            done, _ = await asyncio.wait(
                {getter, closed}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        except BaseException:
            self._keep(getter)
            raise
        finally:
            closed.cancel()
        if getter in done:
            return getter.result()
        self._keep(getter)
        if self._ahead:
            return self._ahead.popleft()
        if not self.events.empty():
            return self.events.get_nowait()
        return None

    def _keep(self, getter: asyncio.Future[QmpEvent]) -> None:
        """Stop a getter that is not needed; an event it took waits for the next call."""
        if not getter.done():
            getter.cancel()  # asyncio.Queue leaves the item in the queue
        elif not getter.cancelled() and getter.exception() is None:
            self._ahead.append(getter.result())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()
        self.closed.set()


def _parse_untrusted(line: bytes) -> dict[str, Any]:
    try:
        message = json.loads(line)
    except ValueError as exc:
        raise QmpError(f"QMP sent something that is not JSON: {line[:80]!r}") from exc
    if not isinstance(message, dict):
        raise QmpError("QMP sent a JSON value that is not an object")
    return message
