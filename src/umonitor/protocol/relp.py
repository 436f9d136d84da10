"""RELP, rsyslog's Reliable Event Logging Protocol: its frames, sans-IO.

A frame is ``TXNR SP COMMAND SP DATALEN [SP DATA] LF``. A session opens with
``open`` (offers: ``relp_version``, ``relp_software``, ``commands``), then carries
``syslog`` commands, each answered by an ``rsp`` with the same transaction number
(``200 OK`` once the receiver has taken the message), and ends with ``close``; a
server going away may first send ``serverclose`` with transaction number 0.
Used both by the RELP exporter (client) and the RELP syslog listener (server).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from umonitor.errors import ProtocolError, TooLarge

# TXNR SP COMMAND SP DATALEN [SP DATA] TRAILER, TRAILER = LF. TXNR and DATALEN have
# at most 9 digits, COMMAND at most 32 letters.
_RELP_HEAD = re.compile(rb"([0-9]{1,9}) ([A-Za-z]{1,32}) ([0-9]{1,9})([ \n])")
# What the start of a header may look like while the rest has not arrived.
_RELP_HEAD_START = re.compile(rb"[0-9]{0,9}(?: (?:[A-Za-z]{0,32}(?: [0-9]{0,9})?)?)?")
MAX_RELP_DATA = 65536
MAX_TXNR = 999_999_999
RELP_OFFERS = b"relp_version=0\nrelp_software=umonitor\ncommands=syslog"


@dataclass(frozen=True, slots=True)
class RelpFrame:
    """One RELP frame: transaction number, command and data."""

    txnr: int
    command: str
    data: bytes = b""


def encode_relp(frame: RelpFrame) -> bytes:
    if not frame.data:
        return b"%d %s 0\n" % (frame.txnr, frame.command.encode("ascii"))
    return b"%d %s %d %s\n" % (
        frame.txnr,
        frame.command.encode("ascii"),
        len(frame.data),
        frame.data,
    )


class RelpDecoder:
    """RELP frames from a byte stream; bad bytes only ever raise ProtocolError.

    Holds at most one frame's header (53 bytes) and ``max_data`` bytes of data.
    Once it raised, it raises on every call.
    """

    def __init__(self, *, max_data: int = MAX_RELP_DATA) -> None:
        self._max = max_data
        self._buf = bytearray()
        self._broken: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held that do not yet form a complete frame."""
        return len(self._buf)

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        self._buf += data

    def next_frames(self) -> list[RelpFrame]:
        """Complete frames so far; a bad frame raises on the call after those before it."""
        if self._broken is not None:
            raise self._broken
        out: list[RelpFrame] = []
        try:
            while (frame := self._next_untrusted()) is not None:
                out.append(frame)
        except ProtocolError as exc:
            self._broken = exc
            self._buf.clear()
            if not out:
                raise
        return out

    def _next_untrusted(self) -> RelpFrame | None:
        buf = self._buf
        head = _RELP_HEAD.match(buf)
        if head is None:
            if _RELP_HEAD_START.fullmatch(buf) is not None:
                return None  # the header is still arriving
            shown = bytes(buf[:40])
            raise ProtocolError(f"malformed RELP frame header {shown!r}")
        txnr, length = int(head.group(1)), int(head.group(3))
        command = head.group(2).decode("ascii")
        if length > self._max:
            raise TooLarge(f"RELP frame of {length} bytes exceeds the maximum of {self._max}")
        start = head.end()
        if head.group(4) == b"\n":
            if length:
                raise ProtocolError(f"RELP {command} frame announces {length} bytes but has none")
            del buf[:start]
            return RelpFrame(txnr, command)
        if len(buf) < start + length + 1:
            return None
        if buf[start + length] != 0x0A:
            raise ProtocolError(f"RELP {command} frame does not end in LF after {length} bytes")
        data = bytes(buf[start : start + length])
        del buf[: start + length + 1]
        return RelpFrame(txnr, command, data)


_RSP_STATUS = re.compile(rb"([0-9]{3})(?: ([^\n]*))?(?:\n|\Z)")


def relp_status_untrusted(data: bytes) -> tuple[int, str]:
    """The code and text of a RELP ``rsp``: ``200 OK`` → (200, "OK")."""
    match = _RSP_STATUS.match(data)
    if match is None:
        raise ProtocolError(f"malformed RELP response {data[:40]!r}")
    text = (match.group(2) or b"").decode("utf-8", "replace")
    return int(match.group(1)), text[:200]


def relp_offers_untrusted(data: bytes) -> dict[str, str]:
    """The offers after the status line of the answer to ``open``: ``name=value`` lines."""
    offers: dict[str, str] = {}
    for line in data.split(b"\n")[1:]:
        name, _, value = line.partition(b"=")
        if name:
            offers[name.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    return offers
