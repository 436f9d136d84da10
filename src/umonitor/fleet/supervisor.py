"""The supervisor: start unikernels in QEMU, watch them, report crashes, restart.

How this works, per instance:

* **start**: lease an address and a TAP device, write the flavor's files into the
  instance's run directory (``DATA/run/<name>/``), choose the accelerator
  (fleet/accel.py), start QEMU in its own session (so it outlives the supervisor,
  which makes adoption possible) and save ``instance.json`` (pid, address, token,
  console offset, ...). Whatever goes wrong while starting (a bad template, a missing
  file, QEMU refusing an option) leaves the instance ``failed`` with the reason.
* **console**: QEMU appends every console byte to a spool outside the data
  directory (fleet/spool.py); a tail task reads it from the saved offset every
  100 ms, redacts the instance's token, appends the result to ``console.raw``,
  decodes it (protocol/console_lines) into records of origin ``console`` in
  ``console.log``, keeps the last 200 lines for reports and remembers the first
  crash marker it sees.
* **first output under KVM**: an instance that ``auto`` put under KVM must print
  within ``accel.FIRST_OUTPUT_SECONDS``; if QEMU exits first or stays silent, it is
  relaunched under TCG at once, and KVM is marked unusable for this host when the
  TCG run prints (see accel.py).
* **watch**: QMP events (GUEST_PANICKED, SHUTDOWN with its reason) and the process
  exit. QEMU runs with ``-no-shutdown``: a guest's power-off, reset or panic pauses
  the VM instead of ending QEMU (QMP ``SHUTDOWN`` with ``guest: true``), and a guest
  that halts without powering off (rumprun's ``halted`` or ``FATAL TRAP``) is
  stopped over QMP. Either way the guest has *ended* while QEMU is *held*: the
  console is read to its end, the run classified as if QEMU had exited with status 0,
  a crash captured (below), and then the supervisor quits QEMU (QMP ``quit``, then
  SIGTERM, then SIGKILL, ``STOP_GRACE`` apart). Runs are classified by ``classify``:
  stopped on request; a KVM fallback; a start failure (QEMU ended before the guest
  printed anything, and the guest neither panicked nor reset); guest panicked; a
  console crash marker; a guest reset (with -no-reboot a reboot or a triple fault
  ends the run); a non-zero QEMU status;
  otherwise a clean exit. QEMU's stderr of that run goes into the last exit (first
  line), the report (whole) and the record.
* **capture**: a crash is read before QEMU is quit (debug/crash_state.py
  ``capture_crash``: gdb through the gdbstub of the held VM, else the console's dump,
  symbolized with the instance's symbols), one capture at a time in the fleet, bounded
  by ``CAPTURE_BOUND``; its keys go into the crash report and a short backtrace into
  the crash record. A capture that fails or hangs is a ``capture_errors`` entry: the
  restart never waits longer than the bound.
* **restart**: a crash (or any exit, per policy) restarts after a delay doubling per
  consecutive failure from ``backoff`` up to ``backoff_max``. A start failure is
  retried ``START_ATTEMPTS`` times in all whatever the policy, then the instance is
  ``failed``: it does not loop.
* **adopt**: a supervisor that finds a live QEMU (its pid's command line names the
  instance) takes it over instead of starting another: it tails the console from
  the saved offset and polls the pid, since it cannot wait() for a process it did
  not start. A QEMU found holding an ended guest (QMP ``query-status``: ``shutdown``
  or ``guest-panicked``) ends its run at once, as above.

Time, process start, liveness, QMP commands and events, signals and the crash capture go
through seams (``Clock``, ``Launcher``, ``alive``, ``command``, ``events``, ``kill``,
``capture``) so that every decision above is unit-tested with a fake clock and fake
QEMU processes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import ipaddress
import json
import logging
import os
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from umonitor.debug.crash_state import CAPTURE_TIMEOUT, CaptureRequest, capture_crash, crash_summary
from umonitor.debug.symbols_file import symbols_for
from umonitor.errors import UmonitorError
from umonitor.fleet import accel as accel_mod
from umonitor.fleet import nanos, qemu, spool
from umonitor.fleet.config import InstanceConfig
from umonitor.fleet.flavors import BootSpec, GuestNet, boot_spec
from umonitor.fleet.qmp import QmpClient, QmpError, QmpEvent
from umonitor.procs import process_running
from umonitor.protocol.console_lines import ConsoleDecoder, crash_reason, guest_end, halted
from umonitor.protocol.redact import Redactor, redact_text
from umonitor.records import Kind, Origin, Record, Severity
from umonitor.store import layout
from umonitor.store.writer import Store
from umonitor.timeparse import format_time

log = logging.getLogger(__name__)

REPORT_LINES = 200
TAIL_INTERVAL = 0.1
STOP_GRACE = 5.0
STABLE_AFTER = 60.0  # seconds up after which consecutive failures are forgotten
START_ATTEMPTS = 3  # a start failure is tried this many times in all, then "failed"
STDERR_MAX = 64 * 1024  # of QEMU's stderr per run, kept for the report
VM_STATUS = "umonitor-status"  # not QEMU's: query-status's answer, as an event
GUEST_SHUTDOWNS = ("guest-shutdown", "guest-reset", "guest-panic")  # QMP: the guest ran
HELD_STATUS = 0  # what QEMU exited with on a guest's power-off before -no-shutdown
CAPTURE_BOUND = CAPTURE_TIMEOUT + 5.0  # seconds for a whole capture, symbolizing included


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


class Clock(Protocol):
    """Time as the supervisor sees it (a fake one in tests)."""

    def monotonic(self) -> float: ...

    def time_ns(self) -> int: ...

    async def sleep(self, seconds: float) -> None: ...


class RealClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def time_ns(self) -> int:
        return time.time_ns()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class Process(Protocol):
    """A started QEMU (asyncio's Process, or a fake)."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...

    def kill(self) -> None: ...


class Launcher(Protocol):
    async def start(self, argv: list[str], stderr: Path) -> Process: ...


class QemuLauncher:
    """Starts QEMU in its own session (it outlives us), stderr appended to a file."""

    async def start(self, argv: list[str], stderr: Path) -> Process:
        with open(stderr, "ab") as err:
            return await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )


