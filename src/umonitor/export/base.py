"""What every exporter's sink implements, and what it is given.

A sink delivers batches of stored records to one downstream system. The exporter
runner (``umonitor.export.runner``) reads the batches from the store's log files,
calls ``send`` and moves its saved position past a batch only when ``send``
returned. So a sink must return only when the downstream has the whole batch as far
as its protocol can tell, and must raise ``DeliveryError`` otherwise, saying how many
records from the start of the batch did get there. The runner then waits (backing
off) and sends the rest again; a sink reconnects by itself on the next ``send``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from umonitor.records import StoredRecord


@dataclass(frozen=True, slots=True)
class ExportItem:
    """One stored record and where it is: instance, boot and file."""

    stored: StoredRecord
    boot: str  # the boot (or connection) id the record was numbered in; "" if unknown
    file: str  # the log file it came from: app.log, console.log or syslog.log

    @property
    def instance(self) -> str:
        return self.stored.instance


class Sink(Protocol):
    """One downstream; not shared between tasks."""

    @property
    def target(self) -> str:
        """Where records go, for people: ``syslog+tcp://10.0.0.1:514``."""
        ...

    async def send(self, items: Sequence[ExportItem]) -> None:
        """Deliver ``items`` (1 to a few thousand, in store order) or raise DeliveryError."""
        ...

    async def close(self) -> None:
        """Let go of connections; ``send`` may be called again afterwards."""
        ...
