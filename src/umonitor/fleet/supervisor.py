"""The supervisor: start unikernels in QEMU, watch them, report crashes, restart.

How this works, per instance:

* **start**: lease an address and a TAP device, write the flavor's files into the
  instance's run directory (``DATA/run/<name>/``), start QEMU in its own session (so
  it outlives the supervisor, which makes adoption possible) and save
  ``instance.json`` (pid, address, token, console offset, ...).
* **console**: QEMU's console chardev keeps every byte in ``console.raw``; a tail task
  reads it from the saved offset every 100 ms, decodes it (protocol/console_lines)
  into records of origin ``console`` in ``console.log``, keeps the last 200 lines
  for crash reports and remembers the first crash marker it sees.
* **watch**: QMP events (GUEST_PANICKED, SHUTDOWN with its reason) and the process
  exit. On exit the outcome is decided in this order: stopped on request; guest
  panicked; a console crash marker; a guest reset (with -no-reboot, a reboot or a
  triple fault ends QEMU); a non-zero QEMU status; otherwise a clean exit. A crash
  writes a report and a crash record; then the restart policy applies, with the
  delay doubling per consecutive failure from ``backoff`` up to ``backoff_max``.
* **adopt**: a supervisor that finds a live QEMU (its pid's command line names the
  instance) takes it over instead of starting another: it tails the console from
  the saved offset and polls the pid, since it cannot wait() for a process it did
  not start.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import ipaddress
import json
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from umonitor.errors import UmonitorError
from umonitor.fleet import qemu
from umonitor.fleet.config import InstanceConfig
from umonitor.fleet.flavors import GuestNet, boot_spec
from umonitor.fleet.qmp import QmpClient, QmpError
from umonitor.procs import process_running
from umonitor.protocol.console_lines import ConsoleDecoder, crash_reason
from umonitor.records import Kind, Origin, Record, Severity
from umonitor.store import layout
from umonitor.store.writer import Store
from umonitor.timeparse import format_time

REPORT_LINES = 200
TAIL_INTERVAL = 0.1
STOP_GRACE = 5.0
STABLE_AFTER = 60.0  # seconds up after which consecutive failures are forgotten


class State(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    EXITED = "exited"
    CRASHED = "crashed"
    BACKOFF = "restarting"


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
    last_exit: dict[str, Any] | None = None
    console_offset: int = 0
    console_boot: str = ""
    adopted: bool = False
    wanted: bool = True
    stop_requested: bool = False
    crash_hint: str | None = None
    panicked: bool = False
    shutdown_reason: str | None = None
    console_tail: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=REPORT_LINES)
    )
    proc: asyncio.subprocess.Process | None = None
    task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.config.name

    def summary(self) -> dict[str, Any]:
        """What ``umonitor ps`` shows."""
        now = time.time_ns()
        running = self.state in (State.RUNNING, State.STARTING, State.STOPPING)
        return {
            "name": self.name,
            "state": self.state.value,
            "address": str(self.address.ip),
            "tap": self.tap,
            "pid": self.pid if running else None,
            "uptime_s": round((now - self.started_ns) / 1e9, 1)
            if running and self.started_ns
            else None,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "flavor": self.config.flavor,
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
            "console_offset": self.console_offset,
            "console_boot": self.console_boot,
            "state": self.state.value,
            "last_exit": self.last_exit,
        }
        tmp = self.run_dir / "instance.json.tmp"
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, self.run_dir / "instance.json")


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


@dataclass
class Supervisor:
    """Runs and watches every instance; see the module docstring."""

    root: Path
    store: Store
    collector_port: int
    commit: Callable[[], None]
    qemu_binary: str = qemu.QEMU
    instances: dict[str, Instance] = field(default_factory=dict)
    accels: dict[str, str] = field(default_factory=dict)

    _probe_lock: threading.Lock = field(default_factory=threading.Lock)

    def accel(self, requested: str) -> str:
        """``kvm`` or ``tcg`` for ``auto``/``kvm``/``tcg``, probed once per run."""
        with self._probe_lock:
            if requested not in self.accels:
                self.accels[requested] = qemu.probe_accel(requested, self.qemu_binary)
            return self.accels[requested]

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
            if qemu_alive(saved.get("pid"), inst.name):
                inst.pid = int(saved["pid"])
                inst.started_ns = saved.get("started_ns")
                inst.console_offset = int(saved.get("console_offset") or 0)
                inst.console_boot = str(saved.get("console_boot") or "")
                inst.adopted = True

    def launch(self, inst: Instance) -> None:
        inst.wanted = True
        if inst.task is None or inst.task.done():
            inst.task = asyncio.get_running_loop().create_task(self._life(inst))

    async def _life(self, inst: Instance) -> None:
        """Start (or adopt), watch, and restart per policy until no longer wanted."""
        while inst.wanted:
            if inst.adopted and inst.pid is not None:
                inst.state = State.RUNNING
            else:
                await self._start(inst)
            outcome = await self._watch(inst)
            inst.adopted = False
            if not inst.wanted or not self._should_restart(inst, outcome):
                break
            up = (time.time_ns() - (inst.started_ns or 0)) / 1e9
            inst.failures = 1 if up > STABLE_AFTER else inst.failures + 1
            delay = min(inst.config.backoff * 2 ** (inst.failures - 1), inst.config.backoff_max)
            inst.state = State.BACKOFF
            inst.save()
            await asyncio.sleep(delay)
            inst.restarts += 1

    @staticmethod
    def _should_restart(inst: Instance, outcome: State) -> bool:
        policy = inst.config.restart
        if outcome is State.STOPPED or policy == "no":
            return False
        return policy == "always" or outcome is State.CRASHED

    async def _start(self, inst: Instance) -> None:
        inst.state = State.STARTING
        inst.stop_requested = False
        inst.crash_hint = None
        inst.panicked = False
        inst.shutdown_reason = None
        net = GuestNet(inst.name, inst.address, inst.gateway, self.collector_port, inst.token)
        spec_boot = boot_spec(inst.config.flavor, net, inst.config.args, inst.config.template)
        for file_name, content in spec_boot.files.items():
            (inst.run_dir / file_name).write_text(content)
        for stale in (qemu.QMP_SOCKET, qemu.CONSOLE_SOCKET, qemu.PID_FILE):
            with contextlib.suppress(FileNotFoundError):
                (inst.run_dir / stale).unlink()
        raw = inst.run_dir / qemu.CONSOLE_RAW
        inst.console_offset = raw.stat().st_size if raw.exists() else 0
        inst.console_boot = secrets.token_hex(16)
        spec = qemu.LaunchSpec(
            inst.name,
            inst.config.kernel,
            inst.run_dir,
            spec_boot,
            initrd=inst.config.initrd,
            memory_mib=inst.config.memory_mib,
            cpus=inst.config.cpus,
            accel=await asyncio.to_thread(self.accel, inst.config.accel),
            tap=inst.tap,
        )
        argv = qemu.qemu_command(spec, self.qemu_binary)
        with open(inst.run_dir / "qemu.err", "ab") as err:
            inst.proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )
        inst.pid = inst.proc.pid
        inst.started_ns = time.time_ns()
        inst.state = State.RUNNING
        inst.save()

    # -- watching -------------------------------------------------------------------

    async def _watch(self, inst: Instance) -> State:
        loop = asyncio.get_running_loop()
        decoder = ConsoleDecoder()
        tail = loop.create_task(self._tail_console(inst, decoder))
        qmp_task = loop.create_task(self._watch_qmp(inst))
        try:
            status = await self._wait_exit(inst)
        finally:
            qmp_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await qmp_task
            tail.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await tail
        self._read_console(inst, decoder, final=True)
        outcome, reason = self._outcome(inst, status)
        inst.state = outcome
        inst.pid = None
        inst.proc = None
        inst.last_exit = {
            "time": format_time(time.time_ns()),
            "outcome": outcome.value,
            "reason": reason,
            "status": status,
        }
        if outcome is State.CRASHED:
            inst.last_exit["report"] = self._report(inst, reason, status)
        inst.save()
        return outcome

    async def _wait_exit(self, inst: Instance) -> int | None:
        if inst.proc is not None:
            return await inst.proc.wait()
        while qemu_alive(inst.pid, inst.name):  # adopted: not our child
            await asyncio.sleep(0.2)
        return None

    async def _watch_qmp(self, inst: Instance) -> None:
        socket_path = inst.run_dir / qemu.QMP_SOCKET
        client = None
        for _ in range(100):
            try:
                client = await QmpClient.connect(socket_path, timeout=2)
                break
            except QmpError:
                await asyncio.sleep(0.1)
        if client is None:
            return
        try:
            while (event := await client.next_event()) is not None:
                if event.name == "GUEST_PANICKED":
                    inst.panicked = True
                elif event.name == "SHUTDOWN":
                    inst.shutdown_reason = str(event.data.get("reason", ""))
        finally:
            await client.close()

    async def _tail_console(self, inst: Instance, decoder: ConsoleDecoder) -> None:
        while True:
            self._read_console(inst, decoder)
            await asyncio.sleep(TAIL_INTERVAL)

    def _read_console(self, inst: Instance, decoder: ConsoleDecoder, final: bool = False) -> None:
        raw = inst.run_dir / qemu.CONSOLE_RAW
        try:
            with open(raw, "rb") as src:
                src.seek(inst.console_offset)
                data = src.read(1 << 20)
        except FileNotFoundError:
            data = b""
        inst.console_offset += len(data)
        decoder.receive_data(data)
        records = decoder.end_of_stream() if final else decoder.next_events()
        if not records:
            return
        for record in records:
            inst.console_tail.append(record.message)
            if inst.crash_hint is None:
                inst.crash_hint = crash_reason(record)
        log = self.store.log(inst.name, layout.CONSOLE_LOG)
        if log.context != inst.console_boot:
            self.store.begin_boot(log, inst.console_boot, "console", "", inst.name)
        # Console lines are numbered per decoder; offset by what this boot already holds.
        base = log.high.get(inst.console_boot, 0)
        numbered = [r._replace(seq=base + i) for i, r in enumerate(records, 1)]
        self.store.add_records(log, inst.console_boot, numbered, Origin.CONSOLE, time.time_ns())
        self.commit()

    def _outcome(self, inst: Instance, status: int | None) -> tuple[State, str]:
        if inst.stop_requested:
            return State.STOPPED, "stopped on request"
        if inst.panicked:
            return State.CRASHED, "guest panicked (pvpanic)"
        if inst.crash_hint:
            return State.CRASHED, inst.crash_hint
        if inst.shutdown_reason in ("guest-reset", "guest-panic"):
            return State.CRASHED, f"guest reset ({inst.shutdown_reason})"
        if status not in (0, None):
            return State.CRASHED, f"qemu exited with status {status}"
        return State.EXITED, inst.shutdown_reason or "guest powered off"

    def _report(self, inst: Instance, reason: str, status: int | None) -> str:
        """Write a crash report into the instance's directory; returns its file name."""
        now = time.time_ns()
        stamp = format_time(now).replace(":", "").replace("-", "")
        app_lines = _last_lines(layout.instance_dir(self.root, inst.name) / layout.APP_LOG)
        report = {
            "instance": inst.name,
            "time": format_time(now),
            "reason": reason,
            "exit_status": status,
            "qemu_shutdown_reason": inst.shutdown_reason,
            "restarts_so_far": inst.restarts,
            "console": list(inst.console_tail),
            "app": app_lines,
        }
        name = f"crash-{stamp}.json"
        path = self.store.write_report(inst.name, name, json.dumps(report, indent=1))
        log = self.store.log(inst.name, layout.CONSOLE_LOG)
        base = log.high.get(inst.console_boot, 0)
        message = f"instance crashed: {reason} (exit status {status}); report {path.name}"
        self.store.add_records(
            log,
            inst.console_boot,
            [Record(base + 1, Severity.CRIT, message, Kind.CRASH, fields=(("report", name),))],
            Origin.CONSOLE,
            now,
        )
        self.commit()
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
            inst.state = State.STOPPED
            inst.save()
            return
        inst.stop_requested = True
        inst.state = State.STOPPING
        for command in ("system_powerdown", "quit"):
            with contextlib.suppress(QmpError, UmonitorError, OSError):
                client = await QmpClient.connect(inst.run_dir / qemu.QMP_SOCKET, timeout=2)
                try:
                    await client.execute(command)
                finally:
                    await client.close()
            if await self._gone(inst, STOP_GRACE):
                break
        else:
            with contextlib.suppress(ProcessLookupError, TypeError):
                os.kill(inst.pid or 0, signal.SIGKILL)
        if inst.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await inst.task

    async def _gone(self, inst: Instance, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if inst.pid is None or not qemu_alive(inst.pid, inst.name):
                return True
            await asyncio.sleep(0.1)
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
