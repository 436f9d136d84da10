"""QEMU command lines, and the accelerator probe.

How this works: ``qemu_command`` is pure — a ``LaunchSpec`` in, an argv out — so
every option is unit-tested. Each instance gets a run directory holding its QMP
socket, gdbstub socket, console socket, raw console capture and pid file. With
``-no-shutdown`` a guest's power-off, reset or panic pauses the VM instead of ending
QEMU, so that a crashed guest can be read through the gdbstub before the supervisor
quits it (docs/debugging.md). The console is a socket
chardev whose ``logfile`` keeps every byte the guest writes from the first one,
whether or not anyone is connected. ``probe`` tells whether an accelerator runs a
tiny guest (probe.S) that walks the path real guests take, under the very machine
arguments they get (on some hosts /dev/kvm exists but QEMU aborts on the host CPU
model, or guests crawl); fleet/accel.py decides ``auto`` from it and from how the
first real guests start.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
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
GDB_SOCKET = "gdb.sock"  # QEMU's gdbstub: the crash capture and a debugger attach here
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
    console_log: Path | None = None  # where QEMU keeps every console byte (else console.raw)
    paused: bool = False  # -S: the CPU waits at its first instruction for gdb or QMP cont


def mac_for(name: str) -> str:
    """A stable, locally administered MAC for an instance (QEMU's 52:54:00 prefix)."""
    digest = hashlib.blake2s(name.encode(), digest_size=3).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest)


def parse_memory(text: str | int) -> int:
    """MiB from ``256``, ``"256M"``, ``"1G"``, ``"512MiB"``."""
    if isinstance(text, bool) or not isinstance(text, int | str):
        raise UsageError(f"bad memory size {text!r}; use e.g. 256M or 1G")
    if isinstance(text, int):
        value = text
    else:
        raw = text.strip().upper().removesuffix("IB").removesuffix("B")
        scale = 1
        if raw.endswith("G"):
            raw, scale = raw[:-1], 1024
        elif raw.endswith("M"):
            raw = raw[:-1]
        if not (raw.isascii() and raw.isdigit()):
            raise UsageError(f"bad memory size {text!r}; use e.g. 256M or 1G")
        value = int(raw) * scale
    if not 16 <= value <= 1 << 20:
        raise UsageError(f"memory {text!r} is out of range (16M to 1T)")
    return value


def machine_args(accel: str, memory_mib: int, cpus: int) -> list[str]:
    """Machine, accelerator, CPU model, memory and CPUs: shared by guests and the probe."""
    argv = ["-machine", "pc", "-accel", accel, "-m", str(memory_mib), "-smp", str(cpus)]
    if accel == "kvm":
        argv += ["-cpu", "host"]
    return argv


def qemu_command(spec: LaunchSpec, qemu: str = QEMU) -> list[str]:
    """The argv that starts ``spec``'s guest."""
    run = spec.run_dir
    argv = [
        qemu,
        "-name", f"umonitor:{spec.name},process=umonitor-{spec.name}",
        *machine_args(spec.accel, spec.memory_mib, spec.cpus),
        "-nodefaults",
        "-no-user-config",
        "-display", "none",
        "-no-reboot",
        "-no-shutdown",  # a power-off pauses the VM: the supervisor reads it, then quits
        "-pidfile", str(run / PID_FILE),
        "-qmp", f"unix:{run / QMP_SOCKET},server=on,wait=off",
        "-gdb", f"unix:{run / GDB_SOCKET},server=on,wait=off",
        "-chardev",
        f"socket,id=console0,path={run / CONSOLE_SOCKET},server=on,wait=off,"
        f"logfile={spec.console_log or run / CONSOLE_RAW},logappend=on",
        "-serial", "chardev:console0",
    ]  # fmt: skip
    if spec.paused:
        argv.append("-S")
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


