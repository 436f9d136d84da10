"""What ``umonitor ls`` shows, read from the data directory: each instance's row, the
exporters, the collector's counters.

The CLI prints it as a table or JSON lines and the dashboard serves it as JSON, so
the two cannot disagree on a count: both call ``read_overview``. Nothing here writes
or asks a process anything; it reads the index (store/index_query.py), the collector's
status file and the exporters' status files.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from umonitor.errors import UsageError
from umonitor.export.status import read_statuses
from umonitor.records import SEVERITY_NAMES
from umonitor.store import index, index_query, layout
from umonitor.timeparse import format_time


def collector_status(root: Path) -> dict[str, Any] | None:
    """The running collector's status file (``DATA/collector.json``); None when no
    collector runs (no file, or the process it names is gone)."""
    for _ in range(3):  # on a full disk it is rewritten in place: a read may see a mix
        try:
            status = json.loads((root / layout.STATUS).read_text())
            os.kill(int(status["pid"]), 0)
        except ValueError:
            time.sleep(0.05)
            continue
        except (OSError, KeyError, TypeError):
            return None
        return status if isinstance(status, dict) else None
    return None


def open_index(root: Path, warn: Callable[[str], None]) -> sqlite3.Connection:
    """The index of ``root`` for reading; UsageError when ``root`` holds no data.

    When the index cannot be brought up to date (a full disk, say), what it has is
    used and ``warn`` gets one sentence saying so.
    """
    if not (root / layout.INSTANCES).is_dir():
        raise UsageError(f"no umonitor data in {root}; start 'umonitor serve' or pass --data DIR")
    try:
        return index.connect(root)
    except UsageError as exc:
        conn = index.connect_as_it_is(root)
        warn(f"{exc}; the index may not be up to date")
        return conn


def _store_state(root: Path, status: dict[str, Any]) -> dict[str, Any]:
    """The store's state from the running collector, else the counters on disk."""
    store = status.get("store")
    if isinstance(store, dict):
        return store
    from umonitor.store.retention import DiskUsage, Limits

    usage = DiskUsage(root, Limits())
    return {
        "state": "ok",
        "losses": {n: asdict(v) for n, v in usage.losses.items() if v.any()},
    }


@dataclass(frozen=True, slots=True)
class Overview:
    """Everything ``ls`` says, as read at one moment."""

    instances: list[index_query.InstanceSummary]
    connected: dict[str, list[str]]  # instance -> peers of its live connections
    levels: dict[str, str]  # the level each connected guest said it has
    exporters: list[dict[str, object]]
    store: dict[str, Any]
    losses: dict[str, Any]  # instance -> what retention or the quota took
    refused: str | None  # the instance the quota refuses, if any
    throttled: dict[str, int]
    guard: dict[str, int]  # refused guests, broken protocols, limits hit: what happened
    status: dict[str, Any]  # the collector's status file ({} when none runs)

    @property
    def behind(self) -> int:
        """Bytes of log the counts do not cover yet (not indexed, too much to scan)."""
        return sum(i.behind for i in self.instances)

    @property
    def disk_full(self) -> bool:
        return self.store.get("state") == "disk"

    def row(self, inst: index_query.InstanceSummary) -> dict[str, Any]:
        """The instance's line of ``ls -o json``."""
        peers = self.connected.get(inst.name, [])
        lost = self.losses.get(inst.name, {})
        return {
            "name": inst.name,
            "connected": bool(peers),
            "level": self.levels.get(inst.name) if peers else None,
            "address": peers[0] if peers else inst.peer,
            "library": inst.library,
            "first_seen": format_time(inst.first_ns) if inst.first_ns else None,
            "last_seen": format_time(inst.last_ns) if inst.last_ns else None,
            "records": sum(inst.counts),
            "counts": dict(zip(SEVERITY_NAMES, inst.counts, strict=True)),
            "dropped": inst.dropped,
            "boots": inst.boots,
            "store": "disk" if self.disk_full else "refused" if inst.name == self.refused else "ok",
            "deleted_files": int(lost.get("deleted_files", 0)),
            "deleted_bytes": int(lost.get("deleted_bytes", 0)),
            "deleted_records": int(lost.get("deleted_records", 0)),
            "refused_records": int(lost.get("refused", 0)),
            "throttled": int(self.throttled.get(inst.name, 0)),
        }


def read_overview(conn: sqlite3.Connection, root: Path) -> Overview:
    """What ``ls`` shows now (blocking: it reads the index and small log tails)."""
    status = collector_status(root) or {}
    instances = index_query.instances(conn, root)
    store = _store_state(root, status)
    losses = store.get("losses")
    refused = store.get("refused")
    guard = {
        k: v
        for k, v in (
            ("refused", status.get("refused", 0)),
            ("protocol_errors", status.get("protocol_errors", 0)),
            *status.get("limits", {}).items(),
        )
        if v
    }
    return Overview(
        instances=instances,
        connected=status.get("connected", {}),
        levels=status.get("levels", {}),
        exporters=read_statuses(root),
        store=store,
        losses=losses if isinstance(losses, dict) else {},
        refused=refused if isinstance(refused, str) else None,
        throttled=status.get("throttled", {}),
        guard=guard,
        status=status,
    )
