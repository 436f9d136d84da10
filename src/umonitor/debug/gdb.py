"""gdb on an instance through QEMU's gdbstub: the command lines ``umonitor debug`` runs.

How this works: every instance's QEMU serves a gdbstub on ``RUN/gdb.sock`` (fleet/qemu.py).
``attach_argv`` is gdb with the instance's symbols (and the kernel's code when the
symbols file has none, as ``objcopy --only-keep-debug`` leaves it), attached to that
socket; the crash capture (debug/crash_state.py) runs the same attach in batch mode with
its own script. ``umonitor debug`` replaces itself with gdb (the terminal is gdb's; the
pid the fleet was told is gdb's), or, with ``--batch FILE``, runs ``BATCH_SCRIPT``
inside gdb, which sources FILE, detaches whatever FILE left attached, and exits 1 if
FILE failed: gdb's own batch mode exits with the status of its last command only.

QEMU answers gdb's ``qAttached`` with "attached", so gdb's quit detaches and the guest
runs on; nothing here ever kills a guest.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from umonitor.debug.symbols_file import SHT_NOBITS, elf_sections
from umonitor.errors import UsageError

GDB = "gdb"
BATCH_SCRIPT = Path(__file__).with_name("gdb_batch.py")
SCRIPT_ENV = "UMONITOR_GDB_SCRIPT"  # the user's script, for BATCH_SCRIPT


@dataclass(frozen=True, slots=True)
class Target:
    """What gdb needs to attach to one instance."""

    name: str
    socket: Path  # QEMU's gdbstub
    symbols: Path | None  # ELF with DWARF; None: gdb gets only the kernel
    kernel: Path


def needs_kernel(symbols: Path, kernel: Path) -> bool:
    """Whether the symbols file lacks code or unwind tables (``.text``/``.eh_frame`` are
    NOBITS after ``objcopy --only-keep-debug``), so gdb needs the kernel's as well."""
    if kernel == symbols:
        return False
    sections = elf_sections(symbols)
    return any(sections.get(name) == SHT_NOBITS for name in (".text", ".eh_frame"))


def attach_argv(target: Target, *, batch: bool = False, gdb: str = GDB) -> list[str]:
    """gdb, its symbols loaded, attached to the target's gdbstub (scripts come after)."""
    argv = [gdb, "-q"]
    if batch:
        argv.append("-batch")
    # -nx and no auto-load: nothing but what the user (or umonitor) names runs in gdb,
    # not a .gdbinit beside a symbols file that root did not write.
    argv += ["-nx", "-iex", "set auto-load off", "-ex", "set pagination off"]
    for path in (target.symbols, target.kernel, target.socket):
        if path is not None and any(c.isspace() for c in str(path)):
            raise UsageError(f"gdb cannot be given a path with white space: {str(path)!r}")
    # Symbols only: code and data are read from the VM, as it runs.
    argv += ["-ex", f"symbol-file {target.symbols or target.kernel}"]
    if target.symbols is not None and needs_kernel(target.symbols, target.kernel):
        argv += ["-ex", f"add-symbol-file {target.kernel} -o 0"]
    return [*argv, "-ex", f"target remote {target.socket}"]


def batch_argv(target: Target, *, gdb: str = GDB) -> list[str]:
    """gdb in batch mode running ``BATCH_SCRIPT`` (the user's script is in SCRIPT_ENV)."""
    return [*attach_argv(target, batch=True, gdb=gdb), "-x", str(BATCH_SCRIPT)]


def describe(target: Target, argv: list[str]) -> str:
    """What ``umonitor debug --print-command`` prints: the command, and for an IDE the
    facts its remote-debugging form asks for."""
    program = target.symbols or target.kernel
    return "\n".join(
        [
            shlex.join(argv),
            "",
            f"# An IDE's remote gdb session for {target.name}:",
            f"#   program (symbols):  {program}",
            f"#   target:             target remote {target.socket}",
            "#   architecture:       i386:x86-64",
            "# Quit or detach leaves the guest running; 'kill' would end its QEMU.",
        ]
    )