async def qmp_command(inst: Instance, command: str) -> None:
    """Send one QMP command to the instance's QEMU (errors are the caller's to ignore).

    QEMU's QMP socket takes one client at a time: while the watcher holds it, the
    command goes over the watcher's session.
    """
    if inst.qmp is not None and not inst.qmp.closed.is_set():
        await asyncio.wait_for(inst.qmp.execute(command), timeout=5)
        return
    client = await QmpClient.connect(inst.run_dir / qemu.QMP_SOCKET, timeout=2)
    try:
        await client.execute(command)
    finally:
        await client.close()


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


def load_saved(run_dir: Path) -> dict[str, Any] | None:
    try:
        saved = json.loads((run_dir / "instance.json").read_text())
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) else None


def qemu_alive(pid: int | None, name: str) -> bool:
    """Whether ``pid`` is a live QEMU started for instance ``name``."""
    if not pid or not process_running(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"umonitor:{name},process=umonitor-{name}".encode() in cmdline


@dataclass(frozen=True, slots=True)
class Exit:
    """What is known when a QEMU run ends: the input of ``classify``."""

    status: int | None
    stop_requested: bool = False
    console_seen: bool = True
    panicked: bool = False
    crash_hint: str | None = None
    shutdown_reason: str | None = None
    stderr: str = ""
    under_auto_kvm: bool = False  # KVM chosen by ``auto``: a failure falls back to TCG
    silent_kill: str | None = None  # killed for printing nothing within the bound
    guest_end: str | None = None  # the console said how the program ended


def classify(end: Exit) -> tuple[State, str]:
    """The outcome of one QEMU run and its reason (one line); see the module docstring."""
    if end.stop_requested:
        return State.STOPPED, "stopped on request"
    guest_ran = end.panicked or end.shutdown_reason in GUEST_SHUTDOWNS
    if end.under_auto_kvm and (end.silent_kill or not (end.console_seen or guest_ran)):
        why = end.silent_kill or qemu.exit_reason(end.status, end.stderr)
        return State.FALLBACK, f"under KVM: {why}"
    if not end.console_seen and not guest_ran and end.status not in (0, None):
        return (
            State.START_FAILED,
            f"qemu failed to start: {qemu.exit_reason(end.status, end.stderr)}",
        )
    if end.panicked:
        return State.CRASHED, "guest panicked (pvpanic)"
    if end.crash_hint:
        return State.CRASHED, end.crash_hint
    if end.shutdown_reason in ("guest-reset", "guest-panic"):
        return State.CRASHED, f"guest reset ({end.shutdown_reason})"
    if end.guest_end:  # QEMU was stopped for it: its status says nothing of the guest
        return State.EXITED, end.guest_end
    if end.status not in (0, None):
        return State.CRASHED, f"qemu exited: {qemu.exit_reason(end.status, end.stderr)}"
    return State.EXITED, end.shutdown_reason or "guest powered off"


def restart_delay(failures: int, backoff: float, backoff_max: float) -> float:
    """Seconds before restart number ``failures`` (1-based) of a failing instance."""
    return float(min(backoff * 2 ** max(0, failures - 1), backoff_max))


def should_restart(policy: str, outcome: State) -> bool:
    """Whether the restart policy restarts after ``outcome``."""
    if outcome is State.STOPPED or policy == "no":
        return False
    return policy == "always" or outcome is State.CRASHED


def _stderr_note(text: str) -> str:
    return text.strip()[-STDERR_MAX:]


@dataclass
class Supervisor:
    """Runs and watches every instance; see the module docstring."""

    root: Path
    store: Store
    collector_port: int
    commit: Callable[[], None]
    qemu_binary: str = qemu.QEMU
    instances: dict[str, Instance] = field(default_factory=dict)
    chooser: accel_mod.AccelChooser | None = None
    clock: Clock = field(default_factory=RealClock)
    launcher: Launcher = field(default_factory=QemuLauncher)
    alive: Callable[[int | None, str], bool] = qemu_alive
    command: Callable[[Instance, str], Awaitable[None]] = qmp_command
    kill: Callable[[int, int], None] = os.kill
    capture: Callable[[CaptureRequest], Awaitable[dict[str, Any]]] = capture_crash
    events: Callable[[Instance], AsyncIterator[QmpEvent]] | None = None  # None: QMP socket
    notify: Callable[[str], None] = lambda line: print(f"umonitor: {line}", file=sys.stderr)
    first_output_seconds: float = accel_mod.FIRST_OUTPUT_SECONDS
    # told when an instance's VM stops (True) and runs again or ends (False): the
    # collector holds a stopped guest's connections rather than timing them out
    vm_held: Callable[[str, bool], None] = lambda name, held: None
    syslog_port: int = 0  # where guests' own syslog reaches the collector (0: nowhere)

    def __post_init__(self) -> None:
        self._capturing = asyncio.Lock()  # one gdb at a time in the whole fleet
        if self.chooser is None:
            self.chooser = accel_mod.AccelChooser(self.root, self.qemu_binary)

    def run_dir(self, name: str) -> Path:
        path = self.root / "run" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    # -- lifecycle ------------------------------------------------------------------

    def add(self, inst: Instance) -> None:
        self.instances[inst.name] = inst
        saved = load_saved(inst.run_dir)
        if saved is not None:
            inst.token = str(saved.get("token") or inst.token)
            inst.restarts = int(saved.get("restarts") or 0)
            inst.last_exit = saved.get("last_exit")
            if self.alive(saved.get("pid"), inst.name):
                inst.pid = int(saved["pid"])
                inst.started_ns = saved.get("started_ns")
                inst.accel = saved.get("accel")
                inst.console_spool = (
                    Path(saved["console_spool"]) if saved.get("console_spool") else None
                )
                inst.console_offset = int(saved.get("console_offset") or 0)
                inst.console_boot = str(saved.get("console_boot") or "")
                inst.console_seen = bool(saved.get("console_seen", True))
                inst.adopted = True
        inst.redactor = Redactor([inst.token])

    def launch(self, inst: Instance) -> None:
        inst.wanted = True
        inst.start_failures = 0
        if inst.task is None or inst.task.done():
            inst.task = asyncio.get_running_loop().create_task(self._life(inst))

    async def _life(self, inst: Instance) -> None:
        """Start (or adopt), watch, and restart per policy until no longer wanted."""
        try:
            await self._run(inst)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # whatever it is, the instance shows it
            if not isinstance(exc, UmonitorError | OSError | ValueError):
                log.exception("instance %s", inst.name)
            own = isinstance(exc, UmonitorError) and str(exc)
            self._give_up(inst, str(exc) if own else f"{type(exc).__name__}: {exc}")

    async def _run(self, inst: Instance) -> None:
        while inst.wanted:
            if inst.adopted and inst.pid is not None:
                inst.state = State.RUNNING
            else:
                await self._start(inst)
            outcome = await self._watch(inst)
            inst.adopted = False
            if not inst.wanted:
                break
            if outcome is State.FALLBACK:
                continue  # at once, under TCG
            if outcome is State.START_FAILED:
                inst.start_failures += 1
                if inst.start_failures >= START_ATTEMPTS:
                    reason = (inst.last_exit or {}).get("reason", "")
                    self._give_up(inst, f"failed to start {inst.start_failures} times: {reason}")
                    return
                delay = restart_delay(
                    inst.start_failures, inst.config.backoff, inst.config.backoff_max
                )
            else:
                inst.start_failures = 0
                if not should_restart(inst.config.restart, outcome):
                    break
                up = (self.clock.time_ns() - (inst.started_ns or 0)) / 1e9
                inst.failures = 1 if up > STABLE_AFTER else inst.failures + 1
                delay = restart_delay(inst.failures, inst.config.backoff, inst.config.backoff_max)
            inst.state = State.BACKOFF
            inst.save()
            await self.clock.sleep(delay)
            inst.restarts += 1

    def _give_up(self, inst: Instance, reason: str) -> None:
        """The instance stays down, ``failed``, with ``reason`` in ps, a record and a log line."""
        reason = redact_text(reason, [inst.token])
        inst.state = State.FAILED
        inst.pid = None
        inst.proc = None
        previous = inst.last_exit or {}
        inst.last_exit = {
            "time": format_time(self.clock.time_ns()),
            "outcome": State.FAILED.value,
            "reason": reason,
            "status": previous.get("status"),
        }
        for key in ("stderr", "report"):
            if key in previous:
                inst.last_exit[key] = previous[key]
        inst.save()
        self._note(inst, Severity.ERR, f"instance failed: {reason}; not started again")
        self.notify(f"{inst.name} failed: {reason.splitlines()[0] if reason else ''}")

    async def _start(self, inst: Instance) -> None:
        inst.state = State.STARTING
        inst.stop_requested = False
        inst.crash_hint = None
        inst.guest_end = None
        inst.halted = False
        inst.panicked = False
        inst.shutdown_reason = None
        inst.silent_kill = None
        inst.console_seen = False
        self._set_vm_status(inst, "prelaunch" if inst.config.paused else "running")
        inst.debugger = None
        inst.ending = None
        inst.redactor = Redactor([inst.token])
        net = GuestNet(inst.name, inst.address, inst.gateway, self.collector_port, inst.token)
        spec_boot = boot_spec(
            inst.config.flavor, net, inst.config.args, inst.config.template, inst.config.app_args
        )
        for file_name, content in spec_boot.files.items():
            layout.write_private(inst.run_dir / file_name, content)
        for stale in (qemu.QMP_SOCKET, qemu.GDB_SOCKET, qemu.CONSOLE_SOCKET, qemu.PID_FILE):
            with contextlib.suppress(FileNotFoundError):
                (inst.run_dir / stale).unlink()
        inst.console_spool = spool.spool_path(self.root, inst.name)
        with contextlib.suppress(FileNotFoundError):
            inst.console_spool.unlink()
        inst.console_offset = inst.console_released = 0
        inst.console_boot = secrets.token_hex(16)
        assert self.chooser is not None
        requested = "tcg" if inst.force_tcg else inst.config.accel
        inst.accel = await asyncio.to_thread(
            self.chooser.choose, requested, inst.config.memory_mib, inst.config.cpus
        )
        if requested == "auto" and not self.chooser.announced:
            reason = self.chooser.unusable_reason()
            if reason is not None:
                self._announce(inst, reason)
        kernel = inst.config.kernel
        if inst.config.nanos is not None:
            kernel = await asyncio.to_thread(self._nanos_image, inst, spec_boot)
        spec = qemu.LaunchSpec(
            inst.name,
            kernel,
            inst.run_dir,
            spec_boot,
            initrd=inst.config.initrd,
            memory_mib=inst.config.memory_mib,
            cpus=inst.config.cpus,
            accel=inst.accel,
            tap=inst.tap,
            console_log=inst.console_spool,
            paused=inst.config.paused,
        )
        argv = qemu.qemu_command(spec, self.qemu_binary)
        err = inst.run_dir / "qemu.err"
        inst.stderr_offset = err.stat().st_size if err.exists() else 0
        inst.proc = await self.launcher.start(argv, err)
        inst.pid = inst.proc.pid
        inst.started_ns = self.clock.time_ns()
        inst.state = State.RUNNING
        inst.save()

    def _nanos_image(self, inst: Instance, boot: BootSpec) -> Path:
        """The disk a Nanos instance boots, made anew for each start with its Nanos' mkfs.

        Its manifest holds the program (the instance's ``kernel``), the application's
        arguments, ``UMON_CONFIG`` (token included: so the image lives beside the
        console spool, in the root-only runtime directory, not in the data directory),
        the leased address, and the syslog klib pointed at the collector.
        """
        assert inst.config.nanos is not None
        syslog = (str(inst.gateway), self.syslog_port) if self.syslog_port else None
        text = nanos.manifest(
            inst.config.kernel,
            boot.program_args,
            dict(boot.environment),
            inst.address,
            inst.gateway,
            syslog,
            nanos.klibs_dir(inst.config.nanos),
        )
        image = spool.spool_path(self.root, inst.name).with_suffix(".img")
        nanos.build_image(inst.config.nanos, text, image)
        return image

    # -- watching -------------------------------------------------------------------

    def _under_auto_kvm(self, inst: Instance) -> bool:
        return inst.accel == "kvm" and inst.config.accel == "auto" and not inst.force_tcg

    async def _watch(self, inst: Instance) -> State:
        loop = asyncio.get_running_loop()
        decoder = ConsoleDecoder()
        inst.ended = asyncio.Event()
        helpers = [
            loop.create_task(self._tail_console(inst, decoder)),
            loop.create_task(self._watch_qmp(inst)),
        ]
        if self._under_auto_kvm(inst) and not inst.adopted:
            helpers.append(loop.create_task(self._first_output(inst)))
        exiting = loop.create_task(self._wait_exit(inst))
        try:
            return await self._end_run(inst, decoder, helpers, exiting)
        finally:
            if not exiting.done():  # cancelled (stop, down): QEMU is not ours to end here
                exiting.cancel()

    async def _end_run(
        self,
        inst: Instance,
        decoder: ConsoleDecoder,
        helpers: list[asyncio.Task[None]],
        exiting: asyncio.Task[int | None],
    ) -> State:
        """Wait for QEMU to exit or the guest to end; classify, capture, quit QEMU."""
        ended = asyncio.get_running_loop().create_task(inst.ended.wait())
        try:
            await asyncio.wait({exiting, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
            for helper in helpers:
                helper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await helper
        held = not exiting.done()  # the guest ended, QEMU runs on (paused or halted)
        self._set_vm_status(inst, "off")  # ended: its connections are not held for it
        if held and inst.halted:
            with contextlib.suppress(QmpError, UmonitorError, OSError):
                await self.command(inst, "stop")  # the CPU stays as it is for the capture
        status = HELD_STATUS if held else exiting.result()
        self._read_console(inst, decoder, final=True)
        stderr = self._stderr(inst)
        end = Exit(
            status,
            inst.stop_requested,
            inst.console_seen,
            inst.panicked,
            inst.crash_hint,
            inst.shutdown_reason,
            stderr,
            self._under_auto_kvm(inst),
            inst.silent_kill,
            inst.guest_end,
        )
        outcome, reason = classify(end)
        inst.ending = outcome.value  # ps shows it while the capture runs
        crash: dict[str, Any] = {}
        if outcome is State.CRASHED:
            crash = await self._capture(inst, held)
        if held:
            status = await self._end_qemu(inst, exiting)
        inst.state = outcome
        inst.pid = None
        inst.proc = None
        inst.last_exit = {
            "time": format_time(self.clock.time_ns()),
            "outcome": outcome.value,
            "reason": reason,
            "status": status,
            "accel": inst.accel,
        }
        if stderr.strip():
            inst.last_exit["stderr"] = _stderr_note(stderr)
        if outcome is State.CRASHED or outcome is State.START_FAILED:
            inst.last_exit["report"] = self._report(inst, outcome, reason, status, stderr, crash)
        elif outcome is State.FALLBACK:
            inst.force_tcg = True
            inst.kvm_suspect = reason.removeprefix("under KVM: ")
            why = f"KVM failed to start this guest ({inst.kvm_suspect}); starting it under TCG"
            self._note(inst, Severity.WARNING, why, stderr)
        inst.save()
        return outcome

    def _stderr(self, inst: Instance) -> str:
        """What QEMU wrote on stderr during this run, redacted."""
        try:
            with open(inst.run_dir / "qemu.err", "rb") as src:
                src.seek(inst.stderr_offset)
                text = src.read(STDERR_MAX).decode("utf-8", "replace")
        except OSError:
            return ""
        return redact_text(text, [inst.token])

    async def _capture(self, inst: Instance, held: bool) -> dict[str, Any]:
        """The crash state for the report: bounded, one at a time, never raising."""
        request = CaptureRequest(
            inst.config.flavor,
            inst.config.kernel,
            inst.symbols(),
            inst.run_dir / qemu.GDB_SOCKET if held else None,
            tuple(inst.console_tail),
        )
        loop = asyncio.get_running_loop()

        async def run() -> dict[str, Any]:
            return await self.capture(request)

        async with self._capturing:
            work = loop.create_task(run())
            bound = loop.create_task(self.clock.sleep(CAPTURE_BOUND))
            await asyncio.wait({work, bound}, return_when=asyncio.FIRST_COMPLETED)
            bound.cancel()
            if not work.done():
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await work
                why = f"capture timed out after {CAPTURE_BOUND:g} s"
            elif work.cancelled():
                why = "capture cancelled"
            elif (exc := work.exception()) is not None:
                log.warning("instance %s: crash capture failed", inst.name, exc_info=exc)
                why = f"capture failed: {type(exc).__name__}: {exc}"
            else:
                return work.result()
        symbols = request.symbols
        return {
            "capture_errors": [why],
            "symbols": {"path": str(symbols), "sha256": None} if symbols else None,
        }

    async def _end_qemu(self, inst: Instance, exiting: asyncio.Task[int | None]) -> int | None:
        """Quit a held QEMU: QMP quit, then SIGTERM, then SIGKILL; its exit status."""
        for step in ("quit", signal.SIGTERM, signal.SIGKILL):
            if step == "quit":
                with contextlib.suppress(QmpError, UmonitorError, OSError):
                    await self.command(inst, "quit")
            else:
                self._signal(inst, int(step))
            deadline = self.clock.monotonic() + STOP_GRACE
            while not exiting.done() and self.clock.monotonic() < deadline:
                await self.clock.sleep(0.1)
            if exiting.done():
                break
        if not exiting.done():
            exiting.cancel()
            return None
        return exiting.result()

    async def _first_output(self, inst: Instance) -> None:
        """Kill a QEMU that ``auto`` put under KVM and that prints nothing in time.

        Only time the VM runs counts: a guest started paused, or stopped in a debugger,
        is not silent.
        """
        ran = 0.0
        last = self.clock.monotonic()
        while ran < self.first_output_seconds:
            if inst.console_seen or inst.pid is None:
                return
            await self.clock.sleep(TAIL_INTERVAL)
            now = self.clock.monotonic()
            if inst.vm_running:
                ran += now - last
            last = now
        if inst.console_seen or inst.pid is None:
            return
        inst.silent_kill = f"no console output within {self.first_output_seconds:g} s"
        self._signal(inst, signal.SIGKILL)

    def _signal(self, inst: Instance, sig: int) -> None:
        """Signal the instance's QEMU, never pid 0, 1 or a process group by accident."""
        pid = inst.pid
        if pid is None or pid <= 1:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            self.kill(pid, sig)

    async def _wait_exit(self, inst: Instance) -> int | None:
        if inst.proc is not None:
            return await inst.proc.wait()
        while self.alive(inst.pid, inst.name):  # adopted: not our child
            await self.clock.sleep(0.2)
        return None

    async def _watch_qmp(self, inst: Instance) -> None:
        source = self.events(inst) if self.events is not None else self._qmp_events(inst)
        async for event in source:
            if event.name in ("STOP", "RESUME", VM_STATUS):
                running = event.name == "RESUME" or event.data.get("status") == "running"
                self._set_vm_status(inst, "running" if running else str(
                    event.data.get("status") or "paused"))  # fmt: skip
            elif event.name == "GUEST_PANICKED":
                inst.panicked = True
            elif event.name == "SHUTDOWN":
                inst.shutdown_reason = str(event.data.get("reason", ""))
                if event.data.get("guest") is True or inst.shutdown_reason in GUEST_SHUTDOWNS:
                    inst.ended.set()  # -no-shutdown: QEMU holds the VM for us

    def _set_vm_status(self, inst: Instance, status: str) -> None:
        """Keep QEMU's run state; the collector holds a stopped VM's connections."""
        was_held = inst.vm_held
        inst.vm_status = status
        if was_held != inst.vm_held:
            self.vm_held(inst.name, inst.vm_held)

    async def _qmp_events(self, inst: Instance) -> AsyncIterator[QmpEvent]:
        """The instance's QMP events until QEMU closes the socket."""
        socket_path = inst.run_dir / qemu.QMP_SOCKET
        client = None
        for _ in range(100):
            try:
                client = await QmpClient.connect(socket_path, timeout=2)
                break
            except QmpError:
                await self.clock.sleep(0.1)
        if client is None:
            return
        inst.qmp = client
        try:
            with contextlib.suppress(QmpError):
                status = await client.execute("query-status")
                now = str(status.get("status")) if isinstance(status, dict) else "running"
                if inst.adopted and now in ("shutdown", "guest-panicked"):
                    # a guest that ended while no supervisor ran is held paused
                    reason = "guest-panic" if now == "guest-panicked" else "guest-shutdown"
                    yield QmpEvent("SHUTDOWN", {"guest": True, "reason": reason}, 0.0)
                else:
                    yield QmpEvent(VM_STATUS, {"status": now}, 0.0)
            while (event := await client.next_event()) is not None:
                if event.name == "STOP":  # stopped by whom: gdb (debug) or QMP (paused)
                    with contextlib.suppress(QmpError, TimeoutError):
                        status = await asyncio.wait_for(client.execute("query-status"), 5)
                        if isinstance(status, dict) and status.get("status") != "running":
                            event = QmpEvent(VM_STATUS, {"status": str(status["status"])}, 0.0)
                yield event
        finally:
            inst.qmp = None
            await client.close()

    async def _tail_console(self, inst: Instance, decoder: ConsoleDecoder) -> None:
        while True:
            self._read_console(inst, decoder)
            await self.clock.sleep(TAIL_INTERVAL)

    def _read_console(self, inst: Instance, decoder: ConsoleDecoder, final: bool = False) -> None:
        if inst.console_spool is None:
            return
        data = spool.read(inst.console_spool, inst.console_offset)
        inst.console_offset += len(data)
        inst.console_released = spool.release(
            inst.console_spool, inst.console_offset, inst.console_released
        )
        if data and not inst.console_seen:
            inst.console_seen = True
            self._first_bytes(inst)
        if inst.redactor is None:
            inst.redactor = Redactor([inst.token])
        clean = inst.redactor.feed(data)
        if final:
            clean += inst.redactor.flush()
        if clean:
            with open(inst.run_dir / qemu.CONSOLE_RAW, "ab") as raw:
                raw.write(clean)
        decoder.receive_data(clean)
        records = decoder.end_of_stream() if final else decoder.next_events()
        if not records:
            return
        for record in records:
            inst.console_tail.append(record.message)
            if inst.crash_hint is None:
                inst.crash_hint = crash_reason(record)
            if inst.guest_end is None:
                inst.guest_end = guest_end(record)
            if halted(record):
                # It will never power off (rumprun spins): its run ends here, as at a
                # power-off; the watch stops it, captures a crash, then quits QEMU.
                inst.halted = True
                inst.ended.set()
        log = self._console_log(inst)
        # Console lines are numbered per decoder; offset by what this boot already holds.
        base = log.high.get(inst.console_boot, 0)
        numbered = [r._replace(seq=base + i) for i, r in enumerate(records, 1)]
        self.store.add_records(
            log, inst.console_boot, numbered, Origin.CONSOLE, self.clock.time_ns()
        )
        self.commit()

    def _first_bytes(self, inst: Instance) -> None:
        """The guest printed: a KVM failure suspected for it is now confirmed by TCG."""
        if inst.kvm_suspect is None or inst.accel != "tcg":
            return
        reason, inst.kvm_suspect = inst.kvm_suspect, None
        assert self.chooser is not None
        if self.chooser.mark_unusable(reason):
            self._announce(inst, reason)

    def _announce(self, inst: Instance, reason: str) -> None:
        """Say once per run, as a line and as a record, that KVM is not used here."""
        assert self.chooser is not None
        self.chooser.announced = True
        line = accel_mod.notice(reason)
        if not self.chooser.shown:
            self.chooser.shown = True
            self.notify(line)
        self._note(inst, Severity.WARNING, line)

    def _console_log(self, inst: Instance) -> Any:
        log = self.store.log(inst.name, layout.CONSOLE_LOG)
        if log.context != inst.console_boot:
            self.store.begin_boot(log, inst.console_boot, "console", "", inst.name)
        return log

    def _note(
        self,
        inst: Instance,
        severity: Severity,
        message: str,
        stderr: str = "",
        kind: Kind = Kind.LOG,
        fields: tuple[tuple[str, str], ...] = (),
    ) -> None:
        """One record from umonitor itself in the instance's console log."""
        if not inst.console_boot:
            inst.console_boot = secrets.token_hex(16)
        log = self._console_log(inst)
        base = log.high.get(inst.console_boot, 0)
        if stderr.strip():
            fields = (*fields, ("qemu_stderr", _stderr_note(stderr)))
        record = Record(base + 1, severity, message, kind, fields=fields)
        self.store.add_records(
            log, inst.console_boot, [record], Origin.CONSOLE, self.clock.time_ns()
        )
        self.commit()

    def _report(
        self,
        inst: Instance,
        outcome: State,
        reason: str,
        status: int | None,
        stderr: str,
        crash: dict[str, Any] | None = None,
    ) -> str:
        """Write a crash or start-failure report into the instance's directory and a
        record saying so; returns the report's file name."""
        now = self.clock.time_ns()
        stamp = format_time(now).replace(":", "").replace("-", "")
        app_lines = _last_lines(layout.instance_dir(self.root, inst.name) / layout.APP_LOG)
        crashed = outcome is State.CRASHED
        report = {
            "instance": inst.name,
            "kind": "crash" if crashed else "start-failure",
            "time": format_time(now),
            "reason": reason,
            "exit_status": status,
            "accel": inst.accel,
            "qemu_shutdown_reason": inst.shutdown_reason,
            "qemu_stderr": stderr,
            "restarts_so_far": inst.restarts,
            "console": list(inst.console_tail),
            "app": app_lines,
            **(crash or {}),
        }
        name = f"{'crash' if crashed else 'start-failure'}-{stamp}.json"
        path = self.store.write_report(inst.name, name, json.dumps(report, indent=1))
        if crashed:
            message = f"instance crashed: {reason} (exit status {status}); report {path.name}"
            severity, kind = Severity.CRIT, Kind.CRASH
            fields = (("report", name), *crash_summary(crash or {}))
        else:
            message = f"instance failed to start: {reason}; report {path.name}"
            severity, kind = Severity.ERR, Kind.LOG
            fields = (("report", name),)
        self._note(inst, severity, message, stderr, kind, fields)
        return name

    # -- control --------------------------------------------------------------------

    async def stop(self, name: str) -> None:
        """Power the guest down; after a grace period quit QEMU; then kill it."""
        inst = self.instances[name]
        inst.wanted = False
        if inst.pid is None or inst.state not in (State.RUNNING, State.STARTING):
            if inst.task is not None and not inst.task.done():
                inst.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await inst.task
            if inst.state is not State.FAILED:
                inst.state = State.STOPPED
            inst.save()
            return
        inst.stop_requested = True
        inst.state = State.STOPPING
        for command in ("system_powerdown", "quit"):
            with contextlib.suppress(QmpError, UmonitorError, OSError):
                await self.command(inst, command)
            if await self._gone(inst, STOP_GRACE):
                break
        else:
            self._signal(inst, signal.SIGKILL)
        if inst.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await inst.task

    async def _gone(self, inst: Instance, timeout: float) -> bool:
        deadline = self.clock.monotonic() + timeout
        while self.clock.monotonic() < deadline:
            if inst.pid is None or not self.alive(inst.pid, inst.name):
                return True
            await self.clock.sleep(0.1)
        return False

    async def stop_all(self) -> None:
        await asyncio.gather(*(self.stop(name) for name in list(self.instances)))

    def snapshot(self) -> list[dict[str, Any]]:
        return [inst.summary() for inst in self.instances.values()]


def _last_lines(path: Path, count: int = REPORT_LINES) -> list[str]:
    """The last ``count`` lines of a log file, read from its end."""
    try:
        with open(path, "rb") as src:
            src.seek(0, os.SEEK_END)
            size = src.tell()
            src.seek(max(0, size - (count + 1) * 512))
            lines = src.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return []
    return [line for line in lines if not line.startswith("#")][-count:]
