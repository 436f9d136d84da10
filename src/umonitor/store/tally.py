"""What the store took since it opened: records by instance, origin and severity.

How this works: each ``(instance, origin)`` has one ``array('q')`` of eight counters,
one per severity. The store adds to it per batch, where it already walks the batch
(``Store.add_records``), and the C accelerator adds to it while it formats a run
(store/fast_runs.py), so ingest makes no Python object per record to count it.
Guest-reported drops are counted as the rise of each boot's DROPPED count.

``fold`` bounds what a report holds: a guest names itself under open admission, so
there may be any number of instances; the ``limit`` with the most records keep their
own entry and the rest are summed under ``OTHER``, which no instance name can be
(store/names.py: a name starts with a letter or digit).
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

from umonitor.records import SEVERITY_NAMES, Origin

OTHER = "_other"
SEVERITIES = len(SEVERITY_NAMES)

# instance -> origin -> records per severity (SEVERITY_NAMES order)
Counts = dict[str, dict[str, list[int]]]


@dataclass
class Tally:
    """Counters of one store, since it opened (collector/counters.py reports them)."""

    records: dict[tuple[str, Origin], array[int]] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)  # instance -> records the guest lost

    def of(self, instance: str, origin: Origin) -> array[int]:
        """The eight severity counters of ``instance``'s records of ``origin``."""
        counters = self.records.get((instance, origin))
        if counters is None:
            counters = self.records[instance, origin] = array("q", bytes(8 * SEVERITIES))
        return counters

    def guest_dropped(self, instance: str, count: int) -> None:
        if count > 0:
            self.dropped[instance] = self.dropped.get(instance, 0) + count

    def counts(self) -> Counts:
        """The records counters as plain data: instance -> origin -> per severity."""
        out: Counts = {}
        for (instance, origin), counters in self.records.items():
            out.setdefault(instance, {})[origin.value] = counters.tolist()
        return out


@dataclass(frozen=True, slots=True)
class Folded:
    """Counts with at most ``limit`` instances of their own, the rest under ``OTHER``."""

    records: Counts
    dropped: dict[str, int]
    folded: int  # instances summed under OTHER


def fold(records: Counts, dropped: dict[str, int], limit: int) -> Folded:
    """Keep the ``limit`` instances with the most records (ties: by name), sum the rest.

    An entry already named ``OTHER`` is summed in again, so folding twice changes
    nothing; ``folded`` then counts only what this call folded.
    """
    names = set(records) | set(dropped)
    names.discard(OTHER)

    def total(name: str) -> int:
        return sum(sum(counts) for counts in records.get(name, {}).values())

    ranked = sorted(names, key=lambda name: (-total(name), name))
    kept = set(ranked[:limit])
    out_records: Counts = {}
    out_dropped: dict[str, int] = {}
    for name, by_origin in records.items():
        target = out_records.setdefault(name if name in kept else OTHER, {})
        for origin, counts in by_origin.items():
            into = target.setdefault(origin, [0] * SEVERITIES)
            for i, count in enumerate(counts[:SEVERITIES]):
                into[i] += int(count)
    for name, count in dropped.items():
        key = name if name in kept else OTHER
        out_dropped[key] = out_dropped.get(key, 0) + int(count)
    return Folded(out_records, out_dropped, len(names) - len(kept))
