"""Where things live in the data directory, and how to find it."""

from __future__ import annotations

import os
from pathlib import Path

from umonitor.errors import UsageError
from umonitor.store.names import is_instance_name

INSTANCES = "instances"
INDEX = "index.sqlite"
STATUS = "collector.json"
APP_LOG = "app.log"
CONSOLE_LOG = "console.log"
SYSLOG_LOG = "syslog.log"
LOG_FILES = (APP_LOG, CONSOLE_LOG, SYSLOG_LOG)
STATE = "state.json"


def default_data_dir() -> Path:
    """``$UMONITOR_DATA``, else ``$XDG_DATA_HOME/umonitor``, else ~/.local/share/umonitor."""
    env = os.environ.get("UMONITOR_DATA")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "umonitor"


def instance_dir(root: Path, name: str) -> Path:
    """The directory of instance ``name``; refuses anything but a sanitized name."""
    if not is_instance_name(name):
        raise ValueError(f"not a sanitized instance name: {name!r}")
    return root / INSTANCES / name


def prepare_data_dir(root: Path) -> Path:
    """Create the data directory if needed and check it is usable."""
    try:
        (root / INSTANCES).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            f"cannot use data directory {root}: {exc.strerror}; pass --data DIR "
            "or set UMONITOR_DATA to a writable directory"
        ) from exc
    if not os.access(root, os.R_OK | os.W_OK | os.X_OK):
        raise UsageError(
            f"data directory {root} is not writable; pass --data DIR or set UMONITOR_DATA"
        )
    return root
