"""The only writer of the data directory's log files.

How this works: the collector hands records to ``Store.add_*`` as they are decoded;
they are formatted into lines in memory at once. ``Store.commit`` writes every
instance's pending lines with one ``write`` each (then ``fsync`` per policy) and
returns; only then does the collector acknowledge. Per ``(instance, boot)`` the store
keeps the highest sequence number it holds, so a replayed record is acknowledged
again but written once. That mark survives restarts through ``state.json``, written
at most once a second, plus a scan of whatever the log file gained after it.
"""

from __future__ import annotations

import enum
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from umonitor.records import Origin, Record
from umonitor.store import layout
from umonitor.store.logfile import (
    BootLine,
    DroppedLine,
    LineError,
    LineFormatter,
    RecordLine,
    format_boot_line,
    format_dropped_line,
    parse_line,
)

FormatRecords = Callable[[bytearray, int, int, int, int, int], tuple[int, str, int, int]]
SyslogLines = Callable[[bytearray, int, int, int, bytes, int, int], tuple[int, str, int, int]]
format_records: FormatRecords | None
syslog_lines: SyslogLines | None
try:
    from umonitor._speedups import format_records, syslog_lines
except ImportError:  # the C accelerator is optional; the pure path is the reference
    format_records = syslog_lines = None
if os.environ.get("UMONITOR_PURE_PYTHON"):
    format_records = syslog_lines = None

STATE_INTERVAL_NS = 1_000_000_000


class FsyncPolicy(enum.Enum):
    """When log files are forced to disk.

    ``always``: before every acknowledgement (survives power loss); ``batch``: the
    acknowledgement follows the write to the OS (survives a collector crash) and
    files are fsynced once a second; ``never``: the OS decides.
    """

    ALWAYS = "always"
    BATCH = "batch"
    NEVER = "never"


