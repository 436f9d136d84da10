"""QMP: the commands the supervisor sends a QEMU and the events it watches.

While an instance runs, ``watch_qmp`` holds its QMP socket and follows its events:
``STOP`` and ``RESUME`` (with ``query-status`` asked on each stop: paused, or in a
debugger) keep the instance's ``vm_status``; ``GUEST_PANICKED`` and ``SHUTDOWN`` say
the guest has ended. QEMU runs with ``-no-shutdown``, so a guest's power-off, reset or
panic pauses the VM (``SHUTDOWN`` with ``guest: true``) and the watch sets the
instance's ``ended`` event for the supervisor to read and quit QEMU. An adopted QEMU
found already holding an ended guest gives the same ``SHUTDOWN`` at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from umonitor.fleet import qemu
from umonitor.fleet.clock import Clock
from umonitor.fleet.instance import Instance
from umonitor.fleet.outcome import GUEST_SHUTDOWNS
from umonitor.fleet.qmp import QmpClient, QmpError, QmpEvent

VM_STATUS = "umonitor-status"  # not QEMU's: query-status's answer, as an event


class QmpHost(Protocol):
    """What watching QMP needs of the supervisor (``supervisor.Supervisor``)."""

    @property
    def clock(self) -> Clock: ...

    @property
    def events(self) -> Callable[[Instance], AsyncIterator[QmpEvent]] | None: ...

    @property
    def vm_held(self) -> Callable[[str, bool], None]: ...


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


async def watch_qmp(host: QmpHost, inst: Instance) -> None:
    """Follow the instance's QMP events (``host.events``, else its QMP socket)."""
    source = host.events(inst) if host.events is not None else qmp_events(host.clock, inst)
    async for event in source:
        if event.name in ("STOP", "RESUME", VM_STATUS):
            running = event.name == "RESUME" or event.data.get("status") == "running"
            set_vm_status(host, inst, "running" if running else str(
                event.data.get("status") or "paused"))  # fmt: skip
        elif event.name == "GUEST_PANICKED":
            inst.panicked = True
        elif event.name == "SHUTDOWN":
            inst.shutdown_reason = str(event.data.get("reason", ""))
            if event.data.get("guest") is True or inst.shutdown_reason in GUEST_SHUTDOWNS:
                inst.ended.set()  # -no-shutdown: QEMU holds the VM for us


def set_vm_status(host: QmpHost, inst: Instance, status: str) -> None:
    """Keep QEMU's run state; the collector holds a stopped VM's connections."""
    was_held = inst.vm_held
    inst.vm_status = status
    if was_held != inst.vm_held:
        host.vm_held(inst.name, inst.vm_held)


async def qmp_events(clock: Clock, inst: Instance) -> AsyncIterator[QmpEvent]:
    """The instance's QMP events until QEMU closes the socket."""
    socket_path = inst.run_dir / qemu.QMP_SOCKET
    client = None
    for _ in range(100):
        try:
            client = await QmpClient.connect(socket_path, timeout=2)
            break
        except QmpError:
            await clock.sleep(0.1)
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
