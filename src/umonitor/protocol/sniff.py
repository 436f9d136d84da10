"""Which dialect a connection speaks, from its first bytes (docs/protocol.md §1)."""

from __future__ import annotations

import enum

from umonitor.protocol.frame_codec import PREFACE
from umonitor.protocol.legacy import LEVEL_BYTES
from umonitor.protocol.text_lines import PREFIX_PROBE, level_prefix_untrusted


class Dialect(enum.Enum):
    NATIVE = "native"
    TEXT = "text"
    LEGACY = "legacy"


def sniff_untrusted(head: bytes | bytearray, *, final: bool = False) -> Dialect | None:
    """The dialect of a stream starting with ``head``, or None to wait for more.

    ``final`` means no more bytes are coming soon (closed, or quiet for a while), so
    a decision must be made from what there is.
    """
    if not head:
        return Dialect.TEXT if final else None
    if head[0] == PREFACE[0]:
        return Dialect.NATIVE
    line_ended = b"\n" in head[:PREFIX_PROBE] or b"\0" in head[:PREFIX_PROBE]
    if len(head) < PREFIX_PROBE and not line_ended and not final:
        return None
    if level_prefix_untrusted(head[:PREFIX_PROBE]) is not None:
        return Dialect.TEXT
    if head[0] in LEVEL_BYTES and (len(head) == 1 or not 0x61 <= head[1] <= 0x7A):
        return Dialect.LEGACY
    return Dialect.TEXT
