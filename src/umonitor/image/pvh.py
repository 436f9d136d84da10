"""The uncompressed kernel inside Debian's bzImage, for QEMU to boot through its PVH entry.

Debian's ``vmlinuz`` is an xz-compressed bzImage; under TCG its decompressor alone
takes 15-20 s. The uncompressed kernel inside it is an ELF file with a PVH entry
note (CONFIG_PVH), which QEMU boots directly with ``-kernel``, skipping both the
firmware's real-mode path and the decompression. ``pvh_kernel`` extracts it once per
kernel version into the kernel cache (or records there that it has none).
"""

from __future__ import annotations

import logging
import lzma
import struct
import zlib
from pathlib import Path

from umonitor.image.elf import has_pvh_note_untrusted
from umonitor.image.files import write_atomic

log = logging.getLogger(__name__)

# The x86 boot protocol's setup header inside a bzImage (Documentation/arch/x86/boot.rst):
#   0x1f1 setup_sects u8      0x202 "HdrS"      0x206 version u16
#   0x248 payload_offset u32 (from the protected-mode code, (setup_sects + 1) * 512)
_SETUP_SECTS = 0x1F1
_HDRS = 0x202
_BOOT_VERSION = struct.Struct("<H")  # at 0x206
_PAYLOAD_OFFSET = struct.Struct("<I")  # at 0x248
_PVH_FILE = "umonitor-vmlinux-pvh"


def pvh_kernel(kernel_root: Path, vmlinuz: Path) -> Path | None:
    """The cached uncompressed ELF kernel of ``vmlinuz``, or None if it has no PVH entry."""
    cached = kernel_root / _PVH_FILE
    none = kernel_root / (_PVH_FILE + ".none")
    if cached.is_file():
        return cached
    if none.is_file():
        return None
    try:
        elf = extract_pvh_untrusted(vmlinuz.read_bytes())
    except ValueError as exc:
        log.info("%s: no PVH kernel (%s); only vmlinuz is usable", vmlinuz, exc)
        none.write_text(f"{exc}\n")
        return None
    write_atomic(cached, elf)
    return cached


def extract_pvh_untrusted(bzimage: bytes) -> bytes:
    """The ELF kernel compressed inside ``bzimage``, provided it has a PVH entry note.

    Handles xz and gzip payloads. Raises only ValueError, whatever the bytes.
    """
    if len(bzimage) < 0x250 or bzimage[_HDRS : _HDRS + 4] != b"HdrS":
        raise ValueError("not a bzImage")
    if _BOOT_VERSION.unpack_from(bzimage, 0x206)[0] < 0x208:
        raise ValueError("boot protocol older than 2.08 (no payload fields)")
    setup_sects = bzimage[_SETUP_SECTS] or 4
    start = (setup_sects + 1) * 512 + _PAYLOAD_OFFSET.unpack_from(bzimage, 0x248)[0]
    payload = bzimage[start:]
    try:
        if payload.startswith(b"\xfd7zXZ\x00"):
            xz = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
            elf = xz.decompress(payload)
            if not xz.eof:
                raise ValueError("truncated xz payload")
        elif payload.startswith(b"\x1f\x8b"):
            inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
            elf = inflate.decompress(payload)
            if not inflate.eof:
                raise ValueError("truncated gzip payload")
        else:
            raise ValueError("payload compression not supported (xz and gzip are)")
    except (lzma.LZMAError, zlib.error) as exc:
        raise ValueError(f"cannot decompress the payload: {exc}") from None
    if not has_pvh_note_untrusted(elf):
        raise ValueError("the kernel has no PVH entry note")
    return elf
