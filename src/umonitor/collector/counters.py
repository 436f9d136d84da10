"""The collector's counters, as the control operation ``metrics`` answers them.

The collector process owns these numbers (the store's tally, the guards' hits, the
ACK latency); ``umonitor web`` asks for them over the control socket and renders them
for Prometheus (web/metrics.py, docs/metrics.md). Every counter counts since this
collector started (``started_ns``). The answer is bounded whatever the guests do:
at most ``MAX_INSTANCES`` instances of their own, the rest summed under ``_other``
(store/tally.py ``fold``); every other key comes from a fixed set.
"""

from __future__ import annotations

import os
import resource
from typing import TYPE_CHECKING, Any

from umonitor.store.tally import fold

if TYPE_CHECKING:
    from umonitor.collector.server import Collector

MAX_INSTANCES = 500  # instances with series of their own; the rest are "_other"
REJECT_REASONS = ("protocol", "datagram", "syslog")
DATAGRAM_DROP_REASONS = ("rate", "disk")


def rss_bytes() -> int:
    """This process's resident memory now (peak, where /proc is not there)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def metrics_answer(collector: Collector, limit: int = MAX_INSTANCES) -> dict[str, Any]:
    """The ``metrics`` operation's answer (without ``ok``); see docs/metrics.md."""
    tally = collector.store.tally
    folded = fold(tally.counts(), tally.dropped, limit)
    return {
        "pid": os.getpid(),
        "started_ns": collector.started_ns,
        "rss_bytes": rss_bytes(),
        "connections": len(collector.streams),
        "records": folded.records,
        "dropped": folded.dropped,
        "folded": folded.folded,
        "rejected": {
            "protocol": collector.protocol_errors,
            "datagram": collector.bad_datagrams,
            "syslog": sum(intake.rejected for intake in collector.syslog),
        },
        "refused": collector.refused,
        "limits": dict(collector.limit_hits),
        "datagrams_dropped": {
            "rate": collector.rate_dropped_datagrams,
            "disk": collector.shed_datagrams,
        },
        "ack_latency": collector.ack_latency.snapshot(),
    }
