"""One instance as the supervisor tracks it: its state, its run, and ``instance.json``.

``Instance`` holds what is known and decided about one instance (its lease, the QEMU
run in progress, what its console and QMP said this boot, its last exit); ``summary``
is its row in ``umonitor ps`` and ``save`` writes ``DATA/run/<name>/instance.json``,
which a later supervisor reads back (``load_saved``) to adopt a QEMU still running and
``umonitor logs`` reads for the instance's symbols.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import ipaddress
import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from umonitor.debug.symbols_file import symbols_for
from umonitor.fleet.config import InstanceConfig
from umonitor.fleet.qemu_process import STDERR_MAX, Process
from umonitor.fleet.qmp import QmpClient
from umonitor.procs import process_running
from umonitor.protocol.redact import Redactor, redact_text
from umonitor.store import layout

REPORT_LINES = 200  # console lines kept for a crash report


class State(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    EXITED = "exited"
    CRASHED = "crashed"
    BACKOFF = "restarting"
    START_FAILED = "start-failed"  # QEMU ended before the guest printed anything
    FALLBACK = "kvm-fallback"  # KVM failed this start: relaunched under TCG at once
    FAILED = "failed"  # given up: the reason is in the last exit


@dataclass
class Instance:
    """What the supervisor knows and decides about one instance."""

    config: InstanceConfig
    address: ipaddress.IPv4Interface
    gateway: ipaddress.IPv4Address
    tap: str | None
    run_dir: Path
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    state: State = State.STOPPED
    pid: int | None = None
    started_ns: int | None = None
    restarts: int = 0
    failures: int = 0
    start_failures: int = 0
    last_exit: dict[str, Any] | None = None
    accel: str | None = None  # what this boot runs under
    force_tcg: bool = False  # KVM failed this instance's start: TCG from now on
    kvm_suspect: str | None = None  # why KVM failed, confirmed once TCG prints
    console_spool: Path | None = None
    console_offset: int = 0
    console_released: int = 0
    console_boot: str = ""
    console_seen: bool = False  # the guest printed something this boot
    adopted: bool = False
    wanted: bool = True
    stop_requested: bool = False
    silent_kill: str | None = None  # killed for printing nothing under KVM
    crash_hint: str | None = None
    guest_end: str | None = None  # how the program ended, from the console (rumprun)
    ended: asyncio.Event = field(default_factory=asyncio.Event)  # the guest is done
    halted: bool = False  # it said so on the console and will never power off
    panicked: bool = False
    shutdown_reason: str | None = None
    stderr_offset: int = 0
    console_tail: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=REPORT_LINES)
    )
    redactor: Redactor | None = None
    vm_status: str = "running"  # QEMU's (running, prelaunch, debug, paused, ...); off: ended
    debugger: int | None = None  # pid of the gdb that 'umonitor debug' started
    ending: str | None = None  # how this run ended, while its QEMU is read and quit
    qmp: QmpClient | None = None  # the watcher's QMP session, while it is open
    proc: Process | None = None
    task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def vm_running(self) -> bool:
        return self.vm_status == "running"

    @property
    def vm_held(self) -> bool:
        """QEMU holds the VM stopped (paused, in gdb, ...): not running, not ended."""
        return self.vm_status not in ("running", "off")

    def debugged(self) -> bool:
        """A gdb from 'umonitor debug' is attached (its process still lives)."""
        if self.debugger is None:
            return False
        if not process_running(self.debugger):
            self.debugger = None
        return self.debugger is not None

    def shown_state(self) -> str:
        """The state ``ps`` shows: a running instance whose VM is stopped is paused,
        or debugging while 'umonitor debug' holds it."""
        if self.state is not State.RUNNING:
            return str(self.state.value)
        if self.ending is not None:  # ended, QEMU held: being read (a crash) and quit
            return self.ending
        if self.debugged():
            return "debugging"
        return "running" if self.vm_running else "paused"

    def summary(self) -> dict[str, Any]:
        """What ``umonitor ps`` shows."""
        now = time.time_ns()
        running = self.state in (State.RUNNING, State.STARTING, State.STOPPING)
        return {
            "name": self.name,
            "state": self.shown_state(),
            "vm_status": self.vm_status if running else None,
            "address": str(self.address.ip),
            "tap": self.tap,
            "pid": self.pid if running else None,
            "uptime_s": round((now - self.started_ns) / 1e9, 1)
            if running and self.started_ns
            else None,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "flavor": self.config.flavor,
            "accel": self.accel if running else None,
            "adopted": self.adopted,
        }

    def save(self) -> None:
        state = {
            "name": self.name,
            "pid": self.pid,
            "token": self.token,
            "address": str(self.address),
            "tap": self.tap,
            "started_ns": self.started_ns,
            "restarts": self.restarts,
            "accel": self.accel,
            "console_spool": str(self.console_spool) if self.console_spool else None,
            "console_offset": self.console_offset,
            "console_boot": self.console_boot,
            "console_seen": self.console_seen,
            "state": self.state.value,
            "last_exit": self.last_exit,
            # For `logs`, which symbolizes the call stacks of the C library's records.
            "symbols": str(symbols) if (symbols := self.symbols()) else None,
        }
        layout.write_private(self.run_dir / "instance.json", json.dumps(state, indent=1))

    def symbols(self) -> Path | None:
        """The instance's symbols file (debug/symbols_file.py's rule), or None."""
        config = self.config
        return symbols_for(
            config.kernel, config.symbols, flavor=config.flavor, initrd=config.initrd
        )

    def run_stderr(self) -> str:
        """What QEMU wrote on stderr during this run, redacted."""
        try:
            with open(self.run_dir / "qemu.err", "rb") as src:
                src.seek(self.stderr_offset)
                text = src.read(STDERR_MAX).decode("utf-8", "replace")
        except OSError:
            return ""
        return redact_text(text, [self.token])


def load_saved(run_dir: Path) -> dict[str, Any] | None:
    try:
        saved = json.loads((run_dir / "instance.json").read_text())
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) else None
