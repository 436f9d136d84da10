#!/usr/bin/env python3
"""Experiment: read a crashed guest's registers and backtrace through QEMU's gdbstub.

    python3 scripts/crash_state_experiment.py rumprun DIR   # DIR/crash.bin, crash.dbg
    python3 scripts/crash_state_experiment.py unikraft DIR  # DIR/crash.kernel, crash.dbg
    python3 scripts/crash_state_experiment.py nanos DIR     # DIR/crash, crash.dbg, mkfs, ...

Boots the crash guest once under TCG with a gdbstub on a unix socket, ``-no-shutdown``
and QMP; waits for the crash (rumprun: the ``FATAL TRAP`` line, after which the CPU
halts with QEMU running; Unikraft and Nanos: their power-off, which ``-no-shutdown``
turns into a pause; for Nanos the faulting thread's registers are read off the console
and handed to gdb), stops the VM over QMP, runs gdb in batch mode with
``src/umonitor/debug/gdb_capture.py``, prints the crash state it read and the time each
step took, and quits QEMU. At most one QEMU, ended within 60 s whatever happens.
It is the prototype of what the supervisor will do before it tears a crashed VM down
(docs/debugging.md); nothing here is part of the package.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from umonitor.debug.crash_state import capture, from_console  # noqa: E402
from umonitor.debug.symbolize import Symbolizer  # noqa: E402
from umonitor.protocol.console_lines import ConsoleDecoder  # noqa: E402
from umonitor.protocol.crash_dump import crash_dump_untrusted  # noqa: E402

LIMIT = 60.0


def qmp(path: Path) -> tuple[socket.socket, object]:
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(str(path))
    stream = sock.makefile("rwb")
    stream.readline()
    command(stream, "qmp_capabilities")
    return sock, stream


def command(stream: object, name: str) -> dict[str, object]:
    stream.write(json.dumps({"execute": name}).encode() + b"\n")  # type: ignore[attr-defined]
    stream.flush()  # type: ignore[attr-defined]
    while True:
        reply = json.loads(stream.readline())  # type: ignore[attr-defined]
        if "event" not in reply:
            return reply  # type: ignore[no-any-return]


def main(kind: str, out: Path) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="umon-crash-"))
    gdb_sock, qmp_sock, console = tmp / "gdb.sock", tmp / "qmp.sock", tmp / "console"
    machine = ["-machine", "pc", "-accel", "tcg", "-nodefaults", "-display", "none",
               "-no-reboot", "-no-shutdown", "-serial", f"file:{console}",
               "-qmp", f"unix:{qmp_sock},server=on,wait=off",
               "-gdb", f"unix:{gdb_sock},server=on,wait=off"]  # fmt: skip
    if kind == "rumprun":
        config = tmp / "config.json"
        config.write_text('{"rc":[{"bin":"app","argv":["umon.count=2","umon.rate=10"]}]}')
        kernel, symbols = out / "crash.bin", out / "crash.dbg"
        argv = ["qemu-system-x86_64", *machine, "-m", "128", "-kernel", str(kernel),
                "-initrd", str(config)]  # fmt: skip
        crashed = b"FATAL TRAP"
    elif kind == "nanos":
        kernel, symbols = out / "crash", out / "crash.dbg"
        image = tmp / "nanos.img"
        manifest = (
            f"(children:(app:(contents:(host:{kernel}))) program:/app "
            "arguments:[app umon.count=2 umon.rate=10] environment:(IMAGE_NAME:crash))"
        )
        subprocess.run([str(out / "mkfs"), "-b", str(out / "boot.img"), "-k",
                        str(out / "kernel.img"), str(image)], input=manifest.encode(),
                       check=True, capture_output=True)  # fmt: skip
        argv = ["qemu-system-x86_64", *machine, "-m", "256",
                "-drive", f"file={image},format=raw,if=virtio"]  # fmt: skip
        crashed = b"core dump"
    else:
        kernel, symbols = out / "crash.kernel", out / "crash.dbg"
        argv = [
            "qemu-system-x86_64",
            *machine,
            "-m",
            "64",
            "-kernel",
            str(kernel),
            "-append",
            "netdev.ip=10.0.2.15/24:10.0.2.2 -- umon.count=2 umon.rate=10",
        ]
        crashed = b"Unikraft halted"
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    try:
        while not qmp_sock.exists():
            time.sleep(0.01)
        sock, stream = qmp(qmp_sock)
        while crashed not in (console.read_bytes() if console.exists() else b""):
            if time.monotonic() - started > LIMIT - 15 or proc.poll() is not None:
                print("no crash seen", file=sys.stderr)
                return 1
            time.sleep(0.05)
        seen = time.monotonic()
        status = command(stream, "query-status")
        command(stream, "stop")
        decoder = ConsoleDecoder()
        decoder.receive_data(console.read_bytes())
        lines = [r.message for r in decoder.next_events() + decoder.end_of_stream()]
        dump = crash_dump_untrusted(lines)
        registers = None
        if kind == "nanos" and dump is not None:  # the thread context, from the console
            registers = {k: v for k, v in dump.registers if k not in ("cs", "ss", "eflags")}
        state = asyncio.run(capture(symbols, gdb_sock, kernel, registers=registers))
        took = time.monotonic() - seen
        command(stream, "quit")
        sock.close()
    finally:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
    print(
        f"crash seen on the console {seen - started:.2f} s after QEMU started; "
        f"QMP status then: {status.get('return', {}).get('status')}"
    )
    print(f"gdb attach + capture: {took:.2f} s")
    if dump is not None:
        from_dump = from_console(dump, Symbolizer(symbols))
        print("from the console alone:", [
            f"{f.function} {Path(f.file or '?').name}:{f.line}" for f in from_dump.backtrace
        ])  # fmt: skip
    print(json.dumps(state.to_report(), indent=1))
    return 0 if state.backtrace and not state.errors else 1


if __name__ == "__main__":
    os.environ.setdefault("LC_ALL", "C")
    sys.exit(main(sys.argv[1], Path(sys.argv[2])))
