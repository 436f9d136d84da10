"""gdb on a running unikernel through QEMU's gdbstub (docs/debugging.md, `umonitor debug`).

The mechanism under the coming ``umonitor debug NAME --batch``: the Unikraft demo guest
starts halted (``-S``: QEMU's ``prelaunch``, the CPU at the reset vector), gdb attaches
with the guest's symbols, sets a breakpoint on an application function, continues,
hits it, prints an argument, detaches; the guest then runs to its end as usual.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from tests.unikernels import built

SCRIPT = """\
set pagination off
set confirm off
info registers rip
break steady_record
continue
print i
bt 2
delete
detach
"""
RUN_SECONDS = 45.0


def test_breakpoint_argument_and_detach(tmp_path: Path) -> None:
    out = built("unikraft")
    gdb_sock, console, script = tmp_path / "gdb.sock", tmp_path / "console", tmp_path / "s.gdb"
    script.write_text(SCRIPT)
    argv = [
        "qemu-system-x86_64", "-machine", "pc", "-accel", "tcg", "-m", "64", "-nodefaults",
        "-display", "none", "-no-reboot", "-S", "-serial", f"file:{console}",
        "-gdb", f"unix:{gdb_sock},server=on,wait=off", "-kernel", str(out / "log.kernel"),
        "-append", "netdev.ip=10.0.2.15/24:10.0.2.2 -- umon.count=8 umon.rate=20",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not gdb_sock.exists():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        gdb = subprocess.run(
            ["gdb", "-q", "-batch", "-nx", "-ex", f"symbol-file {out / 'log.dbg'}",
             "-ex", f"target remote {gdb_sock}", "-x", str(script)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert proc.wait(timeout=RUN_SECONDS) == 0  # the guest ran on after the detach
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = gdb.stdout
    assert "rip            0xfff0" in text, text  # halted at the first instruction
    assert "Breakpoint 1, steady_record (i=1)" in text and "demo_app.c" in text, text
    assert "$1 = 1" in text, text
    assert re.search(r"^#1 +(0x[0-9a-f]+ in )?main \(", text, re.M), text
    assert "detached" in text, text
    shown = console.read_text(errors="replace")
    assert "main returned 0" in shown and "Unikraft halted" in shown, shown[-2000:]
