"""The original Umonitor format (§4): a level byte, then printf text, sans-IO.

The 2018 host read one message per ``recv``; over TCP that boundary is not kept, so
here a message ends at ``\\n`` or NUL, or when the caller says the stream went quiet
(``end_of_stream``). A first byte that is not a known level keeps the whole text at
info, so nothing a guest sends is lost.
"""

from __future__ import annotations

import re

from umonitor.protocol.delimited import DelimitedDecoder
from umonitor.records import Kind, Record, Severity

LEVEL_BYTES: dict[int, tuple[Severity, Kind]] = {
    ord("m"): (Severity.INFO, Kind.LOG),
    ord("w"): (Severity.WARNING, Kind.LOG),
    ord("f"): (Severity.ERR, Kind.LOG),
    ord("r"): (Severity.NOTICE, Kind.EXIT),
}


def legacy_record_untrusted(seq: int, message: bytes | bytearray) -> Record:
    level = LEVEL_BYTES.get(message[0]) if message else None
    if level is None:
        return Record(seq, Severity.INFO, message.decode("utf-8", "replace").rstrip("\r"))
    severity, kind = level
    text = message[1:].decode("utf-8", "replace").rstrip("\r")
    return Record(seq, severity, text, kind)


class LegacyDecoder(DelimitedDecoder):
    """Turns a legacy Umonitor stream into records."""

    _END = re.compile(rb"[\n\0]")

    def _record_untrusted(self, seq: int, piece: bytes | bytearray) -> Record:
        return legacy_record_untrusted(seq, piece)
