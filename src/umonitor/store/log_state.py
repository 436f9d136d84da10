"""A log file's saved state: its ``state.json``, read at start and written at most once a second.

The state says how far the log file's high marks, drop counts and boot context count
(``file``: a segment key, ``offset``: a position in it), so that a restart reads only
what the files gained after it (store/recovery.py). It is written whole to a temporary
file and renamed over the old one, so a crash leaves the old state or the new one.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from umonitor.store import layout

STATE_INTERVAL_NS = 1_000_000_000


def state_path(directory: Path, file: str) -> Path:
    """Where the state of log ``file`` in an instance's ``directory`` is kept.

    ``state.json`` for ``app.log``; ``console.state.json`` and so on for the others.
    """
    name = layout.STATE if file == layout.APP_LOG else f"{Path(file).stem}.{layout.STATE}"
    return directory / name


def int_map(value: object) -> dict[str, int]:
    """A saved ``{boot: number}`` map; TypeError or ValueError if it is not one."""
    if not isinstance(value, dict):
        raise TypeError("not a map")
    return {str(k): int(v) for k, v in value.items()}


class StateFile:
    """One ``state.json``: whether it is due, and the write that replaces it.

    ``dirty``: the log changed since the state was last taken; ``force``: the next
    save must not wait for the interval (after a rotation the saved key is gone).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.written = 0  # time.time_ns() of the last state taken
        self.dirty = False
        self.force = False

    def load(self) -> dict[str, object]:
        """What was saved, or ``{}`` when there is no readable state."""
        with contextlib.suppress(OSError, ValueError):
            loaded = json.loads(self.path.read_text())
            if isinstance(loaded, dict):
                return loaded
        return {}

    def due(self, now_ns: int, force: bool) -> bool:
        """Whether a state taken now would be written (the interval, or forced)."""
        return force or self.force or now_ns - self.written >= STATE_INTERVAL_NS

    def take(self, now_ns: int, state: dict[str, object]) -> str:
        """The text of ``state`` as of ``now_ns``, which ``write`` then puts on disk.

        Taken here, in the caller's thread: the maps in ``state`` change after it returns.
        """
        text = json.dumps(state)
        self.written = now_ns
        self.dirty = False
        self.force = False
        return text

    def write(self, text: str) -> bool:
        """Replace the file with ``text``; False (and dirty again) when the disk refuses."""
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_text(text)
            os.replace(tmp, self.path)
        except OSError:
            self.dirty = True  # a full disk: a later turn tries again
            return False
        return True
