"""The original Umonitor format (§4): a level byte, then printf text, sans-IO.

The 2018 host read one message per ``recv``; over TCP that boundary is not kept, so
here a message ends at ``\\n`` or NUL, or when the caller says the stream went quiet
(``end_of_stream``). A first byte that is not a known level keeps the whole text at
info, so nothing a guest sends is lost.
"""

from __future__ import annotations

import re

from umonitor.records import Kind, Record, Severity

LEVEL_BYTES: dict[int, tuple[Severity, Kind]] = {
    ord("m"): (Severity.INFO, Kind.LOG),
    ord("w"): (Severity.WARNING, Kind.LOG),
    ord("f"): (Severity.ERR, Kind.LOG),
    ord("r"): (Severity.NOTICE, Kind.EXIT),
}

_END = re.compile(rb"[\n\0]")


def legacy_record_untrusted(seq: int, message: bytes | bytearray) -> Record:
    level = LEVEL_BYTES.get(message[0]) if message else None
    if level is None:
        return Record(seq, Severity.INFO, message.decode("utf-8", "replace").rstrip("\r"))
    severity, kind = level
    text = message[1:].decode("utf-8", "replace").rstrip("\r")
    return Record(seq, severity, text, kind)


class LegacyDecoder:
    """Turns a legacy Umonitor stream into records."""

    def __init__(self, *, max_line: int = 65536) -> None:
        self._max = max_line
        self._buf = bytearray()
        self._seq = 0

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        self._buf += data

    def _emit(self, out: list[Record], message: bytes | bytearray) -> None:
        if message.strip(b"\r"):
            self._seq += 1
            out.append(legacy_record_untrusted(self._seq, message))

    def next_events(self) -> list[Record]:
        buf = self._buf
        out: list[Record] = []
        pos = 0
        while True:
            match = _END.search(buf, pos, pos + self._max + 1)
            if match is None:
                if len(buf) - pos >= self._max:
                    self._emit(out, buf[pos : pos + self._max])
                    pos += self._max
                    continue
                break
            end = match.start()
            if end - pos > self._max:
                self._emit(out, buf[pos : pos + self._max])
                pos += self._max
                continue
            self._emit(out, buf[pos:end])
            pos = end + 1
        del buf[:pos]
        return out

    def end_of_stream(self) -> list[Record]:
        """The pending message, ended by the peer going quiet or closing."""
        out = self.next_events()
        self._emit(out, bytes(self._buf))
        self._buf.clear()
        return out
