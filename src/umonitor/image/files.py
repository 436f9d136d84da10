"""Files the image builder writes, each put in place whole or not at all.

Concurrent builds into the same directory, and an interrupted one, never leave a
half-written file at a final name: content goes to a scratch name next to it first.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def install(source: Path, target: Path) -> None:
    """Put ``source``'s content at ``target``: a hard link when possible, else a copy."""
    tmp = _scratch_name(target)
    try:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Put ``data`` at ``path`` with ``mode``: the whole of it, or nothing new."""
    tmp = _scratch_name(path)
    try:
        tmp.write_bytes(data)
        tmp.chmod(mode)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _scratch_name(path: Path) -> Path:
    """A name next to ``path`` that no concurrent writer uses."""
    return path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
