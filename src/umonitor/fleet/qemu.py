"""QEMU command lines, and the accelerator probe.

How this works: ``qemu_command`` is pure — a ``LaunchSpec`` in, an argv out — so
every option is unit-tested. Each instance gets a run directory holding its QMP
socket, console socket, raw console capture and pid file. The console is a socket
chardev whose ``logfile`` keeps every byte the guest writes from the first one,
whether or not anyone is connected. ``probe_accel`` decides ``auto``: KVM only if a
tiny real guest boots under it and exits within seconds (on some hosts /dev/kvm
exists but guests hang), else TCG.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from umonitor.errors import EnvironmentProblem, UsageError
from umonitor.fleet.flavors import BootSpec

QEMU = "qemu-system-x86_64"
CONSOLE_SOCKET = "console.sock"
CONSOLE_RAW = "console.raw"
QMP_SOCKET = "qmp.sock"
PID_FILE = "qemu.pid"


@dataclass(frozen=True, slots=True)
class LaunchSpec:
    """One QEMU process: what it boots, with what, and where its sockets live."""

    name: str
    kernel: Path
    run_dir: Path
    boot: BootSpec
    initrd: Path | None = None
    memory_mib: int = 256
    cpus: int = 1
    accel: str = "tcg"  # "kvm" or "tcg" (resolve "auto" with probe_accel first)
    tap: str | None = None
    mac: str | None = None


def mac_for(name: str) -> str:
    """A stable, locally administered MAC for an instance (QEMU's 52:54:00 prefix)."""
    digest = hashlib.blake2s(name.encode(), digest_size=3).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest)


def parse_memory(text: str | int) -> int:
    """MiB from ``256``, ``"256M"``, ``"1G"``, ``"512MiB"``."""
    if isinstance(text, int):
        value = text
    else:
        raw = text.strip().upper().removesuffix("IB").removesuffix("B")
        scale = 1
        if raw.endswith("G"):
            raw, scale = raw[:-1], 1024
        elif raw.endswith("M"):
            raw = raw[:-1]
        if not raw.isdigit():
            raise UsageError(f"bad memory size {text!r}; use e.g. 256M or 1G")
        value = int(raw) * scale
    if not 16 <= value <= 1 << 20:
        raise UsageError(f"memory {text!r} is out of range (16M to 1T)")
    return value


def qemu_command(spec: LaunchSpec, qemu: str = QEMU) -> list[str]:
    """The argv that starts ``spec``'s guest."""
    run = spec.run_dir
    argv = [
        qemu,
        "-name", f"umonitor:{spec.name},process=umonitor-{spec.name}",
        "-machine", "pc",
        "-accel", spec.accel,
        "-m", str(spec.memory_mib),
        "-smp", str(spec.cpus),
        "-nodefaults",
        "-no-user-config",
        "-display", "none",
        "-no-reboot",
        "-pidfile", str(run / PID_FILE),
        "-qmp", f"unix:{run / QMP_SOCKET},server=on,wait=off",
        "-chardev",
        f"socket,id=console0,path={run / CONSOLE_SOCKET},server=on,wait=off,"
        f"logfile={run / CONSOLE_RAW},logappend=on",
        "-serial", "chardev:console0",
    ]  # fmt: skip
    if spec.accel == "kvm":
        argv += ["-cpu", "host"]
    if spec.tap is not None:
        argv += [
            "-netdev", f"tap,id=net0,ifname={spec.tap},script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=net0,mac={spec.mac or mac_for(spec.name)}",
        ]  # fmt: skip
    boot = spec.boot
    if boot.pvpanic:
        argv += ["-device", "pvpanic"]
    if boot.disk_boot:
        argv += ["-drive", f"file={spec.kernel},format=raw,if=virtio"]
        return argv
    argv += ["-kernel", str(spec.kernel)]
    initrd = run / boot.initrd_file if boot.initrd_file else spec.initrd
    if initrd is not None:
        argv += ["-initrd", str(initrd)]
    if boot.append is not None:
        argv += ["-append", boot.append]
    return argv


def find_qemu(qemu: str = QEMU) -> str:
    path = shutil.which(qemu)
    if path is None:
        raise EnvironmentProblem(
            f"{qemu} is not installed; install it (Debian: apt-get install qemu-system-x86)"
        )
    return path


# A 512-byte boot sector, real mode: print "K" on COM1, then write 1 to the
# isa-debug-exit port 0xf4, which ends QEMU with status (1 << 1) | 1 = 3.
#   BA F8 03   mov dx, 0x3f8      B0 4B   mov al, 'K'     EE   out dx, al
#   BA F4 00   mov dx, 0xf4       B0 01   mov al, 1       EE   out dx, al
#   F4         hlt                EB FE   jmp $
_PROBE_CODE = bytes.fromhex("baf803b04beebaf400b001eef4ebfe")
PROBE_SECTOR = _PROBE_CODE + bytes(510 - len(_PROBE_CODE)) + b"\x55\xaa"
PROBE_EXIT = 3


def accel_works(accel: str, qemu: str = QEMU, timeout: float = 5.0) -> bool:
    """Whether a tiny real guest boots and exits under ``accel`` within ``timeout``."""
    if accel == "kvm" and not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    with tempfile.TemporaryDirectory(prefix="umon-probe-") as tmp:
        disk = Path(tmp) / "probe.img"
        disk.write_bytes(PROBE_SECTOR)
        argv = [
            qemu, "-accel", accel, "-machine", "pc", "-nodefaults", "-no-user-config",
            "-display", "none", "-m", "16", "-serial", "stdio",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-drive", f"file={disk},format=raw,if=ide",
        ]  # fmt: skip
        try:
            done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
        except (subprocess.TimeoutExpired, OSError):
            return False
    return done.returncode == PROBE_EXIT and b"K" in done.stdout


def probe_accel(requested: str = "auto", qemu: str = QEMU) -> str:
    """``kvm`` or ``tcg`` for ``requested`` (``auto``, ``kvm`` or ``tcg``)."""
    if requested == "tcg":
        return "tcg"
    if requested == "kvm":
        if not accel_works("kvm", qemu):
            raise EnvironmentProblem(
                "KVM does not work here (/dev/kvm missing or a test guest hung); "
                "use --accel tcg or --accel auto"
            )
        return "kvm"
    if requested != "auto":
        raise UsageError(f"unknown accelerator {requested!r}; use auto, kvm or tcg")
    return "kvm" if accel_works("kvm", qemu) else "tcg"
