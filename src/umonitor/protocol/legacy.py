"""The original Umonitor format (§4): a level byte, then printf text, sans-IO.

How this works: the 2018 guest library wrote each message with one ``send`` and no
delimiter, and the 2018 host took each ``recv`` as one message. This decoder keeps
that rule and adds two delimiters: a message ends at ``\\n`` or NUL (the project's
own compat library ends every message with ``\\n``), and wherever the caller says
the peer's write ended (``end_of_write``, called after every read of the socket).
Like the 2018 host, it can therefore cut a message that arrived in more than one
read (longer than a TCP segment, or split by the sender's stack), and glue messages
that arrived in one read (sent faster than the host reads); the delimiter-free wire
format carries nothing better. A message is also cut every ``max_line`` bytes, so
the decoder never holds more than that. A first byte that is not a known level
keeps the whole text at info, so nothing a guest sends is lost.
"""

from __future__ import annotations

from umonitor.protocol.delimited import DelimitedDecoder
from umonitor.records import Kind, Record, Severity

# The 2018 levels: m(essage), w(arning), f(ailure), r(eturn).
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

    _ENDS = b"\n\0"

    def _record_untrusted(self, seq: int, piece: bytes | bytearray) -> Record:
        return legacy_record_untrusted(seq, piece)

    def end_of_write(self) -> list[Record]:
        """The peer's write ended here: the records up to now, an unended piece included.

        The caller says so after each read; the stream goes on, and the next byte
        starts a new message (with its own level byte).
        """
        return self.end_of_stream()
