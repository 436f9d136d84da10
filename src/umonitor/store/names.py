"""Instance names that are safe as directory names.

A guest asks for a name; the host decides. The result matches
``[a-z0-9][a-z0-9._-]{0,63}``: no separators, no dot-files, no NUL, no unicode
look-alikes (NFKD first, then ASCII only), lower case so that names differing only
by case map to one directory on any file system. When anything but case had to
change, a short hash of the raw name is appended, so ``../x`` and ``x`` stay apart.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

MAX_NAME = 64
_BAD = re.compile(r"[^a-z0-9._-]+")
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def _digest(raw: str) -> str:
    return hashlib.blake2s(raw.encode("utf-8", "surrogatepass"), digest_size=4).hexdigest()


def sanitize_instance_name(raw: str) -> str:
    """The directory name for instance name ``raw``; never empty, never a path."""
    folded = unicodedata.normalize("NFKD", raw).encode("ascii", "ignore").decode().lower()
    clean = _BAD.sub("-", folded).strip(".-_")
    clean = re.sub(r"-{2,}", "-", clean)
    if clean and clean == raw.lower() and len(clean) <= MAX_NAME:
        return clean
    suffix = _digest(raw)
    stem = clean[: MAX_NAME - len(suffix) - 1].rstrip(".-_")
    return f"{stem}-{suffix}" if stem else f"unnamed-{suffix}"


def is_instance_name(name: str) -> bool:
    """Whether ``name`` is already a sanitized instance name."""
    return _NAME.fullmatch(name) is not None
