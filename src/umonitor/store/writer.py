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

Where the parts live: one log file's queue, write and rotation in store/instance_log.py;
what it learns on opening (after a clean stop or a crash) in store/recovery.py; its
``state.json`` in store/log_state.py; the runs the C accelerator formats straight from
a receive buffer (native records, plain syslog) in store/fast_runs.py; what it took,
counted for the collector's metrics, in store/tally.py.
"""

from __future__ import annotations

import contextlib
import enum
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from umonitor.records import Origin, Record
from umonitor.store import fast_runs, layout
from umonitor.store.instance_log import InstanceLog
from umonitor.store.log_state import StateFile, state_path
from umonitor.store.logfile import DroppedLine, LineFormatter, format_dropped_line
from umonitor.store.names import is_instance_name
from umonitor.store.retention import DiskUsage, Limits
from umonitor.store.tally import Tally
from umonitor.store.worker import DiskWorker


class FsyncPolicy(enum.Enum):
    """When log files are forced to disk.

    ``always``: before every acknowledgement (survives power loss; the collector has
    the disk worker fsync, ``Store.sync_in_worker``, and acknowledges when it is done,
    so the event loop never waits for the disk); ``batch``: the
    acknowledgement follows the write to the OS (survives a collector crash) and
    files are fsynced once a second; ``never``: the OS decides.
    """

    ALWAYS = "always"
    BATCH = "batch"
    NEVER = "never"


class Store:
    """Per-instance log files under ``root/instances``; see the module docstring."""

    fast = fast_runs.format_records is not None

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
        self.tally = Tally()  # records taken and guest drops, since this store opened
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

    def recover_unsettled(self) -> list[InstanceLog]:
        """Open now every log file whose saved state does not reach its end.

        After a crash (or with a lost state) opening a log file reads what it gained
        since its state, or all of its files: on the event loop, when its guest first
        connects, that would hold every other guest. Called before the listeners open,
        in a thread; a log whose state reaches its end opens in microseconds later.
        Nothing else may use the store meanwhile.
        """
        opened = []
        for directory in sorted((self.root / layout.INSTANCES).glob("*")):
            if not is_instance_name(directory.name):
                continue
            for file in layout.LOG_FILES:
                try:
                    size = (directory / file).stat().st_size
                except OSError:
                    continue
                saved = StateFile(state_path(directory, file)).load()
                if saved.get("offset") != size and (directory.name, file) not in self._logs:
                    opened.append(self.log(directory.name, file))
        return opened

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
        tally = self.tally.of(log.name, origin)
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
            tally[record.severity] += 1
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
        tally = self.tally.of(log.name, Origin.APP)
        stop, size = fast_runs.queue_record_run(log, boot, buf, pos, end, max_body, tally)
        if size:
            self.queued_bytes += size
            self._dirty.add(log)
        return stop

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
        tally = self.tally.of(log.name, Origin.SYSLOG)
        stop, seq, size = fast_runs.queue_syslog_run(
            log, boot, buf, end, max_frame, host, seq, tally
        )
        if size:
            self.queued_bytes += size
            self._dirty.add(log)
        return stop, seq

    def add_dropped(self, log: InstanceLog, boot: str, count: int, through_seq: int) -> int:
        """Note that ``boot`` lost ``count`` records so far (a DROPPED frame's running
        count), through ``through_seq``; returns the highest seq held once committed."""
        if count > log.dropped.get(boot, 0) or through_seq > log.high.get(boot, 0):
            self.tally.guest_dropped(log.name, count - log.dropped.get(boot, 0))
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
        """Write everything queued (with ``always``, the caller then has it synced:
        ``sync_in_worker``). Returns bytes written.

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
            if (
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
            self.worker.fsync([log.fd])  # a duplicate: the file may close meanwhile
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

    def sync_in_worker(self, then: Callable[[bool], None]) -> None:
        """Have the disk worker fsync every file written since its last fsync, then
        call ``then(ok)`` from its thread; ``ok`` is False if any job failed meanwhile
        (the next commit says why, as a disk failure)."""
        before = self.worker.failures
        try:
            self.worker.fsync(self._take_unsynced())
        except OSError:  # no descriptor left to duplicate: as good as a failed fsync
            self.worker.submit(lambda: then(False))
            return
        self._last_sync = time.monotonic()
        self.worker.submit(lambda: then(self.worker.failures == before))

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
