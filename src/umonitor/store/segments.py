"""Log file segments: the live ``app.log`` and its rotated ``app.log.N``, in order.

How this works: when the writer rotates ``app.log`` it renames it to ``app.log.N``
and starts a new ``app.log``. Readers that follow the files (the index, the
exporters) must not mistake the new file for the old one, nor read the old one twice
under its new name. So every file the writer creates starts with a header line

    # file app.log.8 created=2026-11-26T13:44:35.123456Z

naming the generation it has for life: the live file with that header *is*
``app.log.8``, before and after the rename. A segment's key is that name; readers keep
their positions by key. A file without the header (written before rotation existed)
is keyed by its family name, ``app.log``, wherever it is. The first line of a file
identifies it: a header names its generation and creation time, so a reader that
opened the wrong file (renamed away under it) sees a different first line.

Listing reads the live files' headers before listing the rotated names: a rename
between the two steps shows the segment as rotated, never as missing.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from umonitor.store import layout

HEADER = "# file "
HEAD_MAX = 512
_ROTATED = re.compile(r"(app|console|syslog)\.log\.([1-9][0-9]{0,9})")
_HEADER = re.compile(rb"# file ((?:app|console|syslog)\.log)\.([1-9][0-9]{0,9}) created=\S+")


@dataclass(frozen=True, slots=True)
class Segment:
    """One log file of an instance, named for life by ``key``."""

    key: str  # "app.log.8"; "app.log" for a file from before rotation
    family: str  # "app.log"
    generation: int  # 8; 0 for a file without header
    path: Path  # where it was found
    head: bytes  # its first line (identity), without the newline
    live: bool
    size: int = 0  # when it was listed


def format_header(family: str, generation: int, created: str) -> str:
    """The first line of a new log file (without newline)."""
    return f"{HEADER}{family}.{generation} created={created}"


def parse_header(line: bytes) -> tuple[str, int] | None:
    """(family, generation) of a header line, or None if ``line`` is not one."""
    match = _HEADER.fullmatch(line)
    if match is None:
        return None
    return match.group(1).decode(), int(match.group(2))


def rotated_name(name: str) -> tuple[str, int] | None:
    """(family, N) for a rotated file name ``family.N``, else None."""
    match = _ROTATED.fullmatch(name)
    if match is None:
        return None
    return f"{match.group(1)}.log", int(match.group(2))


def read_head(src: BinaryIO) -> bytes | None:
    """The first line of an open file (position 0 after), or None while it is incomplete."""
    src.seek(0)
    data = src.read(HEAD_MAX)
    src.seek(0)
    newline = data.find(b"\n")
    if newline < 0:
        return None if len(data) < HEAD_MAX else data
    return data[:newline]


def key_for(family: str, name: str, head: bytes) -> tuple[str, int]:
    """(key, generation) of a file ``name`` of ``family`` whose first line is ``head``."""
    parsed = parse_header(head)
    if parsed is not None and parsed[0] == family:
        return f"{family}.{parsed[1]}", parsed[1]
    return family, 0


# path -> (inode, ctime, first line): a file's first line never changes once complete,
# so listing an idle instance costs a stat per file, not an open and a read.
_heads: dict[Path, tuple[int, int, bytes]] = {}


def _head_of(path: Path) -> tuple[bytes, int] | None:
    """(first line, size) of the file at ``path``; None if it is gone or has no line yet."""
    try:
        st = os.stat(path)
        cached = _heads.get(path)
        if cached is not None and cached[:2] == (st.st_ino, st.st_ctime_ns):
            return cached[2], st.st_size
        with open(path, "rb") as src:
            head = read_head(src)
    except OSError:
        return None
    if head is None:
        return None
    if len(_heads) > 10_000:
        _heads.clear()
    _heads[path] = (st.st_ino, st.st_ctime_ns, head)
    return head, st.st_size


def list_segments(directory: Path) -> list[Segment]:
    """The instance's complete log files, per family oldest first, the live file last.

    A file whose first line is not complete yet (just created) is left out.
    """
    found: dict[str, Segment] = {}
    for family in layout.LOG_FILES:
        path = directory / family
        seen = _head_of(path)
        if seen is not None:
            key, generation = key_for(family, family, seen[0])
            found[key] = Segment(key, family, generation, path, seen[0], True, seen[1])
    try:
        names = os.listdir(directory)
    except OSError:
        names = []
    rotated = []
    for name in names:
        parsed = rotated_name(name)
        if parsed is not None:
            rotated.append((parsed[0], parsed[1], name))
    for family, number, name in sorted(rotated):
        path = directory / name
        seen = _head_of(path)
        if seen is None:
            continue
        head, size = seen
        key, generation = key_for(family, name, head)
        listed = found.get(key)
        if listed is not None and (not listed.live or listed.head != head):
            key = f"{family}#{number}"  # a copy, or a second file without header
        # Else it is the live file listed above, renamed since: keep it as rotated.
        found[key] = Segment(key, family, generation, path, head, False, size)
    order = {family: i for i, family in enumerate(layout.LOG_FILES)}
    return sorted(
        found.values(),
        key=lambda s: (order[s.family], s.live, s.generation, s.path.name),
    )


def open_segment(segment: Segment) -> BinaryIO | None:
    """The file that is ``segment`` now (it may have been renamed since it was listed).

    Checked by its first line; None when it is gone.
    """
    src = _open_if(segment.path, segment.head)
    if src is not None or not segment.live:
        return src
    if segment.generation:
        return _open_if(segment.path.with_name(segment.key), segment.head)
    # A live file without header was rotated under some generation: look for it.
    try:
        names = sorted(os.listdir(segment.path.parent))
    except OSError:
        return None
    for name in names:
        parsed = rotated_name(name)
        if parsed is not None and parsed[0] == segment.family:
            src = _open_if(segment.path.with_name(name), segment.head)
            if src is not None:
                return src
    return None


def _open_if(path: Path, head: bytes) -> BinaryIO | None:
    try:
        src = open(path, "rb")  # noqa: SIM115 - handed to the caller
    except OSError:
        return None
    if read_head(src) == head:
        return src
    with contextlib.suppress(OSError):
        src.close()
    return None


def read_lines(fd: int, offset: int, want: int, stop: int, past: int = 0) -> bytes:
    """The complete lines of an open file from ``offset``: about ``want`` bytes (more
    when a line is longer), never past ``stop``, and reaching past ``offset + past``
    when the file has such a line (b"" when not)."""
    while True:
        data = os.pread(fd, min(want, stop - offset), offset)
        end = data.rfind(b"\n") + 1
        if end > past or offset + len(data) >= stop:
            return data[:end] if end > past else b""
        want *= 2


def next_generation(directory: Path, family: str, at_least: int = 0) -> int:
    """The generation after ``at_least`` and after every rotated ``family.N`` in ``directory``.

    Never a generation used before, even if its files are gone: readers know a file by
    it (and by its first line).
    """
    highest = at_least
    with contextlib.suppress(OSError):
        for entry in os.listdir(directory):
            parsed = rotated_name(entry)
            if parsed is not None and parsed[0] == family:
                highest = max(highest, parsed[1])
    return highest + 1
