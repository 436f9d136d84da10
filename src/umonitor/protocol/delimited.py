"""Streams cut into pieces at a terminator byte: the text, legacy and console dialects.

``LineSplitter`` is the one framing: a piece ends at a terminator byte, and a piece
longer than ``max_line`` is cut every ``max_line`` bytes, so nothing holds more than
that. It remembers how far it has looked, so a line arriving a few bytes at a time is
scanned once. ``DelimitedDecoder`` makes a record of every piece that is not blank,
numbered from 1 per connection (these dialects carry no sequence numbers); the
console (protocol/console_lines.py) makes none or several of one piece.
"""

from __future__ import annotations

import re

from umonitor.records import Record


class LineSplitter:
    """A byte stream cut at any of ``ends`` (single bytes), and every ``max_line`` bytes."""

    def __init__(self, *, max_line: int, ends: bytes = b"\n") -> None:
        if max_line < 1:
            raise ValueError("max_line must be at least 1")
        self._max = max_line
        self._end = re.compile(b"[" + re.escape(ends) + b"]")
        self._buf = bytearray()
        self._scanned = 0  # the first bytes of _buf known to hold no terminator

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        self._buf += data

    def pieces(self) -> list[bytearray]:
        """The pieces complete so far, terminators left out."""
        buf = self._buf
        out: list[bytearray] = []
        limit = self._max
        pos = 0
        scan = self._scanned
        while True:
            match = self._end.search(buf, scan, pos + limit + 1)
            if match is not None:
                out.append(buf[pos : match.start()])
                pos = scan = match.end()
            elif len(buf) - pos >= limit:
                out.append(buf[pos : pos + limit])
                pos = scan = pos + limit
            else:
                break
        del buf[:pos]
        self._scanned = len(buf)
        return out

    def rest(self) -> bytearray:
        """What is left without a terminator (the stream ended); the splitter is empty after."""
        rest, self._buf = self._buf, bytearray()
        self._scanned = 0
        return rest


class DelimitedDecoder:
    """Turns a byte stream into one record per terminated piece."""

    _ENDS = b"\n"

    def __init__(self, *, max_line: int = 65536) -> None:
        self._lines = LineSplitter(max_line=max_line, ends=self._ENDS)
        self._seq = 0

    @property
    def buffered(self) -> int:
        return self._lines.buffered

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        self._lines.receive_data(data)

    def _record_untrusted(self, seq: int, piece: bytes | bytearray) -> Record:
        raise NotImplementedError

    def _emit(self, out: list[Record], piece: bytes | bytearray) -> None:
        if piece.strip(b"\r\0"):
            self._seq += 1
            out.append(self._record_untrusted(self._seq, piece))

    def next_events(self) -> list[Record]:
        out: list[Record] = []
        for piece in self._lines.pieces():
            self._emit(out, piece)
        return out

    def end_of_stream(self) -> list[Record]:
        """Whatever is left when the peer closes or goes quiet: a last, unended piece."""
        out = self.next_events()
        self._emit(out, self._lines.rest())
        return out
