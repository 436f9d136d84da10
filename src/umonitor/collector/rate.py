"""Records per second per instance: a token bucket each, with a burst.

``charge`` takes records from an instance's bucket and says how long its senders must
wait before more are read (0: none). The bucket holds ``burst`` tokens, at least 100
and twice the rate, refilled at ``rate`` per second; 0 means no limit.
"""

from __future__ import annotations

import time


class RateBuckets:
    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.burst = max(2 * rate, 100.0)
        self._buckets: dict[str, list[float]] = {}  # instance -> [tokens, when]

    def charge(self, instance: str, records: int) -> float:
        """Take ``records`` from ``instance``; seconds to wait before reading more."""
        rate = self.rate
        if rate <= 0 or records <= 0:
            return 0.0
        now = time.monotonic()
        bucket = self._buckets.setdefault(instance, [self.burst, now])
        bucket[0] = min(self.burst, bucket[0] + (now - bucket[1]) * rate) - records
        bucket[1] = now
        return 0.0 if bucket[0] >= 0 else -bucket[0] / rate
