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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SHT_SYMTAB = 2
SHT_NOBITS = 8
ELF_MAGIC = b"\x7fELF"
_HEAD = struct.Struct("<16sHHIQQQIHHHHHH")  # Elf64_Ehdr
# Elf64_Shdr: name, type, flags, addr, offset, size, link, info, addralign, entsize
_SECTION = struct.Struct("<IIQQQQIIQQ")
MAX_SECTIONS = 4096
MAX_NAMES = 1 << 20
MAX_SYMBOL_BYTES = 64 << 20  # of .symtab and its string table, each
_SYMBOL = struct.Struct("<IBBHQQ")  # Elf64_Sym: name, info, other, shndx, value, size


def is_elf(path: Path) -> bool:
    """Whether ``path`` starts like an ELF file (any class)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == ELF_MAGIC
    except OSError:
        return False


@dataclass(frozen=True, slots=True)
class Section:
    """One section header of an ELF64 file: what this module needs of it."""

    name: str
    type: int
    offset: int
    size: int
    link: int


def _section_table(path: Path) -> list[Section]:
    """The section headers of a 64-bit little-endian ELF file ([] otherwise)."""
    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD.size)
            if len(head) < _HEAD.size or head[:6] != b"\x7fELF\x02\x01":
                return []
            fields = _HEAD.unpack(head)
            shoff, shentsize, shnum, shstrndx = fields[6], fields[11], fields[12], fields[13]
            if shentsize != _SECTION.size or shnum > MAX_SECTIONS or shstrndx >= shnum:
                return []
            f.seek(shoff)
            table = f.read(_SECTION.size * shnum)
            if len(table) < _SECTION.size * shnum:
                return []
            sections = [_SECTION.unpack_from(table, i * _SECTION.size) for i in range(shnum)]
            names_at, names_size = sections[shstrndx][4], sections[shstrndx][5]
            f.seek(names_at)
            names = f.read(min(names_size, MAX_NAMES))
    except (OSError, ValueError):  # ValueError: a negative seek
        return []
    out: list[Section] = []
    for sh_name, sh_type, _flags, _addr, offset, size, link, *_ in sections:
        if sh_name >= len(names):
            name = ""
        else:
            end = names.find(b"\0", sh_name)
            name = names[sh_name : end if end >= 0 else len(names)].decode("latin-1")
        out.append(Section(name, sh_type, offset, size, link))
    return out


def elf_sections(path: Path) -> dict[str, int]:
    """Section name -> section type of a 64-bit little-endian ELF file ({} otherwise)."""
    out: dict[str, int] = {}
    for section in _section_table(path):
        if section.name:
            out.setdefault(section.name, section.type)
    return out


def _symbols(path: Path) -> Iterator[tuple[bytes, int, int, int]]:
    """(name, info, value, size) of each defined symbol in the file's ``.symtab``
    (none when the file has no symbol table or is not an ELF64 file)."""
    sections = _section_table(path)
    for table in sections:
        if table.type != SHT_SYMTAB or not 0 <= table.link < len(sections):
            continue
        strings = sections[table.link]
        try:
            with open(path, "rb") as f:
                f.seek(strings.offset)
                names = f.read(min(strings.size, MAX_SYMBOL_BYTES))
                f.seek(table.offset)
                symbols = f.read(min(table.size, MAX_SYMBOL_BYTES))
        except (OSError, ValueError):
            return
        for at in range(0, len(symbols) - _SYMBOL.size + 1, _SYMBOL.size):
            st_name, info, _other, shndx, value, size = _SYMBOL.unpack_from(symbols, at)
            if shndx == 0 or st_name >= len(names):
                continue
            end = names.find(b"\0", st_name)
            yield names[st_name : end if end >= 0 else len(names)], info, value, size


def symbol_value(path: Path, name: str) -> int | None:
    """The value (link-time address) of the first symbol ``name`` in the file's
    ``.symtab``, or None: no such symbol, no symbol table, not an ELF64 file."""
    wanted = name.encode("latin-1", "replace")
    return next((value for sym, _, value, _ in _symbols(path) if sym == wanted), None)


STT_FUNC = 2


def function_symbols(path: Path) -> list[tuple[str, int, int]]:
    """(name, link-time address, size) of each function with a size in ``.symtab``;
    names as linked (C++ names mangled)."""
    return [
        (sym.decode("utf-8", "replace"), value, size)
        for sym, info, value, size in _symbols(path)
        if info & 0x0F == STT_FUNC and size > 0 and sym
    ]


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


def symbols_for(
    kernel: Path, configured: Path | None, *, flavor: str = "", initrd: Path | None = None
) -> Path | None:
    """The instance's symbols: the configured file, else the default rule's.

    A Linux guest's program is not its kernel: the image builder keeps the program
    with its debug information as ``app`` beside ``initrd.img`` (image/linux.py), and
    that is the default for a Linux instance with an initrd.
    """
    if configured is not None:
        return configured
    if flavor == "linux" and initrd is not None:
        app = initrd.with_name("app")
        with contextlib.suppress(OSError, ValueError):
            if app.is_file() and has_dwarf(app):
                return app
    return default_symbols(kernel)


LOGGING_SYMBOL = "umon_logx"  # the C library's umon.text is its run-time address


def load_bias(symbols: Path, text: int | None) -> int:
    """How far a program was moved at load time: the C library's ``umon.text`` (the
    run-time address of ``umon_logx``) less that symbol's value in ``symbols``; 0 when
    either is unknown or the difference is not a plausible load bias."""
    if text is None:
        return 0
    value = symbol_value(symbols, LOGGING_SYMBOL)
    if value is None or text < value or (text - value) % 4096:
        return 0
    return text - value
