"""The crash state read through QEMU's gdbstub from real crashed guests (docs/debugging.md).

Each kind's crash app (``main`` → ``crash`` → ``write_through_null``, a NULL write) boots
under TCG with a gdbstub on a unix socket, ``-no-shutdown`` and QMP, without a network:
rumprun halts its CPU after ``FATAL TRAP``, Unikraft and Nanos power off and
``-no-shutdown`` holds the VM. Then ``crash_state.capture`` runs gdb with the guest's
symbols (and, for Nanos, the registers its console printed) and the backtrace must name
the three functions with lines inside them in ``crash_app.c``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.unikernels import built, crash_app_lines
from umonitor.debug.crash_state import capture
from umonitor.protocol.console_lines import ConsoleDecoder
from umonitor.protocol.crash_dump import crash_dump_untrusted

ROOT = Path(__file__).resolve().parents[2]
APP_WORDS = "umon.count=2 umon.rate=10"
BOOT_SECONDS = 45.0


def _machine(kind: str, out: Path, tmp: Path) -> tuple[list[str], Path, Path, bytes]:
    """QEMU's arguments for kind's crash app, its kernel, symbols and crash marker."""
    if kind == "unikraft":
        kernel = out / "crash.kernel"
        args = ["-m", "64", "-kernel", str(kernel),
                "-append", f"netdev.ip=10.0.2.15/24:10.0.2.2 -- {APP_WORDS}"]  # fmt: skip
        return args, kernel, out / "crash.dbg", b"Unikraft halted"
    if kind == "rumprun":
        config = tmp / "config.json"
        config.write_text(json.dumps({"rc": [{"bin": "app", "argv": APP_WORDS.split()}]}))
        kernel = out / "crash.bin"
        args = ["-m", "128", "-kernel", str(kernel), "-initrd", str(config)]
        return args, kernel, out / "crash.dbg", b"FATAL TRAP"
    kernel = out / "crash"
    image = tmp / "nanos.img"
    manifest = (
        f"(children:(app:(contents:(host:{kernel}))) program:/app "
        f"arguments:[app {APP_WORDS}] environment:(IMAGE_NAME:crash))"
    )
    subprocess.run(
        [str(out / "mkfs"), "-b", str(out / "boot.img"), "-k", str(out / "kernel.img"),
         str(image)],
        input=manifest.encode(), check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    args = ["-m", "256", "-drive", f"file={image},format=raw,if=virtio"]
    return args, kernel, out / "crash.dbg", b"core dump"


def _qmp(path: Path, command: str) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        with sock.makefile("rwb") as stream:
            stream.readline()
            for name in ("qmp_capabilities", command):
                stream.write(json.dumps({"execute": name}).encode() + b"\n")
                stream.flush()
                while "event" in (reply := json.loads(stream.readline())):
                    pass
        return reply  # type: ignore[no-any-return]


@pytest.mark.parametrize("kind", ["unikraft", "rumprun", "nanos"])
def test_backtrace_of_a_crashed_guest(kind: str, tmp_path: Path) -> None:
    args, kernel, symbols, marker = _machine(kind, built(kind), tmp_path)
    gdb_sock, qmp_sock, console = tmp_path / "gdb.sock", tmp_path / "qmp.sock", tmp_path / "con"
    argv = [
        "qemu-system-x86_64", "-machine", "pc", "-accel", "tcg", "-nodefaults",
        "-display", "none", "-no-reboot", "-no-shutdown", "-serial", f"file:{console}",
        "-qmp", f"unix:{qmp_sock},server=on,wait=off",
        "-gdb", f"unix:{gdb_sock},server=on,wait=off", *args,
    ]  # fmt: skip
    err = tmp_path / "qemu.err"
    with open(err, "wb") as stderr:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + BOOT_SECONDS
        while marker not in (console.read_bytes() if console.exists() else b""):
            assert proc.poll() is None, f"QEMU ended: {err.read_text()}"
            assert time.monotonic() < deadline, console.read_bytes()[-2000:]
            time.sleep(0.05)
        time.sleep(0.2)  # the power-off (Unikraft, Nanos) follows the last line
        _qmp(qmp_sock, "stop")
        decoder = ConsoleDecoder()
        decoder.receive_data(console.read_bytes())
        dump = crash_dump_untrusted(r.message for r in decoder.next_events())
        assert dump is not None
        registers = None
        if kind == "nanos":
            registers = {k: v for k, v in dump.registers if k not in ("cs", "ss", "eflags")}
        state = asyncio.run(capture(symbols, gdb_sock, kernel, registers=registers))
        status = _qmp(qmp_sock, "query-status")["return"]["status"]
        time.sleep(0.3)
        after = console.read_bytes()
        _qmp(qmp_sock, "quit")
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # gdb's detach lets a VM stopped by QMP run again: rumprun's CPU stays halted
    # (interrupts off), so it does not fault a second time.
    assert status == ("running" if kind == "rumprun" else "shutdown")
    assert after.count(marker) == 1
    assert state.errors == () and state.source == "gdbstub"
    names = [f.function for f in state.backtrace[:3]]
    assert names == ["write_through_null", "crash", "main"], state.backtrace
    for frame in state.backtrace[:3]:
        assert frame.file is not None and Path(frame.file).name == "crash_app.c"
        assert frame.line in crash_app_lines(frame.function or ""), frame
    assert state.pc == state.backtrace[0].address == dump.pc
    report = state.to_report()
    assert report["fault"]["function"] == "write_through_null"
    assert report["registers"]["rip"] == f"{dump.pc:#x}"
    if kind == "rumprun":
        assert report["fault"]["handler"] == "x86_trap_14" and "rax" in report["registers_lost"]
    if kind == "unikraft":
        assert report["handler_frames"][-1]["function"].startswith("asm_trap")
