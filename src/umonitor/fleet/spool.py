"""Where QEMU writes a guest's console before umonitor has looked at it.

How this works: QEMU's console chardev appends every byte the guest writes to a
spool file, whether or not umonitor is running, so nothing is lost while a fleet
restarts. The spool lives outside the data directory, in a root-only runtime
directory (``/run/umonitor`` for root, else ``$XDG_RUNTIME_DIR``), because it holds
the console as the guest printed it, secrets included (Linux and Unikraft print their
command line, with the instance's token). The supervisor reads it, redacts it, and
only then stores it (``console.raw`` and ``console.log`` in the data directory).

Read bytes are given back to the file system by punching a hole (the file keeps its
size, so QEMU's appends and the saved offsets stay valid), so a chatty console costs
no memory on tmpfs once read.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import os
from pathlib import Path

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_PUNCH_EVERY = 1 << 20
READ_MAX = 1 << 20


def runtime_dir() -> Path:
    """``$UMONITOR_RUNTIME_DIR``, else /run/umonitor (root), else the user's runtime dir."""
    env = os.environ.get("UMONITOR_RUNTIME_DIR")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/run/umonitor")
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    return Path(xdg) / "umonitor" if xdg else Path(f"/tmp/umonitor-{os.getuid()}")


def spool_path(root: Path, name: str) -> Path:
    """The spool of instance ``name`` of the data directory ``root`` (directory made 0700)."""
    key = hashlib.blake2s(str(root.resolve()).encode(), digest_size=8).hexdigest()
    directory = runtime_dir() / key
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory.parent, 0o700)
    os.chmod(directory, 0o700)
    return directory / f"{name}.console"


def read(path: Path, offset: int, limit: int = READ_MAX) -> bytes:
    """Up to ``limit`` bytes of the spool from ``offset`` (nothing if it is not there)."""
    try:
        with open(path, "rb") as src:
            src.seek(offset)
            return src.read(limit)
    except FileNotFoundError:
        return b""


def release(path: Path, done: int, released: int) -> int:
    """Free the spool's bytes before ``done`` once a MiB is read; returns what is freed."""
    upto = done - done % 4096
    if upto - released < _PUNCH_EVERY:
        return released
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError:
        return released
    try:
        if _fallocate(fd, _FALLOC_FL_KEEP_SIZE | _FALLOC_FL_PUNCH_HOLE, 0, upto) != 0:
            return released
    finally:
        os.close(fd)
    return upto


def _fallocate(fd: int, mode: int, offset: int, length: int) -> int:
    libc = _libc()
    if libc is None:
        return -1
    result: int = libc.fallocate(
        ctypes.c_int(fd), ctypes.c_int(mode), ctypes.c_int64(offset), ctypes.c_int64(length)
    )
    return result


_LIBC: list[ctypes.CDLL | None] = []


def _libc() -> ctypes.CDLL | None:
    if not _LIBC:
        name = ctypes.util.find_library("c")
        try:
            _LIBC.append(ctypes.CDLL(name, use_errno=True) if name else None)
        except OSError:
            _LIBC.append(None)
    return _LIBC[0]