# The probe's boot sector, assembled from probe.S beside this file (the unit tests
# assemble it again and compare): real -> protected -> long mode, one write in every
# page of the dword at PROBE_TOUCH_AT, "K" on COM1, then isa-debug-exit with 1, which
# ends QEMU with status (1 << 1) | 1 = 3.
_PROBE_CODE = bytes.fromhex(
    "fa31c08ed88ed0bc007c660f0116f07c0f20c00c010f22c066ea207c0000080066b810008ed88ec0"
    "8ed0bf0010000031c0b9000c0000f3abc7050010000003200000c7050020000003300000bf003000"
    "00b8830000008907050000200083c70881ff0040000075ee0f20e083c8200f22e0b8001000000f22"
    "d8b9800000c00f320d000100000f300f20c00d000000800f22c0ea997c000018008b0c25f87d0000"
    "48c7c700002000c607014881c70010000081e90010000077ee66baf803b04bee66baf400b001eef4"
    "ebfd660f1f4400000000000000000000ffff0000009acf00ffff00000092cf00ffff0000009aaf00"
    "1f00d07c0000"
)
PROBE_TOUCH_AT = 504
PROBE_EXIT = 3
PROBE_SECONDS = 5.0  # a working accelerator answers in well under a second
PROBE_MAX_TOUCH_MIB = 64


def probe_sector(touch_mib: int = 1) -> bytes:
    """The probe's boot sector, writing one byte in each page of ``touch_mib`` MiB."""
    touch = max(1, touch_mib) << 20
    head = _PROBE_CODE + bytes(PROBE_TOUCH_AT - len(_PROBE_CODE))
    return head + touch.to_bytes(4, "little") + b"\0\0" + b"\x55\xaa"


PROBE_SECTOR = probe_sector()


def probe_touch_mib(memory_mib: int) -> int:
    """How much guest memory the probe touches: up to 64 MiB, leaving room below."""
    return max(1, min(PROBE_MAX_TOUCH_MIB, memory_mib - 8))


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """Whether an accelerator ran the probe, and if not, why (one line)."""

    works: bool
    reason: str = ""


def probe(
    accel: str,
    qemu: str = QEMU,
    *,
    memory_mib: int = 256,
    cpus: int = 1,
    timeout: float = PROBE_SECONDS,
) -> ProbeResult:
    """Boot the probe sector under ``accel`` with the machine a guest of this size gets.

    The command line is ``machine_args`` (the same machine, CPU model, memory and CPUs
    as ``qemu_command``) plus a disk and the debug-exit device, so a CPU model the host
    cannot set up (QEMU aborts on an MSR) or memory that KVM maps too slowly for any
    real guest fails here, not in the first real guest.
    """
    if accel == "kvm" and not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return ProbeResult(False, "/dev/kvm is missing or not accessible")
    with tempfile.TemporaryDirectory(prefix="umon-probe-") as tmp:
        disk = Path(tmp) / "probe.img"
        disk.write_bytes(probe_sector(probe_touch_mib(memory_mib)))
        argv = [
            qemu, *machine_args(accel, memory_mib, cpus),
            "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-drive", f"file={disk},format=raw,if=ide",
        ]  # fmt: skip
        try:
            done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return ProbeResult(False, f"a test guest did not finish within {timeout:g} s")
        except OSError as exc:
            return ProbeResult(False, f"cannot run {qemu}: {exc.strerror}")
    if done.returncode == PROBE_EXIT and b"K" in done.stdout:
        return ProbeResult(True)
    return ProbeResult(False, exit_reason(done.returncode, done.stderr.decode("utf-8", "replace")))


def exit_reason(status: int | None, stderr: str) -> str:
    """One line on why QEMU ended: its first error line, else its exit status."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "warning:" not in line]
    how = (
        f"killed by signal {signal.Signals(-status).name}"
        if status is not None and status < 0 and -status in signal.valid_signals()
        else f"exit status {status}"
    )
    return f"{(errors or lines)[0]} ({how})" if lines else how


def accel_works(accel: str, qemu: str = QEMU, timeout: float = PROBE_SECONDS) -> bool:
    """Whether the probe runs under ``accel`` (guest of 256 MiB, one CPU)."""
    return probe(accel, qemu, timeout=timeout).works


def probe_accel(requested: str = "auto", qemu: str = QEMU, *, memory_mib: int = 256) -> str:
    """``kvm`` or ``tcg`` for ``requested`` (``auto``, ``kvm`` or ``tcg``), by probing."""
    if requested == "tcg":
        return "tcg"
    if requested not in ("auto", "kvm"):
        raise UsageError(f"unknown accelerator {requested!r}; use auto, kvm or tcg")
    result = probe("kvm", qemu, memory_mib=memory_mib)
    if result.works:
        return "kvm"
    if requested == "kvm":
        raise EnvironmentProblem(kvm_refusal(result.reason))
    return "tcg"


def kvm_refusal(reason: str) -> str:
    return f"KVM does not work on this host ({reason}); use --accel tcg or --accel auto"
