"""Where things live in the data directory, how to find it, and who may read it.

The data directory holds what guests said, console captures with kernel command
lines, instance tokens and exporter settings, so only its owner may enter it: it is
created mode 0700, and an existing one owned by the current user is narrowed to 0700
(see ``prepare_data_dir``). Files holding a secret are written with ``write_private``
(0600 from the first byte), so they stay private even if moved out of it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path

from umonitor.errors import UsageError
from umonitor.store.names import is_instance_name

INSTANCES = "instances"
INDEX = "index.sqlite"
STATUS = "collector.json"
APP_LOG = "app.log"
CONSOLE_LOG = "console.log"
SYSLOG_LOG = "syslog.log"
LOG_FILES = (APP_LOG, CONSOLE_LOG, SYSLOG_LOG)
STATE = "state.json"
DIR_MODE = 0o700
FILE_MODE = 0o600

log = logging.getLogger(__name__)


def default_data_dir() -> Path:
    """``$UMONITOR_DATA``, else ``$XDG_DATA_HOME/umonitor``, else ~/.local/share/umonitor."""
    env = os.environ.get("UMONITOR_DATA")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "umonitor"


def instance_dir(root: Path, name: str) -> Path:
    """The directory of instance ``name``; refuses anything but a sanitized name."""
    if not is_instance_name(name):
        raise ValueError(f"not a sanitized instance name: {name!r}")
    return root / INSTANCES / name


def prepare_data_dir(root: Path) -> Path:
    """Create the data directory if needed (mode 0700) and check it is usable.

    A data directory that already exists and is open to group or others is narrowed
    to 0700 when the current user owns it (with a warning): it holds instance tokens
    and console captures that carry them. One owned by another user is left as it is;
    its owner decides.
    """
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            root.mkdir(mode=DIR_MODE)  # the umask can only narrow it
        _narrow(root)
        (root / INSTANCES).mkdir(mode=DIR_MODE, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            f"cannot use data directory {root}: {exc.strerror}; pass --data DIR "
            "or set UMONITOR_DATA to a writable directory"
        ) from exc
    if not os.access(root, os.R_OK | os.W_OK | os.X_OK):
        raise UsageError(
            f"data directory {root} is not writable; pass --data DIR or set UMONITOR_DATA"
        )
    return root


def _narrow(root: Path) -> None:
    st = root.stat()
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(20, "not a directory", str(root))
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077 and st.st_uid == os.geteuid():
        os.chmod(root, mode & ~0o077)
        log.warning(
            "data directory %s was open to other users (mode %04o); narrowed it to %04o",
            root,
            mode,
            mode & ~0o077,
        )


def write_private(path: Path, data: str | bytes, *, fsync: bool = False) -> None:
    """Replace ``path`` atomically with ``data``, readable by its owner only (0600).

    The new content goes to a temporary file in the same directory that is created
    0600 (never widened, never chmod-ed after the content is in), then is renamed
    over ``path``: a reader sees the old file or the new one, and no moment exists in
    which the secret is in a file others may read. ``fsync`` also makes the new
    content durable before the rename. Text is written as UTF-8. OSError on failure,
    leaving ``path`` as it was.
    """
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # left by a process of the same pid that died here
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, FILE_MODE)
    try:
        try:
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view) :]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
