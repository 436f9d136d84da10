"""Sizes as users write them: ``64MiB``, ``10G``, ``512KiB``, ``1.5M``, ``4096``.

K, M, G and T are powers of 1024 with or without ``i`` and ``B`` (``1G`` = ``1GiB`` =
``1GB``), since every size here is of files and buffers. One parser for the store's
rotation and quota, the exporters' backlog, the fleet config and the CLI.
"""

from __future__ import annotations

import re

_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(?:([KMGT])i?B?|B)?", re.I)
_SHIFT = {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}


def parse_size(text: str) -> int:
    """Bytes, rounded down; ValueError (one sentence) for anything else."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a size: {text!r} (say e.g. 64MiB or 10GiB)")
    return int(float(match.group(1)) * (1 << _SHIFT[(match.group(2) or "").upper()]))
