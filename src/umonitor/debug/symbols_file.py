"""Which file holds an instance's symbols, and what an ELF file's sections are.

The rule (docs/debugging.md, "Which symbols"): the ``symbols`` key when the instance
has one; otherwise the kernel itself when it carries DWARF (``.debug_info``); otherwise
the first existing file of ``KERNEL.dbg`` (Unikraft's ``NAME_qemu-x86_64.dbg``, a
Nanos program's ``PROGRAM.dbg``) and ``KERNEL`` with its suffix replaced by ``.dbg``
(rumprun's ``NAME.bin`` -> ``NAME.dbg``, the test guests' ``crash.kernel`` ->
``crash.dbg``); otherwise none, and a crash is symbolized by nobody.

Section headers are read with ``struct`` and bounded: the files are the user's, and a
file that is not a 64-bit little-endian ELF simply has no sections here.
"""

from __future__ import annotations

import contextlib
import struct
from pathlib import Path

SHT_NOBITS = 8
ELF_MAGIC = b"\x7fELF"
_HEAD = struct.Struct("<16sHHIQQQIHHHHHH")  # Elf64_Ehdr
# Elf64_Shdr: name, type, flags, addr, offset, size, link, info, addralign, entsize
_SECTION = struct.Struct("<IIQQQQIIQQ")
MAX_SECTIONS = 4096
MAX_NAMES = 1 << 20


def is_elf(path: Path) -> bool:
    """Whether ``path`` starts like an ELF file (any class)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == ELF_MAGIC
    except OSError:
        return False


def elf_sections(path: Path) -> dict[str, int]:
    """Section name -> section type of a 64-bit little-endian ELF file ({} otherwise)."""
    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD.size)
            if len(head) < _HEAD.size or head[:6] != b"\x7fELF\x02\x01":
                return {}
            fields = _HEAD.unpack(head)
            shoff, shentsize, shnum, shstrndx = fields[6], fields[11], fields[12], fields[13]
            if shentsize != _SECTION.size or shnum > MAX_SECTIONS or shstrndx >= shnum:
                return {}
            f.seek(shoff)
            table = f.read(_SECTION.size * shnum)
            if len(table) < _SECTION.size * shnum:
                return {}
            sections = [_SECTION.unpack_from(table, i * _SECTION.size) for i in range(shnum)]
            names_at, names_size = sections[shstrndx][4], sections[shstrndx][5]
            f.seek(names_at)
            names = f.read(min(names_size, MAX_NAMES))
    except (OSError, ValueError):  # ValueError: a negative seek
        return {}
    out: dict[str, int] = {}
    for sh_name, sh_type, *_ in sections:
        if sh_name >= len(names):
            continue
        end = names.find(b"\0", sh_name)
        name = names[sh_name : end if end >= 0 else len(names)]
        out.setdefault(name.decode("latin-1"), sh_type)
    return out


def has_dwarf(path: Path) -> bool:
    """Whether an ELF file carries DWARF line and function information of its own."""
    return elf_sections(path).get(".debug_info", SHT_NOBITS) != SHT_NOBITS


def default_symbols(kernel: Path) -> Path | None:
    """The symbols file of ``kernel`` by the rule above, or None."""
    if has_dwarf(kernel):
        return kernel
    for candidate in (kernel.with_name(kernel.name + ".dbg"), kernel.with_suffix(".dbg")):
        with contextlib.suppress(OSError, ValueError):  # a name too long, a bad name
            if candidate != kernel and candidate.is_file():
                return candidate
    return None


def symbols_for(kernel: Path, configured: Path | None) -> Path | None:
    """The instance's symbols: the configured file, else the default rule's."""
    return configured if configured is not None else default_symbols(kernel)
