"""The only writer of the data directory's log files.

How this works: the collector hands records to ``Store.add_*`` as they are decoded;
they are formatted into lines in memory at once. ``Store.commit`` writes every
instance's pending lines with one ``write`` each (then ``fsync`` per policy) and
returns; only then does the collector acknowledge. Per ``(instance, boot)`` the store
keeps the highest sequence number it holds, so a replayed record is acknowledged
again but written once. That mark survives restarts through ``state.json``, written
at most once a second, plus a scan of whatever the log files gained after it.

When the disk refuses a write, ``Store.failure`` says why and nothing is lost: the
bytes not written (even half a line) are written first by the next commit, and no
state is saved that counts them. After a write, a file at the rotate size is renamed
to its generation's name (store/segments.py) and a new one started; retention and the
quota (store/retention.py) then decide what rotated files go.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from umonitor.errors import LineError
from umonitor.records import Origin, Record
from umonitor.store import layout, segments
from umonitor.store.logfile import (
    BootLine,
    DroppedLine,
    LineFormatter,
    format_boot_line,
    format_dropped_line,
    parse_line,
)
from umonitor.store.retention import DiskUsage, Limits
from umonitor.store.worker import DiskWorker
from umonitor.timeparse import format_time

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
MAX_BOOTS = 256  # boots per log file whose high marks are kept


class FsyncPolicy(enum.Enum):
    """When log files are forced to disk.

    ``always``: before every acknowledgement (survives power loss); ``batch``: the
    acknowledgement follows the write to the OS (survives a collector crash) and
    files are fsynced once a second; ``never``: the OS decides.
    """

    ALWAYS = "always"
    BATCH = "batch"
    NEVER = "never"


def _int_map(value: object) -> dict[str, int]:
    if not isinstance(value, dict):
        raise TypeError("not a map")
    return {str(k): int(v) for k, v in value.items()}


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
        state = layout.STATE if file == layout.APP_LOG else f"{Path(file).stem}.{layout.STATE}"
        self._state_path = self.dir / state
        self.high: dict[str, int] = {}
        self.dropped: dict[str, int] = {}
        self.context = ""
        self.boot_line = ""  # the last boot line queued: a new file after rotation starts with it
        self.pending: list[str] = []
        self._out = b""  # bytes being written; _out[_out_at:] is not on disk yet
        self._out_at = 0
        self.synced = True
        self.fd: int | None = None
        self.generation = 0  # of the live file; 0: a file from before rotation (no header)
        self._state_written = 0
        self._state_dirty = False
        self._state_force = False
        with contextlib.suppress(OSError):  # a full disk: made when the write is retried
            self.dir.mkdir(parents=True, exist_ok=True)
        self.offset = self._recover()
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

    # -- recovery -----------------------------------------------------------------

    def _recover(self) -> int:
        """Learn the high marks and context from state.json and what the files gained.

        Returns the live file's size. Repairs a torn last line by cutting it off: it
        was never acknowledged (the ACK follows the whole write), so its guest sends
        it again; the index and exporters read only complete lines and never saw it.
        """
        state: dict[str, object] = {}
        with contextlib.suppress(OSError, ValueError):
            loaded = json.loads(self._state_path.read_text())
            if isinstance(loaded, dict):
                state = loaded
        size, head = self._repair_live()
        live_key = None
        if head is not None:
            live_key, self.generation = segments.key_for(self.file, self.file, head)
        try:
            state_key = str(state.get("file", self.file))
            offset = int(str(state["offset"]))
            self.high = _int_map(state["high"])
            self.dropped = _int_map(state["dropped"])
            self.context = str(state["context"])
            self.boot_line = str(state.get("boot_line", ""))
        except (ValueError, KeyError, TypeError):
            state_key, offset = "", 0
            self.high, self.dropped, self.context, self.boot_line = {}, {}, "", ""
        family = [s for s in segments.list_segments(self.dir) if s.family == self.file]
        keys = [s.key for s in family]
        if state_key in keys and not (state_key == live_key and offset > size):
            start = keys.index(state_key)
        else:  # no usable state: learn from every file there is
            start, offset = 0, 0
            self.high, self.dropped, self.context, self.boot_line = {}, {}, "", ""
        for seg in family[start:]:
            self._scan(seg.path, offset if seg.key == state_key else 0)
        if self.context and not self.boot_line:
            self.boot_line = format_boot_line(BootLine(self.context, "", "", ""))
        if head is None:  # a new live file: its header, then the boot it continues
            # Never a generation used before, even if its files are gone: readers know
            # a file by it (and by its first line).
            named = segments.rotated_name(state_key)
            self.generation = named[1] if named is not None and named[0] == self.file else 0
            self.generation = self._next_generation()
            self.pending.append(self._header())
            if self.boot_line:
                self.pending.append(self.boot_line)
        self._state_dirty = True
        return size

    def _repair_live(self) -> tuple[int, bytes | None]:
        """(size, first line) of the live file after cutting a torn last line off."""
        try:
            src = open(self.path, "r+b")  # noqa: SIM115 - closed below
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

    def _scan(self, path: Path, start: int) -> None:
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
                    self._learn(line)

    def _learn(self, line: bytes) -> None:
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

    def _next_generation(self) -> int:
        highest = self.generation
        with contextlib.suppress(OSError):
            for entry in os.listdir(self.dir):
                parsed = segments.rotated_name(entry)
                if parsed is not None and parsed[0] == self.file:
                    highest = max(highest, parsed[1])
        return highest + 1

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
            self._state_dirty = True
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
        self._state_dirty = True
        self._state_force = True
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
        if not self._state_dirty:
            return True
        if self.unwritten:
            return False
        force = force or self._state_force
        if not force and now_ns - self._state_written < STATE_INTERVAL_NS:
            return False
        state = {
            "file": self.key,
            "offset": self.offset,
            "high": self.high,
            "dropped": self.dropped,
            "context": self.context,
            "boot_line": self.boot_line,
        }
        text = json.dumps(state)
        self._state_written = now_ns
        self._state_dirty = False
        self._state_force = False
        if worker is not None:
            worker.submit(lambda: self._write_state(text))
            return True
        return self._write_state(text)

    def _write_state(self, text: str) -> bool:
        tmp = self._state_path.with_suffix(".tmp")
        try:
            tmp.write_text(text)
            os.replace(tmp, self._state_path)
        except OSError:
            self._state_dirty = True  # a full disk: a later turn tries again
            return False
        return True

    def close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)


class Store:
    """Per-instance log files under ``root/instances``; see the module docstring."""

    fast = format_records is not None

    def __init__(
        self, root: Path, fsync: FsyncPolicy = FsyncPolicy.BATCH, limits: Limits | None = None
    ) -> None:
        self.root = layout.prepare_data_dir(root)
        self.fsync = fsync
        self.limits = limits if limits is not None else Limits()
        self.limits.check()
        self._logs: dict[tuple[str, str], InstanceLog] = {}
        self._dirty: set[InstanceLog] = set()
        self._unsynced: set[InstanceLog] = set()
        self._unsaved: set[InstanceLog] = set()
        self._last_sync = time.monotonic()
        self.worker = DiskWorker()
        self._formatter = LineFormatter()
        # Text queued since the last commit (what bounds a burst's memory).
        self.queued_bytes = 0
        # Why the last commit could not write everything (None: all written).
        self.failure: str | None = None
        self.failed_since: float | None = None  # time.time() of the first failed commit
        self.unwritten_bytes = 0  # queued but not written, as of the last failed commit
        self.disk = DiskUsage(self.root, self.limits, self.worker)
        self.disk.expire()
        self.disk.enforce_quota()
        self.disk.settle()

    def log(self, name: str, file: str = layout.APP_LOG) -> InstanceLog:
        """The log ``file`` of instance ``name`` (a sanitized name), opened once."""
        log = self._logs.get((name, file))
        if log is None:
            log = self._logs[name, file] = InstanceLog(self.root, name, file)
            if log.unwritten:  # a new file's header
                self._dirty.add(log)
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
        size = count = 0
        for record in records:
            if record.seq <= high:
                continue
            high = record.seq
            wall = record.wall_ns
            text = line(now_ns if wall is None else wall, origin, record)
            size += len(text)
            append(text)
            count += 1
        log.queued(count)
        self.queued_bytes += size
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
        stop, text, high, written = format_records(
            buf, pos, end, max_body, log.high.get(boot, 0), time.time_ns()
        )
        if text:
            log.pending.append(text)
            log.queued(written)
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
            log.queued(count)
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
        """Write everything queued; with ``always``, fsync it too. Returns bytes written.

        When the disk refuses (full, read-only, gone), ``failure`` says why and what
        was not written stays queued for the next call; nothing may be acknowledged
        then. Rotation, retention and the quota are applied after the writes.
        """
        written = 0
        self.queued_bytes = 0
        failure: OSError | None = None
        refused = self.disk.refused
        for log in list(self._dirty):
            if refused is not None and log.name == refused:
                dropped = log.drop_queued_records()
                if dropped:
                    self.disk.refuse(log.name, dropped)
            before = log.offset
            try:
                log.write_pending()
            except OSError as exc:
                failure = exc
            written += self._account(log, log.offset - before)
            if not log.unwritten:
                self._dirty.discard(log)
                if self.limits.rotate_size and log.offset >= self.limits.rotate_size:
                    try:
                        written += self._rotate(log)
                    except OSError as exc:
                        failure = exc
        failure = failure or self.worker.take_error()
        now = time.monotonic()
        try:
            if failure is None and self.fsync is FsyncPolicy.ALWAYS:
                self.sync()
            elif (
                failure is None
                and self.fsync is FsyncPolicy.BATCH
                and now - self._last_sync >= 1.0
                and not self.worker.busy
            ):
                self.worker.fsync(self._take_unsynced())
                self._last_sync = now
        except OSError as exc:
            failure = exc
        self._set_failure(failure)
        now_ns = time.time_ns()
        for log in list(self._unsaved):
            if log.save_state(now_ns, worker=self.worker):
                self._unsaved.discard(log)
        self.disk.collect()
        self.disk.expire()
        self.disk.enforce_quota()
        self.disk.save()
        return written

    def _account(self, log: InstanceLog, count: int) -> int:
        if count > 0:
            self.disk.wrote(log.name, count)
            self._unsynced.add(log)
            self._unsaved.add(log)
        return max(0, count)

    def _rotate(self, log: InstanceLog) -> int:
        """Rotate ``log`` and write the new file's first lines; returns bytes written."""
        if self.fsync is not FsyncPolicy.NEVER and not log.synced and log.fd is not None:
            if self.fsync is FsyncPolicy.BATCH:
                self.worker.fsync([log.fd])  # within the policy's second, as ever
            else:
                os.fsync(log.fd)
        log.synced = True
        path, size, records = log.rotate()
        self.disk.rotated_file(log.name, log.file, path, size, records)
        self._dirty.add(log)
        self._unsaved.add(log)
        try:
            log.write_pending()  # the new file's header and boot line
        finally:
            count = self._account(log, log.offset)
        self._dirty.discard(log)
        return count

    def _set_failure(self, failure: OSError | None) -> None:
        if failure is None:
            if self.failure is not None:
                self.failure = self.failed_since = None
                self.unwritten_bytes = 0
                self.disk.version += 1
            return
        reason = failure.strerror or str(failure)
        if self.failure is None:
            self.failed_since = time.time()
        if reason != self.failure:
            self.failure = reason
            self.disk.version += 1
        self.unwritten_bytes = sum(log.unwritten_bytes() for log in self._dirty)

    @property
    def status_version(self) -> int:
        """Changes whenever ``status()`` says something new."""
        return self.disk.version

    def status(self) -> dict[str, object]:
        """The store's part of ``collector.json``: writing or not, limits, losses."""
        return {
            "state": "ok" if self.failure is None else "disk",
            "error": self.failure,
            "since": self.failed_since,
            "unwritten_bytes": self.unwritten_bytes if self.failure else 0,
            **self.disk.status(),
        }

    def _take_unsynced(self) -> list[int]:
        """The descriptors of files written since their last fsync, now counted as synced."""
        fds = []
        for log in self._unsynced:
            if not log.synced and log.fd is not None:
                fds.append(log.fd)
                log.synced = True
        self._unsynced.clear()
        return fds

    def sync(self) -> None:
        """fsync every file written since its last fsync, here and now."""
        self.worker.wait()
        for log in list(self._unsynced):
            if not log.synced and log.fd is not None:
                os.fsync(log.fd)
                log.synced = True
            self._unsynced.discard(log)
        self._last_sync = time.monotonic()

    def close(self) -> None:
        """Write what is queued (if the disk takes it), save the state, close the files."""
        self.commit()
        if self.fsync is not FsyncPolicy.NEVER:
            with contextlib.suppress(OSError):
                self.sync()
        self.worker.wait()  # the states it is saving are older than these
        now_ns = time.time_ns()
        for log in self._logs.values():
            log.save_state(now_ns, force=True)
            log.close()
        self._logs.clear()
        self.disk.settle()
        self.disk.save(force=True)
