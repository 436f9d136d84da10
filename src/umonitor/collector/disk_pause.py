"""While the disk refuses writes: read nothing, acknowledge nothing, retry every second.

How this works: when a commit cannot write everything (full, read-only, gone), the
collector pauses every stream's and UDP listener's read gate for ``DISK``, says so on
stderr (at most every ``SAY_EVERY`` seconds, with how much waits), and commits again
every ``RETRY`` seconds. Guests keep what was not acknowledged and send it again;
reading nothing meanwhile keeps the collector's memory bounded. A stream opened
during the outage is paused as it is counted in. The first commit that writes
everything releases the gates and says so.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from umonitor.collector.flow import DISK, ReadGate

RETRY = 1.0
SAY_EVERY = 10.0


class DiskPause:
    def __init__(self, root: Path, retry: Callable[[], None]) -> None:
        self.root = root
        self._retry_commit = retry
        self._paused: set[ReadGate] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._said = 0.0

    @property
    def active(self) -> bool:
        return bool(self._paused) or self._timer is not None

    def pause(self, gate: ReadGate | None) -> None:
        if gate is not None:
            gate.hold(DISK)
            self._paused.add(gate)

    def forget(self, gate: ReadGate | None) -> None:
        """A stream closed: nothing to release for it later."""
        if gate is not None:
            self._paused.discard(gate)

    def failed(self, gates: Iterable[ReadGate | None], why: str | None, unwritten: int) -> None:
        """A commit could not write everything: pause ``gates``, say so, retry soon."""
        for gate in gates:
            self.pause(gate)
        now = time.monotonic()
        if not self._said or now - self._said >= SAY_EVERY:
            self._said = now
            sys.stderr.write(
                f"umonitor: cannot write to {self.root}: {why}; not acknowledging, reading "
                f"paused, {unwritten} bytes queued; retrying every second\n"
            )
            sys.stderr.flush()
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(RETRY, self._retry)

    def _retry(self) -> None:
        self._timer = None
        self._retry_commit()

    def recovered(self) -> None:
        """A commit wrote everything: read again, say so once."""
        self.cancel()
        for gate in self._paused:
            gate.release(DISK)
        self._paused.clear()
        if self._said:
            self._said = 0.0
            sys.stderr.write(f"umonitor: writing to {self.root} again\n")
            sys.stderr.flush()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
