"""The gdb command lines of ``umonitor debug`` and the crash capture (debug/gdb.py)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from umonitor.debug.crash_state import CAPTURE_SCRIPT, gdb_command
from umonitor.debug.gdb import BATCH_SCRIPT, Target, attach_argv, batch_argv, describe
from umonitor.errors import UsageError


def target(tmp_path: Path, symbols: Path | None) -> Target:
    return Target("uk", tmp_path / "run" / "gdb.sock", symbols, tmp_path / "uk.kernel")


def test_attach_loads_symbols_then_attaches(tmp_path: Path) -> None:
    kernel = tmp_path / "uk.kernel"
    kernel.write_bytes(b"\x7fELF")  # the symbols are the kernel: nothing else to load
    argv = attach_argv(Target("uk", tmp_path / "gdb.sock", kernel, kernel))
    assert argv[:2] == ["gdb", "-q"] and "-batch" not in argv
    # nothing runs in gdb but what is named: no .gdbinit, no auto-loaded scripts
    assert "-nx" in argv and argv[argv.index("-iex") + 1] == "set auto-load off"
    exs = [argv[i + 1] for i, a in enumerate(argv) if a == "-ex"]
    assert exs == ["set pagination off", f"symbol-file {kernel}",
                   f"target remote {tmp_path / 'gdb.sock'}"]  # fmt: skip


def test_without_symbols_gdb_gets_the_kernel(tmp_path: Path) -> None:
    argv = attach_argv(target(tmp_path, None))
    assert f"symbol-file {tmp_path / 'uk.kernel'}" in argv


def test_batch_runs_the_wrapper_and_the_capture_its_script(tmp_path: Path) -> None:
    kernel = tmp_path / "uk.kernel"
    kernel.write_bytes(b"\x7fELF")
    t = Target("uk", tmp_path / "gdb.sock", kernel, kernel)
    argv = batch_argv(t)
    assert argv[2] == "-batch" and argv[-2:] == ["-x", str(BATCH_SCRIPT)]
    assert BATCH_SCRIPT.is_file()
    capture = gdb_command(kernel, tmp_path / "gdb.sock", None)
    assert capture[:-2] == argv[:-2] and capture[-2:] == ["-x", str(CAPTURE_SCRIPT)]


def test_paths_gdb_would_split_are_refused(tmp_path: Path) -> None:
    spaced = tmp_path / "my kernels" / "uk.dbg"
    with pytest.raises(UsageError, match="white space"):
        attach_argv(Target("uk", tmp_path / "gdb.sock", spaced, spaced))


def test_print_command_is_the_command_and_the_ide_facts(tmp_path: Path) -> None:
    t = target(tmp_path, None)
    text = describe(t, attach_argv(t))
    first, *rest = text.splitlines()
    assert shlex.split(first) == attach_argv(t)
    assert f"target remote {t.socket}" in text and "i386:x86-64" in text
    assert any(str(t.kernel) in line for line in rest)
