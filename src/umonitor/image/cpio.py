"""A deterministic writer for the cpio "newc" format, the Linux initramfs format.

How this works: an archive is a sequence of members, each a 110-byte ASCII header,
the member's path (NUL-terminated, padded with NULs to a multiple of 4 bytes counted
from the start of the header), then the member's data (a file's bytes, a symlink's
target) padded to a multiple of 4 bytes; a member named ``TRAILER!!!`` ends it. The
writer sorts members by path, adds any missing parent directories, numbers inodes
from 1 in that order and sets every mtime, uid and gid to fixed values, so the same
members always give the same bytes. ``gzip_newc`` compresses with a zero gzip
timestamp for the same reason; Linux unpacks gzip-compressed initramfs archives when
built with CONFIG_RD_GZIP (Debian's kernels are).

The format is described in the Linux source, Documentation/driver-api/early-userspace/
buffer-format.rst, and in cpio(5).
"""

from __future__ import annotations

import gzip
import posixpath
import stat
from collections.abc import Iterable
from dataclasses import dataclass

# One member header: the magic, then 13 fields of 8 upper-case hex digits each.
#
#   0       6       14      22      30      38      46      54      62
#   +-------+-------+-------+-------+-------+-------+-------+-------+----
#   |070701 | ino   | mode  | uid   | gid   | nlink | mtime | size  | ...
#   +-------+-------+-------+-------+-------+-------+-------+-------+----
#      62      70      78      86      94      102     110
#   ---+-------+-------+-------+-------+-------+-------+
#      |devmaj |devmin |rdevmaj|rdevmin|namesz | check |
#   ---+-------+-------+-------+-------+-------+-------+
#
# namesize counts the terminating NUL; check is 0 for "070701" archives.
MAGIC = b"070701"
HEADER_SIZE = 110
TRAILER = "TRAILER!!!"
_FIELD_MAX = 0xFFFFFFFF
_FIELDS = 13

DEFAULT_MTIME = 0


@dataclass(frozen=True, slots=True)
class Member:
    """One archive member: its path (relative, ``/``-separated), full st_mode and data.

    ``data`` is a regular file's content or a symlink's target; ``rdev`` is the
    (major, minor) number of a device node.
    """

    path: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def directory(path: str, mode: int = 0o755) -> Member:
    """A directory member."""
    return Member(path, stat.S_IFDIR | (mode & 0o7777))


def regular(path: str, data: bytes, mode: int = 0o644) -> Member:
    """A regular file member holding ``data``."""
    return Member(path, stat.S_IFREG | (mode & 0o7777), bytes(data))


def symlink(path: str, target: str) -> Member:
    """A symbolic link member pointing at ``target``."""
    return Member(path, stat.S_IFLNK | 0o777, target.encode())


def char_device(path: str, major: int, minor: int, mode: int = 0o600) -> Member:
    """A character device node member (e.g. ``dev/console``, 5 1)."""
    return Member(path, stat.S_IFCHR | (mode & 0o7777), rdev=(major, minor))


_KINDS = (stat.S_IFDIR, stat.S_IFREG, stat.S_IFLNK, stat.S_IFCHR, stat.S_IFBLK)


def normalize_path(path: str) -> str:
    """``path`` as stored in the archive: relative, no ``.`` or empty parts.

    A leading ``/`` is dropped (the initramfs root is the archive root). A path that
    climbs out with ``..`` or names the root itself is a ValueError.
    """
    clean = posixpath.normpath("/" + path).lstrip("/")
    if not clean or clean == "." or ".." in path.split("/") or "\0" in path:
        raise ValueError(f"bad archive path {path!r}")
    return clean


def _check(member: Member) -> None:
    kind = stat.S_IFMT(member.mode)
    if kind not in _KINDS:
        raise ValueError(f"{member.path}: unsupported file type {kind:#o}")
    if kind not in (stat.S_IFREG, stat.S_IFLNK) and member.data:
        raise ValueError(f"{member.path}: only regular files and symlinks carry data")
    if kind == stat.S_IFLNK and not member.data:
        raise ValueError(f"{member.path}: a symlink needs a target")
    if len(member.data) > _FIELD_MAX:
        raise ValueError(f"{member.path}: larger than 4 GiB, too big for newc")
    if any(not 0 <= n <= _FIELD_MAX for n in member.rdev):
        raise ValueError(f"{member.path}: device number out of range")


def _pad4(length: int) -> bytes:
    return b"\0" * (-length % 4)


def _header(
    ino: int, mode: int, nlink: int, mtime: int, size: int, rdev: tuple[int, int], namesize: int
) -> bytes:
    fields = (ino, mode, 0, 0, nlink, mtime, size, 0, 0, rdev[0], rdev[1], namesize, 0)
    text = MAGIC + b"".join(b"%08X" % value for value in fields)
    assert len(fields) == _FIELDS and len(text) == HEADER_SIZE
    return text


def _record(
    name: str, ino: int, mode: int, nlink: int, mtime: int, data: bytes, rdev: tuple[int, int]
) -> bytes:
    encoded = name.encode() + b"\0"
    head = _header(ino, mode, nlink, mtime, len(data), rdev, len(encoded))
    return head + encoded + _pad4(HEADER_SIZE + len(encoded)) + data + _pad4(len(data))


def newc(members: Iterable[Member], *, mtime: int = DEFAULT_MTIME) -> bytes:
    """The newc archive of ``members``: sorted by path, parents added, trailer last.

    Missing parent directories are added with mode 0755. Two members with the same
    path, or a path below something that is not a directory, is a ValueError.
    """
    if not 0 <= mtime <= _FIELD_MAX:
        raise ValueError(f"mtime {mtime} out of range")
    by_path: dict[str, Member] = {}
    for member in members:
        path = normalize_path(member.path)
        _check(member)
        if path in by_path:
            raise ValueError(f"{path}: listed twice")
        by_path[path] = Member(path, member.mode, member.data, member.rdev)
    for path in list(by_path):
        parent = posixpath.dirname(path)
        while parent:
            existing = by_path.get(parent)
            if existing is None:
                by_path[parent] = directory(parent)
            elif not stat.S_ISDIR(existing.mode):
                raise ValueError(f"{path}: parent {parent} is not a directory")
            parent = posixpath.dirname(parent)

    out = bytearray()
    for ino, path in enumerate(sorted(by_path), start=1):
        member = by_path[path]
        nlink = 2 if stat.S_ISDIR(member.mode) else 1
        out += _record(path, ino, member.mode, nlink, mtime, member.data, member.rdev)
    out += _record(TRAILER, 0, 0, 1, 0, b"", (0, 0))
    return bytes(out)


def gzip_newc(members: Iterable[Member], *, mtime: int = DEFAULT_MTIME, level: int = 9) -> bytes:
    """``newc(members)`` compressed with gzip, deterministically (no gzip timestamp)."""
    return gzip.compress(newc(members, mtime=mtime), compresslevel=level, mtime=0)
