"""Which file holds an instance's symbols: the configured one, the kernel, a .dbg beside it."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from umonitor.debug.symbols_file import (
    SHT_NOBITS,
    default_symbols,
    elf_sections,
    has_dwarf,
    load_bias,
    symbol_value,
    symbols_for,
)

SOURCE = "int main(void) { return 0; }\n"


@pytest.fixture
def programs(tmp_path: Path) -> tuple[Path, Path]:
    """A program built with DWARF, and its stripped copy."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.fail("no C compiler (setup.sh installs gcc)")
    (tmp_path / "p.c").write_text(SOURCE)
    full = tmp_path / "full"
    subprocess.run([cc, "-g", "-O0", "-o", str(full), str(tmp_path / "p.c")], check=True)
    stripped = tmp_path / "stripped"
    subprocess.run(["strip", "-o", str(stripped), str(full)], check=True)
    return full, stripped


def test_sections_of_a_real_program(programs: tuple[Path, Path]) -> None:
    full, stripped = programs
    assert ".debug_info" in elf_sections(full) and ".text" in elf_sections(full)
    assert ".debug_info" not in elf_sections(stripped)
    assert has_dwarf(full) and not has_dwarf(stripped)


def test_only_keep_debug_has_nobits_text(programs: tuple[Path, Path], tmp_path: Path) -> None:
    full, _ = programs
    dbg = tmp_path / "full.dbg"
    subprocess.run(["objcopy", "--only-keep-debug", str(full), str(dbg)], check=True)
    assert elf_sections(dbg)[".text"] == SHT_NOBITS and has_dwarf(dbg)


@pytest.mark.parametrize(
    ("kernel", "beside", "expected"),
    [
        ("app_qemu-x86_64", "app_qemu-x86_64.dbg", "app_qemu-x86_64.dbg"),  # Unikraft
        ("crash.bin", "crash.dbg", "crash.dbg"),  # rumprun
        ("crash.kernel", "crash.dbg", "crash.dbg"),  # the test guests
        ("crash", "crash.dbg", "crash.dbg"),  # a Nanos program
        ("crash.bin", "crash.bin.dbg", "crash.bin.dbg"),
        ("crash.bin", "other.dbg", None),
    ],
)
def test_default_rule_beside_a_stripped_kernel(
    programs: tuple[Path, Path], tmp_path: Path, kernel: str, beside: str, expected: str | None
) -> None:
    _, stripped = programs
    where = tmp_path / "out"
    where.mkdir()
    shutil.copy(stripped, where / kernel)
    (where / beside).write_bytes(b"\x7fELF")
    found = default_symbols(where / kernel)
    assert found == (where / expected if expected else None)


def test_a_kernel_with_dwarf_is_its_own_symbols(programs: tuple[Path, Path]) -> None:
    full, _ = programs
    full.with_name("full.dbg").write_bytes(b"\x7fELF")
    assert default_symbols(full) == full
    assert symbols_for(full, Path("/given.dbg")) == Path("/given.dbg")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x7fELF",
        b"\x7fELF\x02\x01" + bytes(58),
        b"\x7fELF\x02\x01" + bytes(34) + struct.pack("<Q", 1 << 62) + bytes(16),
        b"\x7fELF\x02\x01" + bytes(52) + struct.pack("<HHH", 64, 5000, 1),
        b"not an elf at all",
    ],
)
def test_malformed_files_have_no_sections(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "f"
    path.write_bytes(data)
    assert elf_sections(path) == {} and not has_dwarf(path)
    assert elf_sections(tmp_path / "missing") == {}


def test_default_rule_survives_names_it_cannot_look_at(tmp_path: Path) -> None:
    assert default_symbols(tmp_path / ("k" * 255)) is None  # KERNEL.dbg: name too long
    assert default_symbols(tmp_path / "missing") is None


def test_a_linux_images_program_is_its_default_symbols(
    programs: tuple[Path, Path], tmp_path: Path
) -> None:
    full, stripped = programs
    image = tmp_path / "image"
    image.mkdir()
    kernel, initrd = image / "vmlinux", image / "initrd.img"
    kernel.write_bytes(b"\x7fELF not really")
    initrd.write_bytes(b"\x1f\x8b")
    assert symbols_for(kernel, None, flavor="linux", initrd=initrd) is None  # no app yet
    shutil.copy(stripped, image / "app")
    assert symbols_for(kernel, None, flavor="linux", initrd=initrd) is None  # no DWARF
    shutil.copy(full, image / "app")
    assert symbols_for(kernel, None, flavor="linux", initrd=initrd) == image / "app"
    assert symbols_for(kernel, full, flavor="linux", initrd=initrd) == full  # configured wins
    assert symbols_for(kernel, None, flavor="unikraft", initrd=initrd) is None
    assert symbols_for(kernel, None, flavor="linux") is None  # no initrd, no program


def test_symbol_value_and_load_bias(programs: tuple[Path, Path], tmp_path: Path) -> None:
    full, stripped = programs
    nm = subprocess.run(["nm", str(full)], capture_output=True, text=True, check=True).stdout
    main = next(int(x.split()[0], 16) for x in nm.splitlines() if x.endswith(" T main"))
    assert symbol_value(full, "main") == main
    assert symbol_value(full, "mai") is None and symbol_value(full, "main2") is None
    assert symbol_value(stripped, "main") is None  # strip removes .symtab
    (tmp_path / "junk").write_bytes(b"\x7fELF\x02\x01" + b"\xff" * 200)
    assert symbol_value(tmp_path / "junk", "main") is None
    assert symbol_value(tmp_path / "missing", "main") is None
    # umon_logx is the C library's; this program has none: no bias.
    assert load_bias(full, 0x555555554000) == 0
    assert load_bias(full, None) == 0
