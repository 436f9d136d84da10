"""The supervisor: start unikernels in QEMU, watch them, report crashes, restart.

How this works, per instance:

* **start**: lease an address and a TAP device, write the flavor's files into the
  instance's run directory (``DATA/run/<name>/``), choose the accelerator
  (fleet/accel.py), start QEMU in its own session (so it outlives the supervisor,
  which makes adoption possible; qemu_process.py) and save ``instance.json`` (pid,
  address, token, console offset, ...; instance.py). Whatever goes wrong while
  starting (a bad template, a missing file, QEMU refusing an option) leaves the
  instance ``failed`` with the reason.
* **console**: QEMU appends every console byte to a spool outside the data
  directory (fleet/spool.py); a tail task reads it from the saved offset every
  100 ms, redacts the instance's token, appends the result to ``console.raw``,
  decodes it (protocol/console_lines) into records of origin ``console`` in
  ``console.log``, keeps the last 200 lines for reports and remembers the first
  crash marker it sees (console.py).
* **first output under KVM**: an instance that ``auto`` put under KVM must print
  within ``accel.FIRST_OUTPUT_SECONDS``; if QEMU exits first or stays silent, it is
  relaunched under TCG at once, and KVM is marked unusable for this host when the
  TCG run prints (see accel.py; the bound is console.py's ``first_output``).
* **watch**: QMP events (GUEST_PANICKED, SHUTDOWN with its reason; qmp_watch.py) and
  the process exit. QEMU runs with ``-no-shutdown``: a guest's power-off, reset or panic pauses
  the VM instead of ending QEMU (QMP ``SHUTDOWN`` with ``guest: true``), and a guest
  that halts without powering off (rumprun's ``halted`` or ``FATAL TRAP``) is
  stopped over QMP. Either way the guest has *ended* while QEMU is *held*: the
  console is read to its end, the run classified as if QEMU had exited with status 0,
  a crash captured (below), and then the supervisor quits QEMU (QMP ``quit``, then
  SIGTERM, then SIGKILL, ``STOP_GRACE`` apart). Runs are classified by ``classify``
  (outcome.py):
  stopped on request; a KVM fallback; a start failure (QEMU ended before the guest
  printed anything, and the guest neither panicked nor reset); guest panicked; a
  console crash marker; a guest reset (with -no-reboot a reboot or a triple fault
  ends the run); a non-zero QEMU status;
  otherwise a clean exit. QEMU's stderr of that run goes into the last exit (first
  line), the report (whole) and the record.
* **capture** (crash_report.py): a crash is read before QEMU is quit (debug/crash_state.py
  ``capture_crash``: gdb through the gdbstub of the held VM, else the console's dump,
  symbolized with the instance's symbols), one capture at a time in the fleet, bounded
  by ``CAPTURE_BOUND``; its keys go into the crash report and a short backtrace into
  the crash record. A capture that fails or hangs is a ``capture_errors`` entry: the
  restart never waits longer than the bound.
* **restart** (outcome.py): a crash (or any exit, per policy) restarts after a delay doubling per
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
import contextlib
import logging
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from umonitor.debug.crash_state import CaptureRequest, capture_crash
from umonitor.errors import UmonitorError
from umonitor.fleet import accel as accel_mod
from umonitor.fleet import qemu, spool
from umonitor.fleet.clock import Clock, RealClock
from umonitor.fleet.console import announce, first_output, note, read_console, tail_console
from umonitor.fleet.crash_report import capture_bounded, write_report
from umonitor.fleet.flavors import BootSpec, GuestNet, boot_spec
from umonitor.fleet.instance import Instance, State, load_saved
from umonitor.fleet.outcome import (
    HELD_STATUS,
    STABLE_AFTER,
    START_ATTEMPTS,
    Exit,
    classify,
    restart_delay,
    should_restart,
)
from umonitor.fleet.qemu_process import Launcher, QemuLauncher, qemu_alive, signal_qemu, stderr_note
from umonitor.fleet.qmp import QmpError, QmpEvent
from umonitor.fleet.qmp_watch import qmp_command, set_vm_status, watch_qmp
from umonitor.image import nanos
from umonitor.protocol.console_lines import ConsoleDecoder
from umonitor.protocol.redact import Redactor, redact_text
from umonitor.records import Severity
from umonitor.store import layout
from umonitor.store.writer import Store
from umonitor.timeparse import format_time

log = logging.getLogger(__name__)

STOP_GRACE = 5.0


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
        note(self, inst, Severity.ERR, f"instance failed: {reason}; not started again")
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
        set_vm_status(self, inst, "prelaunch" if inst.config.paused else "running")
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
                announce(self, inst, reason)
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
            loop.create_task(tail_console(self, inst, decoder)),
            loop.create_task(watch_qmp(self, inst)),
        ]
        if self._under_auto_kvm(inst) and not inst.adopted:
            helpers.append(loop.create_task(first_output(self, inst)))
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
        set_vm_status(self, inst, "off")  # ended: its connections are not held for it
        if held and inst.halted:
            with contextlib.suppress(QmpError, UmonitorError, OSError):
                await self.command(inst, "stop")  # the CPU stays as it is for the capture
        status = HELD_STATUS if held else exiting.result()
        read_console(self, inst, decoder, final=True)
        stderr = inst.run_stderr()
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
            crash = await capture_bounded(self.capture, self.clock, self._capturing, inst, held)
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
            inst.last_exit["stderr"] = stderr_note(stderr)
        if outcome is State.CRASHED or outcome is State.START_FAILED:
            inst.last_exit["report"] = write_report(
                self, inst, outcome, reason, status, stderr, crash
            )
        elif outcome is State.FALLBACK:
            inst.force_tcg = True
            inst.kvm_suspect = reason.removeprefix("under KVM: ")
            why = f"KVM failed to start this guest ({inst.kvm_suspect}); starting it under TCG"
            note(self, inst, Severity.WARNING, why, stderr)
        inst.save()
        return outcome

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

    def _signal(self, inst: Instance, sig: int) -> None:
        """Signal the instance's QEMU, never pid 0, 1 or a process group by accident."""
        signal_qemu(self.kill, inst.pid, sig)

    async def _wait_exit(self, inst: Instance) -> int | None:
        if inst.proc is not None:
            return await inst.proc.wait()
        while self.alive(inst.pid, inst.name):  # adopted: not our child
            await self.clock.sleep(0.2)
        return None

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
