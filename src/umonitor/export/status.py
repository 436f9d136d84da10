"""Where exporters keep their state, and reading it for ``umonitor ls``.

Each exporter's runner (export/runner.py) rewrites ``DATA/export/NAME.status.json``;
``ls`` reads them here without importing what runs an exporter.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from umonitor.procs import process_running

EXPORT_DIR = "export"


def export_dir(root: Path) -> Path:
    return root / EXPORT_DIR


def read_statuses(root: Path) -> list[dict[str, object]]:
    """What ``umonitor ls`` shows of the exporters; a stale state says "not running"."""
    out = []
    for path in sorted(export_dir(root).glob("*.status.json")):
        try:
            status = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(status, dict):
            continue
        updated = status.get("updated")
        pid = status.get("pid")
        alive = isinstance(pid, int) and process_running(pid)
        if status.get("state") != "stopped" and (
            not alive or not isinstance(updated, float | int) or time.time() - updated > 30
        ):
            status["state"] = "not running"
        out.append(status)
    return out
