"""``umonitor debug --batch``'s gdb run against a real QEMU gdbstub (debug/gdb.py).

QEMU starts halted (-S) with no guest at all: the CPU waits at the reset vector.
A script that works exits 0; one with an error exits 1 with the error named (gdb's
own batch mode would say 0, the status of its last command); either way gdb
detaches and the VM runs on: nothing here ever ends a guest.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from umonitor.debug.gdb import SCRIPT_ENV, Target, batch_argv
from umonitor.fleet.qmp import QmpClient


@pytest.fixture
def halted_qemu(tmp_path: Path) -> Iterator[Path]:
    run = tmp_path / "run"
    run.mkdir()
    proc = subprocess.Popen(
        ["qemu-system-x86_64", "-machine", "pc", "-accel", "tcg", "-m", "32", "-nodefaults",
         "-display", "none", "-S", "-qmp", f"unix:{run / 'qmp.sock'},server=on,wait=off",
         "-gdb", f"unix:{run / 'gdb.sock'},server=on,wait=off"],
        stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while not (run / "gdb.sock").exists() or not (run / "qmp.sock").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "QEMU did not start"
        time.sleep(0.05)
    try:
        yield run
    finally:
        proc.kill()
        proc.wait()


def vm_status(run: Path) -> str:
    async def ask() -> str:
        client = await QmpClient.connect(run / "qmp.sock")
        try:
            return str((await client.execute("query-status"))["status"])
        finally:
            await client.close()

    return asyncio.run(ask())


def batch(run: Path, script: Path) -> subprocess.CompletedProcess[str]:
    # No symbols: gdb gets the "kernel", here an ELF it can read (gdb's own binary
    # would do; the script does not look at symbols).
    elf = Path("/bin/true")
    target = Target("t", run / "gdb.sock", None, elf)
    env = {**os.environ, SCRIPT_ENV: str(script)}
    return subprocess.run(batch_argv(target), capture_output=True, text=True, env=env,
                          timeout=60)  # fmt: skip


def test_a_working_script_exits_0_and_the_guest_runs_on(halted_qemu: Path, tmp_path: Path) -> None:
    assert vm_status(halted_qemu) == "prelaunch"
    script = tmp_path / "ok.gdb"
    script.write_text("info registers rip\nprint 6 * 7\n")
    out = batch(halted_qemu, script)
    assert out.returncode == 0, out.stderr
    assert "rip            0xfff0" in out.stdout and "$1 = 42" in out.stdout, out.stdout
    assert "detached" in out.stdout
    assert vm_status(halted_qemu) == "running"


def test_a_failing_script_exits_1_names_the_error_and_detaches(
    halted_qemu: Path, tmp_path: Path
) -> None:
    script = tmp_path / "bad.gdb"
    script.write_text("print 1\nno_such_gdb_command\nprint 2\n")
    out = batch(halted_qemu, script)
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert "$1 = 1" in out.stdout and "$2" not in out.stdout  # the script stops there
    assert f"umonitor: {script}: " in out.stderr and "no_such_gdb_command" in out.stderr
    assert "detached" in out.stdout
    assert vm_status(halted_qemu) == "running"


def test_a_script_that_detaches_itself_is_fine(halted_qemu: Path, tmp_path: Path) -> None:
    script = tmp_path / "self.gdb"
    script.write_text("detach\n")
    out = batch(halted_qemu, script)
    assert out.returncode == 0, out.stderr
    assert vm_status(halted_qemu) == "running"
