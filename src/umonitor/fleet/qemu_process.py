"""A QEMU process: started in its own session, found alive again by its command line.

QEMU is started with ``start_new_session`` so that it outlives the supervisor; a
later supervisor adopts it when ``qemu_alive`` finds the saved pid still running a
QEMU for the same instance. ``Process`` and ``Launcher`` are what tests replace with
fake QEMU processes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from umonitor.procs import process_running

STDERR_MAX = 64 * 1024  # of QEMU's stderr per run, kept for the report


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


def qemu_alive(pid: int | None, name: str) -> bool:
    """Whether ``pid`` is a live QEMU started for instance ``name``."""
    if not pid or not process_running(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"umonitor:{name},process=umonitor-{name}".encode() in cmdline


def signal_qemu(kill: Callable[[int, int], None], pid: int | None, sig: int) -> None:
    """Signal an instance's QEMU, never pid 0, 1 or a process group by accident."""
    if pid is None or pid <= 1:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        kill(pid, sig)


def stderr_note(text: str) -> str:
    """QEMU's stderr as a last exit and a record keep it: stripped, its last part."""
    return text.strip()[-STDERR_MAX:]
