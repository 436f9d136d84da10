"""The accelerator probe: its boot sector is probe.S assembled, with the touch size
patched in; and how a QEMU failure becomes one line."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from umonitor.fleet import qemu

PROBE_S = Path(qemu.__file__).with_name("probe.S")


def test_the_embedded_sector_is_probe_s_assembled(tmp_path: Path) -> None:
    obj, binary = tmp_path / "probe.o", tmp_path / "probe.bin"
    subprocess.run(["gcc", "-c", "-x", "assembler-with-cpp", str(PROBE_S), "-o", str(obj)],
                   check=True)  # fmt: skip
    subprocess.run(["ld", "-m", "elf_x86_64", "-Ttext", "0x7c00", "--oformat", "binary",
                    str(obj), "-o", str(binary)], check=True)  # fmt: skip
    assembled = binary.read_bytes()
    sector = qemu.probe_sector(48)
    at = qemu.PROBE_TOUCH_AT
    assert len(sector) == len(assembled) == 512 and sector[-2:] == b"\x55\xaa"
    assert sector[:at] == assembled[:at] and sector[at + 4 :] == assembled[at + 4 :]
    assert int.from_bytes(sector[at : at + 4], "little") == 48 << 20


@pytest.mark.parametrize(("memory", "touch"), [(16, 8), (72, 64), (256, 64), (4096, 64)])
def test_the_probe_touches_what_the_guest_size_allows(memory: int, touch: int) -> None:
    assert qemu.probe_touch_mib(memory) == touch


@pytest.mark.parametrize(
    ("status", "stderr", "line"),
    [
        (-6, "qemu: warning: host doesn't support pni\nqemu: error: failed to set MSR 0x10a\n"
         "qemu: kvm.c:3183: Assertion failed.\n",
         "qemu: error: failed to set MSR 0x10a (killed by signal SIGABRT)"),
        (1, "", "exit status 1"),
        (1, "qemu: warning: only a warning\n", "qemu: warning: only a warning (exit status 1)"),
        (-9, "", "killed by signal SIGKILL"),
    ],
)  # fmt: skip
def test_exit_reason(status: int, stderr: str, line: str) -> None:
    assert qemu.exit_reason(status, stderr) == line


def test_machine_arguments_are_shared_by_guests_and_the_probe() -> None:
    assert qemu.machine_args("kvm", 256, 2) == [
        "-machine", "pc", "-accel", "kvm", "-m", "256", "-smp", "2", "-cpu", "host",
    ]  # fmt: skip
    assert "-cpu" not in qemu.machine_args("tcg", 256, 1)
