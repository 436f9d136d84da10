"""Streams cut into records at a terminator byte: the base of text and legacy.

A piece longer than ``max_line`` is cut into records of that size, so a decoder
never holds more than ``max_line`` bytes; blank pieces are skipped; pieces are
numbered from 1 per connection (these dialects carry no sequence numbers).
"""

from __future__ import annotations

import re

from umonitor.records import Record


class DelimitedDecoder:
    """Turns a byte stream into one record per terminated piece."""

    _END: re.Pattern[bytes] = re.compile(rb"\n")

    def __init__(self, *, max_line: int = 65536) -> None:
        self._max = max_line
        self._buf = bytearray()
        self._seq = 0

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        self._buf += data

    def _record_untrusted(self, seq: int, piece: bytes | bytearray) -> Record:
        raise NotImplementedError

    def _emit(self, out: list[Record], piece: bytes | bytearray) -> None:
        if piece.strip(b"\r\0"):
            self._seq += 1
            out.append(self._record_untrusted(self._seq, piece))

    def next_events(self) -> list[Record]:
        buf = self._buf
        out: list[Record] = []
        pos = 0
        limit = self._max
        while True:
            match = self._END.search(buf, pos, pos + limit + 1)
            if match is None or match.start() - pos > limit:
                if match is None and len(buf) - pos < limit:
                    break
                self._emit(out, buf[pos : pos + limit])
                pos += limit
                continue
            self._emit(out, buf[pos : match.start()])
            pos = match.end()
        del buf[:pos]
        return out

    def end_of_stream(self) -> list[Record]:
        """Whatever is left when the peer closes or goes quiet: a last, unended piece."""
        out = self.next_events()
        self._emit(out, bytes(self._buf))
        self._buf.clear()
        return out
