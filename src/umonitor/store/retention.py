"""What the store keeps on disk: rotation size, retention and the total quota.

How this works: ``DiskUsage`` knows every instance's log files and their sizes (one
directory scan at start; then the writer reports each write, rotation and deletion),
so checking the limits costs nothing per record. Only rotated files are ever deleted:

* ``retain_files``: per instance and log file (app, console, syslog), the oldest
  rotated files beyond that many go, right after a rotation;
* ``retain_days``: rotated files last written longer ago go (checked every minute);
* ``quota``: while the log files of all instances together are over it, the oldest
  rotated file of the instance using the most space goes, one at a time, so one
  chatty guest cannot evict everyone else's history; when no rotated file is left
  and it is still over, the instance using the most space is *refused*: its records
  are acknowledged but not written, until the total is under the quota again.

Everything deleted (files, bytes, records) and refused (records) is counted per
instance in ``instances/<name>/retention.json`` and shown by ``umonitor ls``.

A deletion leaves the accounting at once but the disk through the store's worker
(store/worker.py): unlinking a 64 MiB file whose pages may still be under writeback,
or counting the records of one the writer did not count, can take hundreds of
milliseconds. What the worker deleted is counted by the next ``collect`` (every
commit); ``settle`` waits for it.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from umonitor.store import layout
from umonitor.store.names import is_instance_name
from umonitor.store.segments import rotated_name
from umonitor.store.worker import DiskWorker

LOSSES = "retention.json"
DAY = 86_400.0
EXPIRE_EVERY = 60.0
MIN_ROTATE = 4096


@dataclass(frozen=True, slots=True)
class Limits:
    """The store's limits; 0 turns one off."""

    rotate_size: int = 64 << 20
    retain_files: int = 5
    retain_days: float = 0.0
    quota: int = 0

    def check(self) -> None:
        """ValueError with one sentence when a limit makes no sense."""
        if self.rotate_size and self.rotate_size < MIN_ROTATE:
            raise ValueError(f"the rotate size must be 0 (off) or at least {MIN_ROTATE} bytes")
        if self.retain_files < 0 or self.retain_days < 0 or self.quota < 0:
            raise ValueError("retention limits cannot be negative")
        if self.quota and self.rotate_size and self.quota < 2 * self.rotate_size:
            raise ValueError("the quota must be at least twice the rotate size")


@dataclass(slots=True)
class Losses:
    """What one instance lost to retention and the quota."""

    deleted_files: int = 0
    deleted_bytes: int = 0
    deleted_records: int = 0
    refused: int = 0

    def any(self) -> bool:
        return bool(self.deleted_files or self.refused)


@dataclass(slots=True)
class Rotated:
    path: Path
    family: str
    number: int
    size: int
    mtime: float
    records: int | None = None  # record lines, when the writer counted them


def count_records(path: Path) -> int:
    """Record lines in a log file: lines not starting with ``#``."""
    records = 0
    last = b"\n"
    with open(path, "rb") as src:
        while chunk := src.read(1 << 22):
            records += chunk.count(b"\n") - chunk.count(b"\n#")
            if last == b"\n" and chunk[:1] == b"#":
                records -= 1
            last = chunk[-1:]
    return records


