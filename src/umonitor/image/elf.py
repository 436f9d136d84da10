"""ELF64 files read from untrusted bytes: a kernel module's ``.modinfo``, a PVH entry note.

Both readers take the whole file as bytes and raise only ValueError, whatever the
bytes: the kernel package's files are what apt downloaded, not ours.
"""

from __future__ import annotations

import struct

# ELF64 little-endian file header (64 bytes); only the program- and section-table
# fields are used.
#   0 e_ident[16]  16 type u16  18 machine u16  20 version u32  24 entry u64
#  32 phoff u64    40 shoff u64 48 flags u32    52 ehsize u16   54 phentsize u16
#  56 phnum u16    58 shentsize u16  60 shnum u16  62 shstrndx u16
_ELF_HEADER = struct.Struct("<16sHHIQQQIHHHHHH")
# ELF64 section header (64 bytes):
#   0 name u32  4 type u32  8 flags u64  16 addr u64  24 offset u64  32 size u64
#  40 link u32 44 info u32 48 addralign u64  56 entsize u64
_SECTION_HEADER = struct.Struct("<IIQQQQIIQQ")
_ELF_MAGIC = b"\x7fELF\x02\x01"  # 64-bit, little-endian
# ELF64 program header (56 bytes):
#   0 type u32  4 flags u32  8 offset u64  16 vaddr u64  24 paddr u64  32 filesz u64
#  40 memsz u64  48 align u64
_PROGRAM_HEADER = struct.Struct("<IIQQQQQQ")
_PT_NOTE = 4
# One ELF note: namesz u32, descsz u32, type u32, then name and desc, each padded to 4.
_NOTE_HEADER = struct.Struct("<III")
_XEN_ELFNOTE_PHYS32_ENTRY = 18


def read_modinfo_untrusted(elf: bytes) -> dict[str, str]:
    """The ``key=value`` strings of a module's ``.modinfo`` section (first value wins).

    Raises only ValueError, whatever the bytes.
    """
    if len(elf) < _ELF_HEADER.size or not elf.startswith(_ELF_MAGIC):
        raise ValueError("not a 64-bit little-endian ELF file")
    fields = _ELF_HEADER.unpack_from(elf)
    shoff, shentsize, shnum, shstrndx = fields[6], fields[11], fields[12], fields[13]
    if shentsize != _SECTION_HEADER.size or shstrndx >= shnum:
        raise ValueError("bad ELF section table")
    if shoff + shnum * shentsize > len(elf):
        raise ValueError("ELF section table beyond the end of the file")

    def section(i: int) -> tuple[int, bytes]:
        name, _type, _flags, _addr, offset, size = _SECTION_HEADER.unpack_from(
            elf, shoff + i * shentsize
        )[:6]
        if offset + size > len(elf):
            raise ValueError(f"ELF section {i} beyond the end of the file")
        return name, elf[offset : offset + size]

    _, names = section(shstrndx)
    for i in range(shnum):
        name_offset, body = section(i)
        if name_offset >= len(names):
            raise ValueError("bad ELF section name")
        end = names.find(b"\0", name_offset)
        if names[name_offset : end if end >= 0 else len(names)] != b".modinfo":
            continue
        info: dict[str, str] = {}
        for entry in body.split(b"\0"):
            key, sep, value = entry.partition(b"=")
            if sep:
                info.setdefault(key.decode("utf-8", "replace"), value.decode("utf-8", "replace"))
        return info
    raise ValueError("no .modinfo section (not a kernel module)")


def has_pvh_note_untrusted(elf: bytes) -> bool:
    """Whether the ELF kernel ``elf`` has a PVH entry note (Xen's PHYS32_ENTRY).

    Raises only ValueError, whatever the bytes.
    """
    if len(elf) < _ELF_HEADER.size or not elf.startswith(_ELF_MAGIC):
        raise ValueError("payload is not a 64-bit little-endian ELF file")
    fields = _ELF_HEADER.unpack_from(elf)
    phoff, phentsize, phnum = fields[5], fields[9], fields[10]
    if phentsize != _PROGRAM_HEADER.size or phoff + phnum * phentsize > len(elf):
        raise ValueError("bad ELF program header table")
    for i in range(phnum):
        p_type, _, offset, _, _, filesz = _PROGRAM_HEADER.unpack_from(elf, phoff + i * phentsize)[
            :6
        ]
        if p_type != _PT_NOTE:
            continue
        if offset + filesz > len(elf):
            raise ValueError("ELF note segment beyond the end of the file")
        at, end = offset, offset + filesz
        while at + _NOTE_HEADER.size <= end:
            namesz, descsz, n_type = _NOTE_HEADER.unpack_from(elf, at)
            name = elf[at + 12 : at + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and n_type == _XEN_ELFNOTE_PHYS32_ENTRY:
                return True
            at += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False
