"""One log file of an instance, as the store writes it: queued lines, the write, rotation.

A file's lines are queued in memory as records arrive and written with one ``write``
per commit (store/writer.py decides when). Its marks (the highest seq per boot, drop
counts, the boot in force) are learnt when it is opened (store/recovery.py) and saved
in its ``state.json`` (store/log_state.py) once what they count is written.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from umonitor.store import layout, log_state, segments
from umonitor.store.log_state import StateFile
from umonitor.store.logfile import BootLine, format_boot_line
from umonitor.store.recovery import recover
from umonitor.store.worker import DiskWorker
from umonitor.timeparse import format_time

MAX_BOOTS = 256  # boots per log file whose high marks are kept


class InstanceLog:
    """One of an instance's log files (``app.log``, ``console.log``, ``syslog.log``).

    Lines are queued in ``pending`` and written by ``write_pending``. A write the disk
    refuses part-way keeps the unwritten rest of its bytes and finishes them first on
    the next call, so a line is never lost and never written twice.
    """

    def __init__(self, root: Path, name: str, file: str = layout.APP_LOG) -> None:
        if file not in layout.LOG_FILES:
            raise ValueError(f"not a log file name: {file!r}")
        self.name = name
        self.file = file
        self.dir = layout.instance_dir(root, name)
        self.path = self.dir / file
        self._state = StateFile(log_state.state_path(self.dir, file))
        self.pending: list[str] = []
        self._out = b""  # bytes being written; _out[_out_at:] is not on disk yet
        self._out_at = 0
        self.synced = True
        self.fd: int | None = None
        with contextlib.suppress(OSError):  # a full disk: made when the write is retried
            self.dir.mkdir(parents=True, exist_ok=True)
        found = recover(self.dir, file, self._state.load())
        self.high = found.marks.high
        self.dropped = found.marks.dropped
        self.context = found.marks.context
        # The last boot line queued: a new file after rotation starts with it.
        self.boot_line = found.marks.boot_line
        self.generation = found.generation  # of the live file; 0: from before rotation
        if found.new_file:  # its header, then the boot it continues
            self.pending.append(self._header())
            if self.boot_line:
                self.pending.append(self.boot_line)
        self._state.dirty = True
        self.offset = found.size
        # Record lines in the live file, so that retention need not read it to count
        # them; None for a file this process did not start (counted when deleted).
        self.file_records: int | None = 0 if self.offset == 0 else None
        with contextlib.suppress(OSError):
            self._open()

    @property
    def key(self) -> str:
        """The live file's segment key (see store/segments.py)."""
        return f"{self.file}.{self.generation}" if self.generation else self.file

    def _open(self) -> int:
        if self.fd is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(
                self.path,
                os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o644,
            )
        return self.fd

    def _next_generation(self) -> int:
        return segments.next_generation(self.dir, self.file, self.generation)

    def _header(self) -> str:
        stamp = format_time(time.time_ns())
        return segments.format_header(self.file, self.generation, stamp)

    # -- writing --------------------------------------------------------------------

    def switch_to(self, boot: str, library: str = "", peer: str = "", name: str = "") -> None:
        self.boot_line = format_boot_line(BootLine(boot, library, peer, name))
        self.pending.append(self.boot_line)
        self.context = boot
        # High marks are kept for the MAX_BOOTS boots seen last (a guest replays only
        # its own boot): a guest that says HELLO with a new boot id again and again
        # cannot grow this, or state.json, without bound.
        for marks in (self.high, self.dropped):
            if boot in marks:
                marks[boot] = marks.pop(boot)
            while len(marks) > MAX_BOOTS:
                del marks[next(iter(marks))]

    @property
    def unwritten(self) -> bool:
        return bool(self.pending) or self._out_at < len(self._out)

    def unwritten_bytes(self) -> int:
        return len(self._out) - self._out_at + sum(len(p) + 1 for p in self.pending)

    def write_pending(self) -> int:
        """Write everything queued; returns bytes written.

        Raises OSError when the disk refuses; ``offset`` then counts what did get
        written, and the rest is written first by the next call.
        """
        written = 0
        while True:
            if self._out_at >= len(self._out):
                if not self.pending:
                    break
                self._out = ("\n".join(self.pending) + "\n").encode("utf-8", "surrogateescape")
                self._out_at = 0
                self.pending.clear()
            count = os.write(self._open(), memoryview(self._out)[self._out_at :])
            self._out_at += count
            self.offset += count
            written += count
            self.synced = False
            self._state.dirty = True
        self._out, self._out_at = b"", 0
        return written

    def drop_queued_records(self) -> int:
        """Forget the record lines queued (not those being written); returns how many.

        Context lines stay, so the file's boots stay right.
        """
        kept: list[str] = []
        dropped = 0
        for text in self.pending:
            if text.startswith("#"):
                kept.append(text)
            else:
                dropped += text.count("\n") + 1
        self.pending = kept
        self.queued(-dropped)
        return dropped

    def queued(self, records: int) -> None:
        if self.file_records is not None:
            self.file_records += records

    def rotate(self) -> tuple[Path, int, int | None]:
        """Rename the live file to its generation's name and start the next one.

        Only when everything queued is written. Returns the rotated file, its size and
        its record lines (None: not known).
        """
        if self.unwritten:
            raise RuntimeError("rotate with lines not written")
        number = self.generation or self._next_generation()
        target = self.dir / f"{self.file}.{number}"
        if target.exists():  # not ours: keep it, take a free name
            number = self._next_generation()
            target = self.dir / f"{self.file}.{number}"
        os.rename(self.path, target)
        size, records, self.file_records = self.offset, self.file_records, 0
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)
        self.generation = self._next_generation()
        self.offset = 0
        self.synced = True
        self.pending[:0] = [self._header(), *([self.boot_line] if self.boot_line else [])]
        self._state.dirty = True
        self._state.force = True
        with contextlib.suppress(OSError):
            self._open()
        return target, size, records

    def save_state(
        self, now_ns: int, force: bool = False, worker: DiskWorker | None = None
    ) -> bool:
        """Write ``state.json`` if due (through ``worker``, if given); True when saved.

        Never while lines are unwritten: the high marks count queued records, and the
        state must not claim records that a crash could still lose.
        """
        if not self._state.dirty:
            return True
        if self.unwritten:
            return False
        if not self._state.due(now_ns, force):
            return False
        state: dict[str, object] = {
            "file": self.key,
            "offset": self.offset,
            "high": self.high,
            "dropped": self.dropped,
            "context": self.context,
            "boot_line": self.boot_line,
        }
        text = self._state.take(now_ns, state)
        if worker is not None:
            worker.submit(lambda: self._state.write(text))
            return True
        return self._state.write(text)

    def close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)
