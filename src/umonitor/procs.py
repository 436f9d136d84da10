"""Processes by PID, as /proc shows them (Linux)."""

from __future__ import annotations

from pathlib import Path


def process_running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (an exited process not yet reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"
