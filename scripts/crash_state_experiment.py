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

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CAPTURE = ROOT / "src" / "umonitor" / "debug" / "gdb_capture.py"
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
        # gdb: the .dbg for DWARF; rumprun's is --only-keep-debug (its .text and
        # .eh_frame are NOBITS), so the stripped kernel is added for its CFI: gdb looks
        # for an FDE in every objfile.
        gdb = ["gdb", "-q", "-batch", "-nx", "-ex", "set pagination off",
               "-ex", f"symbol-file {symbols}"]  # fmt: skip
        if kind in ("rumprun", "nanos"):
            gdb += ["-ex", f"add-symbol-file {kernel} -o 0"]
        env = dict(os.environ)
        if kind == "nanos":  # "   rip: 0000000000401b9e" in the console's thread context
            text = console.read_text(errors="replace")
            regs = dict(re.findall(r"^\s*(r[a-z0-9]{1,2}): ([0-9a-f]{16})\r?$", text, re.M))
            env["UMON_CRASH_REGISTERS"] = json.dumps({k: int(v, 16) for k, v in regs.items()})
        gdb += ["-ex", f"target remote {gdb_sock}", "-x", str(CAPTURE)]
        done = subprocess.run(gdb, capture_output=True, text=True, timeout=30, env=env)
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
        f"QMP status then: {status.get('return')}"
    )
    print(f"gdb attach + capture: {took:.2f} s")
    for line in done.stdout.splitlines():
        if line.startswith("UMON-CRASH-STATE "):
            state = json.loads(line.split(" ", 1)[1])
            regs = state["registers"]
            print("registers:", " ".join(f"{k}={v:#x}" for k, v in regs.items()))
            if "clobbered" in state:
                print(
                    "trap frame:",
                    {k: hex(v) if isinstance(v, int) else v for k, v in state["trap"].items()},
                )
                print("clobbered by the handler:", " ".join(state["clobbered"]))
            for n, f in enumerate(state["frames"]):
                where = f"{f.get('file')}:{f.get('line')}" if f.get("file") else "??"
                tag = " [inlined]" if f.get("inlined") else " [trap]" if f.get("trap") else ""
                print(f"  #{n} {f['pc']:#x} {f['function']} {where}{tag}")
            return 0
    print("gdb printed no state:\n", done.stdout[-2000:], done.stderr[-2000:])
    return 1


if __name__ == "__main__":
    os.environ.setdefault("LC_ALL", "C")
    sys.exit(main(sys.argv[1], Path(sys.argv[2])))
