"""The exporter process the collector starts: ``python -m umonitor.export.runner DATA [NAME…]``.

The exporters' specs come on standard input, one JSON object per line
(``export.config.spec_lines``), because they may carry credentials (OTLP headers)
and a command line is readable by every user of the host (``/proc/PID/cmdline``);
the names in argv are only there for ``ps`` and are checked against the specs.

How this works: exporters follow the store's log files, the way the indexer does,
rather than taking records from the collector's memory. Each exporter keeps, per log
file, the offset up to which the downstream has everything (and the boot the line
there belongs to) in ``DATA/export/NAME.json``; it reads a batch of record lines from
one file past that offset (follower.py), hands it to its sink, and moves the offset
only past what the sink says arrived. So:

* a downstream that is away costs no memory and no extra disk: the backlog is the
  store's own files, and the exporter resumes from its offsets, also after a restart
  of the collector or a crash of this process;
* nothing the collector acknowledged is skipped silently: a record is dropped only
  when the downstream refuses it for good (say HTTP 400) or when the exporter falls
  more than ``max_backlog`` bytes behind in one file; both are counted in the state
  that ``umonitor ls`` shows;
* a record may be sent twice only where the downstream protocol cannot tell what it
  got (see the sinks).

The state for ``ls`` is ``DATA/export/NAME.status.json``, rewritten at most every
half second and when the exporter's state changes. Both files are written 0600
(``layout.write_private``), and neither holds a header value. The process exits
when its parent (the collector) is gone, and on SIGTERM after the batch in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from umonitor.errors import DeliveryError, UmonitorError
from umonitor.export.base import ExportItem, Sink
from umonitor.export.config import ExportSpec, make_sink, read_spec_lines
from umonitor.export.follower import Follower, Position
from umonitor.export.status import export_dir
from umonitor.store import layout

IDLE_SECONDS = 0.2
STATUS_SECONDS = 0.5
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0


class Exporter:
    """One exporter: its follower, its sink, its saved positions and its status."""

    def __init__(self, root: Path, spec: ExportSpec, sink: Sink | None = None) -> None:
        self.root = root
        self.spec = spec
        self.sink = sink if sink is not None else make_sink(spec)
        self.follower = Follower(root, spec)
        self.sent = 0
        self.state = "starting"
        self.error = ""
        self.error_at = 0.0
        self.retries = 0
        self._status_at = 0.0
        self._state_path = export_dir(root) / f"{spec.name}.json"
        self._status_path = export_dir(root) / f"{spec.name}.status.json"
        self._load()
        self.write_status(force=True)

    # -- saved positions ---------------------------------------------------------

    def _load(self) -> None:
        export_dir(self.root).mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            saved = json.loads(self._state_path.read_text())
            self.follower.positions = {
                str(k): Position(int(v[0]), str(v[1]), int(v[2])) for k, v in saved["files"].items()
            }
            self.sent = int(saved.get("sent", 0))
            self.follower.dropped = int(saved.get("dropped", 0))
        except FileNotFoundError:
            if self.spec.start == "end":
                self.follower.start_at_end()
            self._save()
            return
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise SystemExit(
                f"umonitor export: cannot read {self._state_path} ({exc}); "
                "remove it to start this exporter afresh"
            ) from None

    def _save(self) -> None:
        data = {
            "url": self.spec.full_url(),  # header values redacted
            "sent": self.sent,
            "dropped": self.follower.dropped,
            "files": {k: [p.offset, p.boot, p.inode] for k, p in self.follower.positions.items()},
        }
        layout.write_private(self._state_path, json.dumps(data))

    def write_status(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._status_at < STATUS_SECONDS:
            return
        self._status_at = now
        status = {
            "exporter": self.spec.name,
            "target": self.sink.target,
            "state": self.state,
            "error": self.error,
            "error_at": self.error_at or None,
            "sent": self.sent,
            "dropped": self.follower.dropped,
            "backlog_bytes": self.follower.backlog(),
            "retries": self.retries,
            "notes": self.follower.notes[-5:],
            "updated": time.time(),
            "pid": os.getpid(),
        }
        layout.write_private(self._status_path, json.dumps(status))

    def _set(self, state: str, error: str | None = None) -> None:
        """A new state; ``error`` replaces the last error, which stays until then."""
        changed = state != self.state or (error is not None and error != self.error)
        self.state = state
        if error is not None:
            self.error = error
            self.error_at = time.time()
        self.write_status(force=changed)

    # -- the loop ----------------------------------------------------------------

    async def step(self) -> bool:
        """Deliver one batch; False when there was nothing to deliver."""
        batch = self.follower.next_batch()
        if batch is None:
            return False
        if not batch.items:
            self.follower.commit(batch.key, *batch.done)
            self._save()
            return True
        try:
            await self.sink.send(batch.items)
        except DeliveryError as exc:
            delivered = max(0, min(exc.delivered, len(batch.items)))
            if delivered:
                self.follower.commit(batch.key, *batch.ends[delivered - 1])
                self.sent += delivered
            if exc.permanent:
                lost = len(batch.items) - delivered
                self.follower.dropped += lost
                self.follower.notes.append(f"refused for good, {lost} records dropped: {exc}")
                self.follower.commit(batch.key, *batch.ends[-1])
                self._save()
                self._set("sending", str(exc))
                return True
            self._save()
            raise
        self.follower.commit(batch.key, *batch.ends[-1])
        self.sent += len(batch.items)
        self._save()
        return True

    async def run(self, stop: asyncio.Event) -> None:
        backoff = BACKOFF_FIRST
        while not stop.is_set():
            try:
                busy = await self.step()
            except DeliveryError as exc:
                self.retries += 1
                self._set("retrying", str(exc))
                await _wait(stop, backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            backoff = BACKOFF_FIRST
            if busy:
                self._set("sending")
            else:
                self._set("idle")
                await _wait(stop, IDLE_SECONDS)
        with contextlib.suppress(Exception):
            await self.sink.close()
        self._set("stopped")


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def prepare_exports(root: Path, specs: list[ExportSpec]) -> None:
    """Fix where new exporters start, before the collector takes any record.

    Done by the collector itself, so that ``start=end`` means "from when the collector
    started with this exporter", not from whenever the exporter process got going.
    """
    for spec in specs:
        state = export_dir(root) / f"{spec.name}.json"
        if not state.exists():
            Exporter(root, spec, sink=_NoSink(spec.url))


@dataclass(frozen=True, slots=True)
class _NoSink:
    """Stands in for the sink while an exporter's first state is written."""

    target: str

    async def send(self, items: Sequence[ExportItem]) -> None:
        raise DeliveryError("not sending")

    async def close(self) -> None:
        pass