class InstanceLog:
    """One of an instance's log files (``app.log`` or ``console.log``) and its state."""

    def __init__(self, root: Path, name: str, file: str = layout.APP_LOG) -> None:
        if file not in layout.LOG_FILES:
            raise ValueError(f"not a log file name: {file!r}")
        self.name = name
        self.dir = layout.instance_dir(root, name)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / file
        state = layout.STATE if file == layout.APP_LOG else f"{Path(file).stem}.{layout.STATE}"
        self._state_path = self.dir / state
        self.high: dict[str, int] = {}
        self.dropped: dict[str, int] = {}
        self.context = ""
        self.pending: list[str] = []
        self.synced = True
        self._state_written = 0
        self._state_dirty = False
        self.offset = self._recover()
        self.fd = os.open(
            self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644
        )

    def _recover(self) -> int:
        offset = 0
        try:
            state = json.loads(self._state_path.read_text())
            offset = int(state["offset"])
            self.high = {str(k): int(v) for k, v in state["high"].items()}
            self.dropped = {str(k): int(v) for k, v in state["dropped"].items()}
            self.context = str(state["context"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            offset = 0
            self.high, self.dropped, self.context = {}, {}, ""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return 0
        if offset > size:
            offset, self.high, self.dropped, self.context = 0, {}, {}, ""
        with open(self.path, "rb") as src:
            src.seek(offset)
            tail = src.read()
        for raw in tail.split(b"\n"):
            self._learn(raw.decode("utf-8", "replace"))
        if tail and not tail.endswith(b"\n"):
            # A torn last line from a crash: end it, so the next line starts clean.
            with open(self.path, "ab") as out:
                out.write(b"\n")
            size += 1
        self._state_dirty = True
        return size

    def _learn(self, text: str) -> None:
        try:
            parsed = parse_line(text) if text else None
        except LineError:
            return
        if isinstance(parsed, BootLine):
            self.context = parsed.boot
        elif isinstance(parsed, DroppedLine):
            self.dropped[parsed.boot] = max(self.dropped.get(parsed.boot, 0), parsed.count)
            self.high[parsed.boot] = max(self.high.get(parsed.boot, 0), parsed.through_seq)
        elif isinstance(parsed, RecordLine) and self.context:
            seq = parsed.record.seq
            if seq > self.high.get(self.context, 0):
                self.high[self.context] = seq

    def switch_to(self, boot: str, library: str = "", peer: str = "", name: str = "") -> None:
        self.pending.append(format_boot_line(BootLine(boot, library, peer, name)))
        self.context = boot

    def write_pending(self) -> int:
        if not self.pending:
            return 0
        data = ("\n".join(self.pending) + "\n").encode("utf-8", "surrogateescape")
        self.pending.clear()
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
        self.offset += len(data)
        self.synced = False
        self._state_dirty = True
        return len(data)

    def save_state(self, now_ns: int, force: bool = False) -> bool:
        """Write ``state.json`` if due; True when nothing is left unsaved."""
        if not self._state_dirty:
            return True
        if not force and now_ns - self._state_written < STATE_INTERVAL_NS:
            return False
        state = {
            "offset": self.offset,
            "high": self.high,
            "dropped": self.dropped,
            "context": self.context,
        }
        tmp = self._state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self._state_path)
        self._state_written = now_ns
        self._state_dirty = False
        return True

    def close(self) -> None:
        os.close(self.fd)


class Store:
    """Per-instance log files under ``root/instances``; see the module docstring."""

    fast = format_records is not None

    def __init__(self, root: Path, fsync: FsyncPolicy = FsyncPolicy.BATCH) -> None:
        self.root = layout.prepare_data_dir(root)
        self.fsync = fsync
        self._logs: dict[tuple[str, str], InstanceLog] = {}
        self._dirty: set[InstanceLog] = set()
        self._unsynced: set[InstanceLog] = set()
        self._unsaved: set[InstanceLog] = set()
        self._last_sync = time.monotonic()
        self._formatter = LineFormatter()
        # Text the fast paths queued since the last commit (what bounds a burst's memory).
        self.queued_bytes = 0

    def log(self, name: str, file: str = layout.APP_LOG) -> InstanceLog:
        """The log ``file`` of instance ``name`` (a sanitized name), opened once."""
        log = self._logs.get((name, file))
        if log is None:
            log = self._logs[name, file] = InstanceLog(self.root, name, file)
        return log

    def begin_boot(self, log: InstanceLog, boot: str, library: str, peer: str, name: str) -> int:
        """Note a connection of ``boot``; returns the highest seq already held."""
        log.switch_to(boot, library, peer, name)
        self._dirty.add(log)
        return log.high.get(boot, 0)

    def add_records(
        self, log: InstanceLog, boot: str, records: list[Record], origin: Origin, now_ns: int
    ) -> int:
        """Queue ``records`` of ``boot``; returns the highest seq held once committed."""
        high = log.high.get(boot, 0)
        if log.context != boot:
            log.switch_to(boot)
        append = log.pending.append
        line = self._formatter.line
        for record in records:
            if record.seq <= high:
                continue
            high = record.seq
            wall = record.wall_ns
            append(line(now_ns if wall is None else wall, origin, record))
        log.high[boot] = high
        self._dirty.add(log)
        return high

    def add_record_run(
        self, log: InstanceLog, boot: str, buf: bytearray, pos: int, end: int, max_body: int
    ) -> int:
        """Store a run of RECORD frames straight from a decoder's buffer (fast path).

        Returns where the run stopped; see ``FrameDecoder.take_record_run``.
        """
        if format_records is None:
            return pos
        if log.context != boot:
            log.switch_to(boot)
        stop, text, high, _count = format_records(
            buf, pos, end, max_body, log.high.get(boot, 0), time.time_ns()
        )
        if text:
            log.pending.append(text)
            self.queued_bytes += len(text)
            self._dirty.add(log)
        log.high[boot] = high
        return int(stop)

    def add_syslog_run(
        self,
        log: InstanceLog,
        boot: str,
        buf: bytearray,
        end: int,
        max_frame: int,
        host: bytes,
        seq: int,
    ) -> tuple[int, int]:
        """Store the run of plain RFC 5424 frames from ``host`` at the start of ``buf``.

        The syslog intake's fast path (``_speedups.syslog_lines``); records are
        numbered from ``seq + 1``. Returns (where the run stopped, the last seq).
        """
        if syslog_lines is None:
            return 0, seq
        if log.context != boot:
            log.switch_to(boot)
        stop, text, seq, count = syslog_lines(buf, 0, end, max_frame, host, seq, time.time_ns())
        if count:
            log.pending.append(text)
            self.queued_bytes += len(text)
            log.high[boot] = seq
            self._dirty.add(log)
        return stop, seq

    def add_dropped(self, log: InstanceLog, boot: str, count: int, through_seq: int) -> int:
        if count > log.dropped.get(boot, 0) or through_seq > log.high.get(boot, 0):
            log.dropped[boot] = max(count, log.dropped.get(boot, 0))
            log.high[boot] = max(through_seq, log.high.get(boot, 0))
            log.pending.append(
                format_dropped_line(DroppedLine(boot, log.dropped[boot], through_seq))
            )
            self._dirty.add(log)
        return log.high.get(boot, 0)

    def write_report(self, name: str, file_name: str, text: str) -> Path:
        """Write a report (e.g. a crash report) into ``name``'s ``crashes/`` directory."""
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,100}", file_name) or file_name.startswith("."):
            raise ValueError(f"bad report name {file_name!r}")
        directory = layout.instance_dir(self.root, name) / "crashes"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / file_name
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        return path

    def commit(self) -> int:
        """Write everything queued; with ``always``, fsync it too. Returns bytes written."""
        written = 0
        self.queued_bytes = 0
        for log in self._dirty:
            written += log.write_pending()
            self._unsynced.add(log)
            self._unsaved.add(log)
        self._dirty.clear()
        now = time.monotonic()
        if self.fsync is FsyncPolicy.ALWAYS or (
            self.fsync is FsyncPolicy.BATCH and now - self._last_sync >= 1.0
        ):
            self.sync()
        now_ns = time.time_ns()
        for log in list(self._unsaved):
            if log.save_state(now_ns):
                self._unsaved.discard(log)
        return written

    def sync(self) -> None:
        for log in self._unsynced:
            if not log.synced:
                os.fsync(log.fd)
                log.synced = True
        self._unsynced.clear()
        self._last_sync = time.monotonic()

    def close(self) -> None:
        self.commit()
        if self.fsync is not FsyncPolicy.NEVER:
            self.sync()
        now_ns = time.time_ns()
        for log in self._logs.values():
            log.save_state(now_ns, force=True)
            log.close()
        self._logs.clear()
