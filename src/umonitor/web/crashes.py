"""An instance's crash and start-failure reports (fleet/crash_report.py writes them
through ``Store.write_report`` into the instance's ``crashes/`` directory), listed and
read for the dashboard.

Only files named as ``write_report`` names them are considered, found by listing the
instance's directory: a name asked for over HTTP is looked up in that list, never
joined to a path as given.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from umonitor.store import layout

REPORTS = "crashes"  # the directory of an instance's reports (store/writer.py)
REPORT_NAME = re.compile(r"(crash|start-failure)-[0-9TZ.]{1,40}\.json")
MAX_REPORT = 8 << 20  # bytes of a report read at most
MAX_LISTED = 200  # reports listed (the newest)


def report_names(root: Path, name: str) -> list[str]:
    """The instance's report files, newest first (by the time in their names)."""
    try:
        found = [p.name for p in _reports(root, name).iterdir() if REPORT_NAME.fullmatch(p.name)]
    except OSError:
        return []
    return sorted(found, key=_stamp, reverse=True)


def _reports(root: Path, name: str) -> Path:
    return layout.instance_dir(root, name) / REPORTS


def _stamp(file: str) -> str:
    return file.split("-", 2)[-1] if file.startswith("start-failure") else file.split("-", 1)[1]


def read_report(root: Path, name: str, file: str) -> dict[str, Any] | None:
    """The report ``file`` of instance ``name`` as written; None when it is not one of
    the instance's reports or cannot be read as one."""
    if file not in report_names(root, name):
        return None
    try:
        with open(_reports(root, name) / file, "rb") as src:
            raw = src.read(MAX_REPORT + 1)
        report = json.loads(raw) if len(raw) <= MAX_REPORT else None
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) else None


def summary(root: Path, name: str) -> list[dict[str, Any]]:
    """What the crash list shows of each report, newest first."""
    from umonitor.debug.crash_state import crash_summary

    out = []
    for file in report_names(root, name)[:MAX_LISTED]:
        report = read_report(root, name, file) or {}
        said = dict(crash_summary(report)) if report else {}
        out.append(
            {
                "file": file,
                "kind": "start-failure" if file.startswith("start-failure") else "crash",
                "time": report.get("time"),
                "reason": report.get("reason"),
                "summary": said.get("fault") or said.get("backtrace") or report.get("reason"),
            }
        )
    return out