@dataclass
class DiskUsage:
    """Sizes of every instance's log files, and the limits applied to them."""

    root: Path
    limits: Limits
    worker: DiskWorker | None = None  # None: deletions happen in the caller
    usage: dict[str, int] = field(default_factory=dict)
    rotated: dict[str, list[Rotated]] = field(default_factory=dict)
    losses: dict[str, Losses] = field(default_factory=dict)
    total: int = 0
    refused: str | None = None
    version: int = 0  # changes whenever something ``ls`` shows changes
    notes: list[str] = field(default_factory=list)
    _unsaved: set[str] = field(default_factory=set)
    _expired_at: float = 0.0
    _saved_at: float = 0.0
    _gone: queue.SimpleQueue[tuple[str, Rotated, int | OSError]] = field(
        default_factory=queue.SimpleQueue
    )
    _in_flight: int = 0

    def __post_init__(self) -> None:
        self._scan()

    def _scan(self) -> None:
        base = self.root / layout.INSTANCES
        try:
            names = sorted(os.listdir(base))
        except OSError:
            names = []
        for name in names:
            if not is_instance_name(name):
                continue
            directory = base / name
            try:
                entries = os.listdir(directory)
            except OSError:
                continue
            for entry in entries:
                parsed = rotated_name(entry)
                if entry not in layout.LOG_FILES and parsed is None:
                    continue
                try:
                    st = (directory / entry).stat()
                except OSError:
                    continue
                self.usage[name] = self.usage.get(name, 0) + st.st_size
                self.total += st.st_size
                if parsed is not None:
                    self.rotated.setdefault(name, []).append(
                        Rotated(directory / entry, parsed[0], parsed[1], st.st_size, st.st_mtime)
                    )
            self.rotated.get(name, []).sort(key=lambda r: (r.mtime, r.number))
            with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
                saved = json.loads((directory / LOSSES).read_text())
                self.losses[name] = Losses(**{k: int(saved[k]) for k in asdict(Losses())})

    # -- what the writer reports ---------------------------------------------------

    def wrote(self, name: str, size: int) -> None:
        self.usage[name] = self.usage.get(name, 0) + size
        self.total += size

    def rotated_file(
        self, name: str, family: str, path: Path, size: int, records: int | None = None
    ) -> None:
        """``family`` of ``name`` was rotated to ``path``: apply ``retain_files``."""
        number = (rotated_name(path.name) or (family, 0))[1]
        files = self.rotated.setdefault(name, [])
        files.append(Rotated(path, family, number, size, time.time(), records))
        keep = self.limits.retain_files
        if keep:
            same = [r for r in files if r.family == family]
            same.sort(key=lambda r: r.number)
            for old in same[: max(0, len(same) - keep)]:
                self.delete(name, old)

    # -- limits -----------------------------------------------------------------------

    def expire(self, now: float | None = None) -> None:
        """Delete rotated files older than ``retain_days`` (at most once a minute)."""
        days = self.limits.retain_days
        now = time.time() if now is None else now
        if not days or now - self._expired_at < EXPIRE_EVERY:
            return
        self._expired_at = now
        limit = now - days * DAY
        for name, files in list(self.rotated.items()):
            for old in [r for r in files if r.mtime < limit]:
                self.delete(name, old)

    def enforce_quota(self) -> None:
        """Delete oldest rotated files of the biggest users; refuse one if that is not enough."""
        quota = self.limits.quota
        refused = None
        if quota and self.total > quota:
            while self.total > quota:
                holders = [n for n, files in self.rotated.items() if files]
                if not holders:
                    break
                biggest = max(holders, key=lambda n: (self.usage.get(n, 0), n))
                self.delete(biggest, self.rotated[biggest][0])
            if self.total > quota and self.usage:
                refused = max(self.usage, key=lambda n: (self.usage[n], n))
        if refused != self.refused:
            self.refused = refused
            self.version += 1
            self.notes.append(
                f"over the quota with no rotated file left: refusing records of {refused}"
                if refused is not None
                else "under the quota again: writing every instance's records"
            )

    def take_notes(self) -> list[str]:
        """What happened that a person should hear about (then forgotten here)."""
        notes, self.notes = self.notes, []
        return notes

    def refuse(self, name: str, records: int) -> None:
        self.losses.setdefault(name, Losses()).refused += records
        self._unsaved.add(name)
        self.version += 1

    def delete(self, name: str, old: Rotated) -> None:
        """Delete one rotated file: out of the accounting now, off the disk in the worker."""
        files = self.rotated.get(name, [])
        if old in files:
            files.remove(old)
        self.usage[name] = max(0, self.usage.get(name, 0) - old.size)
        self.total = max(0, self.total - old.size)
        self._in_flight += 1
        if self.worker is None:
            self._delete_file(name, old)
            self.collect()
        else:
            self.worker.submit(lambda: self._delete_file(name, old))

    def _delete_file(self, name: str, old: Rotated) -> None:
        try:
            records = old.records if old.records is not None else count_records(old.path)
            old.path.unlink()
        except FileNotFoundError:
            records = 0
        except OSError as exc:
            self._gone.put((name, old, exc))
            return
        self._gone.put((name, old, records))

    def collect(self, block: bool = False) -> None:
        """Count what the worker deleted (with ``block``, everything handed to it)."""
        while self._in_flight:
            try:
                name, old, result = self._gone.get(block=block)
            except queue.Empty:
                return
            self._in_flight -= 1
            self.version += 1
            if isinstance(result, OSError):  # still on disk: back in the accounting
                self.notes.append(f"cannot delete {old.path}: {result.strerror}")
                self.rotated.setdefault(name, []).insert(0, old)
                self.wrote(name, old.size)
                continue
            losses = self.losses.setdefault(name, Losses())
            losses.deleted_files += 1
            losses.deleted_bytes += old.size
            losses.deleted_records += result
            self.save(name)

    def settle(self) -> None:
        """Wait until every deletion handed to the worker is done and counted."""
        self.collect(block=True)

    # -- the counters on disk ---------------------------------------------------------

    def save(self, name: str | None = None, force: bool = False) -> None:
        """Write the counters of ``name``, else (at most once a second) every changed one."""
        if name is None:
            now = time.monotonic()
            if not self._unsaved or (not force and now - self._saved_at < 1.0):
                return
            self._saved_at = now
        for each in [name] if name is not None else sorted(self._unsaved):
            losses = self.losses.get(each)
            if losses is None:
                continue
            path = layout.instance_dir(self.root, each) / LOSSES
            tmp = path.with_suffix(".tmp")
            try:
                tmp.write_text(json.dumps(asdict(losses)))
                os.replace(tmp, path)
            except OSError:
                continue  # full disk: saved on a later turn
            self._unsaved.discard(each)

    def status(self) -> dict[str, object]:
        """What ``collector.json`` says about the store's limits."""
        return {
            "bytes": self.total,
            "limits": asdict(self.limits),
            "refused": self.refused,
            "losses": {n: asdict(v) for n, v in sorted(self.losses.items()) if v.any()},
        }
