"""Recovering a log file's marks when the writer opens it, after a clean stop or a crash.

How this works: the writer keeps, per log file, the highest sequence number it holds
per boot (so a replayed record is written once), the drop counts, and the boot the
next record lines belong to (the last boot line). Those are saved in ``state.json``
(store/log_state.py) with the segment key and offset they count up to. On opening,
the live file's torn last line, if any, is cut off; then the files are read from the
saved position on (every file of the family when the state is missing, unreadable or
ahead of the file), learning from boot lines, DROPPED lines and record lines' seqs.
A live file without its header line (new, or emptied by the cut) gets a generation
never used before.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from umonitor.errors import LineError
from umonitor.store import segments
from umonitor.store.log_state import int_map
from umonitor.store.logfile import BootLine, DroppedLine, format_boot_line, parse_line


@dataclass(slots=True)
class Marks:
    """What a log file's lines say so far: high marks and drops per boot, the boot in force."""

    high: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    context: str = ""  # the boot of the last boot line
    boot_line: str = ""  # that line

    @classmethod
    def from_state(cls, state: Mapping[str, object]) -> Marks:
        """The marks saved in a state; KeyError, TypeError or ValueError if it has none."""
        return cls(
            int_map(state["high"]),
            int_map(state["dropped"]),
            str(state["context"]),
            str(state.get("boot_line", "")),
        )

    def scan(self, path: Path, start: int) -> None:
        """Learn from the complete lines of ``path`` after offset ``start``."""
        try:
            src = open(path, "rb")  # noqa: SIM115 - closed below
        except OSError:
            return
        with src:
            src.seek(start)
            rest = b""
            while chunk := src.read(1 << 22):
                lines = (rest + chunk).split(b"\n")
                rest = lines.pop()
                for line in lines:
                    self.learn(line)

    def learn(self, line: bytes) -> None:
        """Learn from one line (without its newline)."""
        if not line:
            return
        if not line.startswith(b"#"):
            # Record lines: only the seq matters here (the 4th word).
            parts = line.split(b" ", 4)
            if len(parts) == 5 and parts[3].isdigit() and self.context:
                seq = int(parts[3])
                if seq > self.high.get(self.context, 0):
                    self.high[self.context] = seq
            return
        try:
            parsed = parse_line(line.decode("utf-8", "replace"))
        except LineError:
            return
        if isinstance(parsed, BootLine):
            self.context = parsed.boot
            self.boot_line = line.decode("utf-8", "surrogateescape")
        elif isinstance(parsed, DroppedLine):
            self.dropped[parsed.boot] = max(self.dropped.get(parsed.boot, 0), parsed.count)
            self.high[parsed.boot] = max(self.high.get(parsed.boot, 0), parsed.through_seq)


@dataclass(slots=True)
class Recovered:
    """A log file as the writer finds it on opening."""

    marks: Marks
    size: int  # of the live file, after its torn last line was cut off
    generation: int  # of the live file; 0: a file from before rotation (no header)
    new_file: bool  # the live file has no header yet: the writer starts it


def recover(directory: Path, file: str, state: Mapping[str, object]) -> Recovered:
    """Learn the marks of log ``file`` from its saved ``state`` and what the files gained.

    Repairs a torn last line by cutting it off: it was never acknowledged (the ACK
    follows the whole write), so its guest sends it again; the index and exporters read
    only complete lines and never saw it.
    """
    size, head = repair_tail(directory / file)
    live_key = None
    generation = 0
    if head is not None:
        live_key, generation = segments.key_for(file, file, head)
    try:
        state_key = str(state.get("file", file))
        offset = int(str(state["offset"]))
        marks = Marks.from_state(state)
    except (ValueError, KeyError, TypeError):
        state_key, offset = "", 0
        marks = Marks()
    family = [s for s in segments.list_segments(directory) if s.family == file]
    keys = [s.key for s in family]
    if state_key in keys and not (state_key == live_key and offset > size):
        start = keys.index(state_key)
    else:  # no usable state: learn from every file there is
        start, offset = 0, 0
        marks = Marks()
    for seg in family[start:]:
        marks.scan(seg.path, offset if seg.key == state_key else 0)
    if marks.context and not marks.boot_line:
        marks.boot_line = format_boot_line(BootLine(marks.context, "", "", ""))
    if head is None:  # a new live file: the generation after the last one known
        named = segments.rotated_name(state_key)
        generation = named[1] if named is not None and named[0] == file else 0
        generation = segments.next_generation(directory, file, generation)
    return Recovered(marks, size, generation, head is None)


def repair_tail(path: Path) -> tuple[int, bytes | None]:
    """(size, first line) of the log file at ``path`` after cutting a torn last line off."""
    try:
        src = open(path, "r+b")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return 0, None
    with src:
        size = os.fstat(src.fileno()).st_size
        end = 0
        back = min(size, 1 << 16)
        while back:
            src.seek(size - back)
            newline = src.read(back).rfind(b"\n")
            if newline >= 0:
                end = size - back + newline + 1
                break
            if back == size:
                break
            back = min(size, back * 4)
        if end != size:
            src.truncate(end)
            size = end
        return size, segments.read_head(src) if size else None
