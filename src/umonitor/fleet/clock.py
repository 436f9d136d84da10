"""Time as the fleet sees it: monotonic seconds, wall-clock nanoseconds, and sleeping.

The supervisor and its helpers take a ``Clock`` rather than calling ``time`` and
``asyncio.sleep``, so that tests run them on a fake clock whose time moves only when
they say (delays such as backoff and the stop grace are then exact).
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """Time as the supervisor sees it (a fake one in tests)."""

    def monotonic(self) -> float: ...

    def time_ns(self) -> int: ...

    async def sleep(self, seconds: float) -> None: ...


class RealClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def time_ns(self) -> int:
        return time.time_ns()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
