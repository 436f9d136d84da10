"""Plain text lines, one record each, optionally prefixed ``LEVEL: `` (§5), sans-IO."""

from __future__ import annotations

import re

from umonitor.protocol.delimited import DelimitedDecoder
from umonitor.records import SEVERITY_ALIASES, Record, Severity

DEFAULT_MAX_LINE = 65536

_PREFIX = re.compile(rb"(?i)(" + b"|".join(k.encode() for k in SEVERITY_ALIASES) + rb"):[ \t]")
# Longest prefix ("emergency: ") plus one byte: enough to tell whether one is there.
PREFIX_PROBE = 12


def level_prefix_untrusted(line: bytes | bytearray) -> tuple[Severity, int] | None:
    """The severity named at the start of ``line`` and where the text starts."""
    match = _PREFIX.match(line)
    if match is None:
        return None
    return SEVERITY_ALIASES[match.group(1).decode().lower()], match.end()


def line_record_untrusted(seq: int, line: bytes | bytearray) -> Record:
    """A record for one line without its terminator."""
    while line.endswith((b"\r", b"\0")):
        line = line[:-1]
    found = level_prefix_untrusted(line)
    if found is None:
        return Record(seq, Severity.INFO, line.decode("utf-8", "replace"))
    severity, start = found
    return Record(seq, severity, line[start:].decode("utf-8", "replace"))


class LineDecoder(DelimitedDecoder):
    """Turns a text stream into records, one per line."""

    def _record_untrusted(self, seq: int, piece: bytes | bytearray) -> Record:
        return line_record_untrusted(seq, piece)