async def run_exporters(root: Path, specs: list[ExportSpec], stop: asyncio.Event) -> None:
    exporters = [Exporter(root, spec) for spec in specs]
    await asyncio.gather(*(e.run(stop) for e in exporters))


def read_specs(stdin: BinaryIO, names: Sequence[str] = ()) -> list[ExportSpec]:
    """The specs the collector wrote to our standard input, up to its end.

    ``names`` (from argv) must be the specs' names in order when given; SystemExit
    with one line otherwise, or when the specs do not parse.
    """
    try:
        specs = read_spec_lines(stdin.read())
    except UmonitorError as exc:
        raise SystemExit(f"umonitor export: {exc}") from None
    if names and list(names) != [s.name for s in specs]:
        raise SystemExit(
            f"umonitor export: argv names {', '.join(names)} but standard input "
            f"specifies {', '.join(s.name for s in specs) or 'no exporter'}"
        )
    return specs


def main(argv: list[str]) -> int:
    """``DATA [NAME…]`` in argv, the specs on standard input (see the module docstring)."""
    root = Path(argv[1])
    specs = read_specs(sys.stdin.buffer, argv[2:])
    parent = os.getppid()

    async def body() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        async def watch_parent() -> None:
            while not stop.is_set():
                if os.getppid() != parent:
                    stop.set()
                await _wait(stop, 1.0)

        watcher = asyncio.create_task(watch_parent())
        await run_exporters(root, specs, stop)
        await watcher

    asyncio.run(body())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
