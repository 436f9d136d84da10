"""An instance's console: tailed from its spool, redacted, decoded, stored; its first output.

How this works: QEMU appends every console byte to a spool outside the data directory
(spool.py). While the instance runs, ``tail_console`` reads the spool from the saved
offset every ``TAIL_INTERVAL`` seconds; each read redacts the instance's token,
appends the result to ``console.raw``, decodes it (protocol/console_lines) into
records of origin ``console`` in ``console.log``, keeps the last lines for reports
(``Instance.console_tail``) and remembers the first crash marker, the first word on
how the program ended, and a halt (a guest that will never power off: its run ends
here). ``note`` writes umonitor's own records (a crash, a failure, a KVM fallback)
into the same log.

``first_output`` bounds how long a guest that ``auto`` put under KVM may stay silent
(counting only time its VM runs); the first byte of a TCG run after a KVM failure
confirms that KVM is unusable on this host (accel.py), said once per run.
"""

from __future__ import annotations

import secrets
import signal
from collections.abc import Callable
from typing import Any, Protocol

from umonitor.fleet import accel as accel_mod
from umonitor.fleet import qemu, spool
from umonitor.fleet.clock import Clock
from umonitor.fleet.instance import Instance
from umonitor.fleet.qemu_process import signal_qemu, stderr_note
from umonitor.protocol.console_lines import ConsoleDecoder, crash_reason, guest_end, halted
from umonitor.protocol.redact import Redactor
from umonitor.records import Kind, Origin, Record, Severity
from umonitor.store import layout
from umonitor.store.writer import Store

TAIL_INTERVAL = 0.1


class NoteHost(Protocol):
    """What writing to an instance's console log needs (``supervisor.Supervisor``)."""

    @property
    def store(self) -> Store: ...

    @property
    def commit(self) -> Callable[[], None]: ...

    @property
    def clock(self) -> Clock: ...


class ConsoleHost(NoteHost, Protocol):
    """What tailing a console and bounding its first output need of the supervisor."""

    @property
    def chooser(self) -> accel_mod.AccelChooser | None: ...

    @property
    def notify(self) -> Callable[[str], None]: ...

    @property
    def first_output_seconds(self) -> float: ...

    @property
    def kill(self) -> Callable[[int, int], None]: ...


async def tail_console(host: ConsoleHost, inst: Instance, decoder: ConsoleDecoder) -> None:
    while True:
        read_console(host, inst, decoder)
        await host.clock.sleep(TAIL_INTERVAL)


def read_console(
    host: ConsoleHost, inst: Instance, decoder: ConsoleDecoder, final: bool = False
) -> None:
    if inst.console_spool is None:
        return
    data = spool.read(inst.console_spool, inst.console_offset)
    inst.console_offset += len(data)
    inst.console_released = spool.release(
        inst.console_spool, inst.console_offset, inst.console_released
    )
    if data and not inst.console_seen:
        inst.console_seen = True
        _first_bytes(host, inst)
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
    log = console_log(host.store, inst)
    # Console lines are numbered per decoder; offset by what this boot already holds.
    base = log.high.get(inst.console_boot, 0)
    numbered = [r._replace(seq=base + i) for i, r in enumerate(records, 1)]
    host.store.add_records(log, inst.console_boot, numbered, Origin.CONSOLE, host.clock.time_ns())
    host.commit()


def _first_bytes(host: ConsoleHost, inst: Instance) -> None:
    """The guest printed: a KVM failure suspected for it is now confirmed by TCG."""
    if inst.kvm_suspect is None or inst.accel != "tcg":
        return
    reason, inst.kvm_suspect = inst.kvm_suspect, None
    assert host.chooser is not None
    if host.chooser.mark_unusable(reason):
        announce(host, inst, reason)


def announce(host: ConsoleHost, inst: Instance, reason: str) -> None:
    """Say once per run, as a line and as a record, that KVM is not used here."""
    assert host.chooser is not None
    host.chooser.announced = True
    line = accel_mod.notice(reason)
    if not host.chooser.shown:
        host.chooser.shown = True
        host.notify(line)
    note(host, inst, Severity.WARNING, line)


def console_log(store: Store, inst: Instance) -> Any:
    log = store.log(inst.name, layout.CONSOLE_LOG)
    if log.context != inst.console_boot:
        store.begin_boot(log, inst.console_boot, "console", "", inst.name)
    return log


def note(
    host: NoteHost,
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
    log = console_log(host.store, inst)
    base = log.high.get(inst.console_boot, 0)
    if stderr.strip():
        fields = (*fields, ("qemu_stderr", stderr_note(stderr)))
    record = Record(base + 1, severity, message, kind, fields=fields)
    host.store.add_records(log, inst.console_boot, [record], Origin.CONSOLE, host.clock.time_ns())
    host.commit()


async def first_output(host: ConsoleHost, inst: Instance) -> None:
    """Kill a QEMU that ``auto`` put under KVM and that prints nothing in time.

    Only time the VM runs counts: a guest started paused, or stopped in a debugger,
    is not silent.
    """
    ran = 0.0
    last = host.clock.monotonic()
    while ran < host.first_output_seconds:
        if inst.console_seen or inst.pid is None:
            return
        await host.clock.sleep(TAIL_INTERVAL)
        now = host.clock.monotonic()
        if inst.vm_running:
            ran += now - last
        last = now
    if inst.console_seen or inst.pid is None:
        return
    inst.silent_kill = f"no console output within {host.first_output_seconds:g} s"
    signal_qemu(host.kill, inst.pid, signal.SIGKILL)
