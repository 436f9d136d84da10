"""Plain text lines, one record each, optionally prefixed ``LEVEL: `` (§5), sans-IO.

A line longer than ``max_line`` is cut into records of that size, so the decoder
never holds more than ``max_line`` bytes. Lines are numbered from 1 per connection.
"""

from __future__ import annotations

import re

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


class LineDecoder:
    """Turns a text stream into records, one per line."""

    def __init__(self, *, max_line: int = DEFAULT_MAX_LINE) -> None:
        self._max = max_line
        self._buf = bytearray()
        self._seq = 0

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        self._buf += data

    def _next(self, line: bytes | bytearray) -> Record:
        self._seq += 1
        return line_record_untrusted(self._seq, line)

    def next_events(self) -> list[Record]:
        buf = self._buf
        out: list[Record] = []
        pos = 0
        while True:
            nl = buf.find(b"\n", pos, pos + self._max + 1)
            if nl < 0:
                if len(buf) - pos >= self._max:
                    out.append(self._next(buf[pos : pos + self._max]))
                    pos += self._max
                    continue
                break
            if nl - pos > self._max:
                out.append(self._next(buf[pos : pos + self._max]))
                pos += self._max
                continue
            chunk = buf[pos:nl]
            pos = nl + 1
            if chunk.strip(b"\r\0"):
                out.append(self._next(chunk))
        del buf[:pos]
        return out

    def end_of_stream(self) -> list[Record]:
        """Whatever is left when the peer closes: a last line with no newline."""
        out = self.next_events()
        if self._buf.strip(b"\r\0"):
            out.append(self._next(bytes(self._buf)))
        self._buf.clear()
        return out
