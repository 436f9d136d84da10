"""Crash capture and reports: what a crash or a failed start leaves behind.

How this works: when a run is classified a crash, its state is read before QEMU is
quit (debug/crash_state.py ``capture_crash``: gdb through the gdbstub of the held VM,
else the console's dump, symbolized with the instance's symbols), one capture at a
time in the whole fleet and bounded by ``CAPTURE_BOUND``: a capture that fails or
hangs becomes a ``capture_errors`` entry, so a restart never waits longer than the
bound. ``write_report`` then writes ``crash-<time>.json`` (or
``start-failure-<time>.json``) into the instance's directory, with the reason, QEMU's
status and stderr, the last console and application lines and the capture's keys,
and a record in the console log naming it (a crash record carries a short backtrace).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from umonitor.debug.crash_state import CAPTURE_TIMEOUT, CaptureRequest, crash_summary
from umonitor.fleet import qemu
from umonitor.fleet.clock import Clock
from umonitor.fleet.console import NoteHost, note
from umonitor.fleet.instance import REPORT_LINES, Instance, State
from umonitor.records import Kind, Severity
from umonitor.store import layout
from umonitor.timeparse import format_time

log = logging.getLogger(__name__)

CAPTURE_BOUND = CAPTURE_TIMEOUT + 5.0  # seconds for a whole capture, symbolizing included


class ReportHost(NoteHost, Protocol):
    """What writing a report needs of the supervisor (``supervisor.Supervisor``)."""

    @property
    def root(self) -> Path: ...


async def capture_bounded(
    capture_crash: Callable[[CaptureRequest], Awaitable[dict[str, Any]]],
    clock: Clock,
    capturing: asyncio.Lock,
    inst: Instance,
    held: bool,
) -> dict[str, Any]:
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
        return await capture_crash(request)

    async with capturing:
        work = loop.create_task(run())
        bound = loop.create_task(clock.sleep(CAPTURE_BOUND))
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


def write_report(
    host: ReportHost,
    inst: Instance,
    outcome: State,
    reason: str,
    status: int | None,
    stderr: str,
    crash: dict[str, Any] | None = None,
) -> str:
    """Write a crash or start-failure report into the instance's directory and a
    record saying so; returns the report's file name."""
    now = host.clock.time_ns()
    stamp = format_time(now).replace(":", "").replace("-", "")
    app_lines = _last_lines(layout.instance_dir(host.root, inst.name) / layout.APP_LOG)
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
    path = host.store.write_report(inst.name, name, json.dumps(report, indent=1))
    if crashed:
        message = f"instance crashed: {reason} (exit status {status}); report {path.name}"
        severity, kind = Severity.CRIT, Kind.CRASH
        fields = (("report", name), *crash_summary(crash or {}))
    else:
        message = f"instance failed to start: {reason}; report {path.name}"
        severity, kind = Severity.ERR, Kind.LOG
        fields = (("report", name),)
    note(host, inst, severity, message, stderr, kind, fields)
    return name


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
