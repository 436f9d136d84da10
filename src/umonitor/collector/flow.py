"""Why a transport is not being read, so that one reason's end does not undo another.

A guest's connection stops being read for independent reasons: its instance is over
its rate (``RATE``), the disk refuses writes (``DISK``), the guest does not read what
the collector sends it (``PEER``: asyncio's ``pause_writing``, so that an ACK or PONG
backlog cannot grow without bound), or it has had its turn (``TURN``). Each holds
the gate with its own reason and releases only that one; the transport is read again
when none is left.

Turns: the event loop reads a socket as long as it has data (libuv up to 32 reads of
64 KiB per wakeup), so one guest sending as fast as it can would make every loop
iteration long, and every other guest's ACK wait for it. After ``QUANTUM`` bytes a
connection sits out the rest of the iteration; the others are read and acknowledged
before it is read again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

RATE = "rate"
DISK = "disk"
PEER = "peer"
TURN = "turn"
QUANTUM = 256 << 10  # bytes a connection is read before the others get their turn


class ReadGate:
    """The reasons a transport's reading is paused; reading resumes when none is left."""

    __slots__ = ("peer_since", "reasons", "resumed_at", "taken", "transport")

    def __init__(self, transport: Any) -> None:
        self.transport = transport  # asyncio's or uvloop's, TCP, TLS or UDP
        self.reasons: set[str] = set()
        self.peer_since: float | None = None  # when the peer stopped reading
        self.taken = 0  # bytes read since this connection last sat out a turn
        self.resumed_at = 0.0  # when reading last resumed: time limits count from there

    def took(self, nbytes: int) -> None:
        """Count bytes read; past the quantum, pause until the loop's next iteration."""
        self.taken += nbytes
        if self.taken >= QUANTUM:
            self.taken = 0
            self.hold(TURN)
            asyncio.get_running_loop().call_soon(self.release, TURN)

    def hold(self, reason: str) -> None:
        if reason == PEER and self.peer_since is None:
            self.peer_since = time.monotonic()
        if not self.reasons:
            self._tell("pause_reading")
        self.reasons.add(reason)

    def release(self, reason: str) -> None:
        if reason == PEER:
            self.peer_since = None
        if reason not in self.reasons:
            return
        self.reasons.discard(reason)
        if not self.reasons:
            self.resumed_at = time.monotonic()
            self._tell("resume_reading")

    def _tell(self, method: str) -> None:
        if self.transport.is_closing():
            return
        # uvloop's UDP transports cannot pause: they are bounded elsewhere.
        call = getattr(self.transport, method, None)
        if call is not None:
            with contextlib.suppress(RuntimeError):
                call()

    def held(self, reason: str) -> bool:
        return reason in self.reasons
