"""What the benchmarks read about a process from /proc."""

from __future__ import annotations

import re
from pathlib import Path


def status_kib(pid: int, key: str = "VmHWM") -> int:
    """A size from /proc/PID/status in KiB (VmHWM: peak RSS), 0 if the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(rf"{key}:\s+(\d+)", text)
    return int(match.group(1)) if match else 0
