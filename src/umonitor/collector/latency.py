"""How long guests wait for their ACKs: a histogram with fixed buckets.

A guest keeps what it sent until it is acknowledged, so the time from a batch's
arrival to the ACK covering it is how long its ring buffer holds those records (and
how much a slow disk or a busy loop costs it). The buckets are Prometheus-style
upper bounds in seconds, fixed, so the histogram costs a few integers whatever the
traffic; observing is a bisection and an increment.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

# 0.5 ms to 10 s, roughly 1-2.5-5 per decade; +Inf is implied.
ACK_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class LatencyHistogram:
    """Counts of observations per bucket (the last one: above every bound), and their sum."""

    bounds: tuple[float, ...] = ACK_BUCKETS
    counts: list[int] = field(init=False)
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    def snapshot(self) -> dict[str, Any]:
        """As the ``metrics`` control operation answers it: cumulative counts per bound."""
        cumulative = []
        running = 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            running += count
            cumulative.append([bound, running])
        return {"buckets": cumulative, "count": sum(self.counts), "sum": self.total}
