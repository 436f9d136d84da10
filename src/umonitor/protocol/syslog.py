"""Syslog messages (RFC 5424 and RFC 3164) and their TCP framing (RFC 6587), sans-IO.

How this works: ``parse_syslog_untrusted`` turns one frame (a UDP datagram, or a
frame cut from a stream by ``SyslogStreamDecoder``) into a ``SyslogMessage``. A frame
that starts ``<PRI>1 `` is read as RFC 5424; anything else as RFC 3164, the loose
BSD format, where every header part is optional and nothing is ever rejected: bytes
that do not fit a header field stay in the message. Only an empty frame or one
larger than ``max_frame`` raises ``ProtocolError``. docs/syslog.md lists the
tolerance rules and the choices made where the RFCs leave room.

The stream decoder decides the framing of each frame by its first byte: a digit 1-9
starts an octet-counted frame (``LEN SP MSG``), anything else a frame ended by LF or
NUL. It never holds more than ``max_frame`` bytes of a frame plus its length prefix.
"""

from __future__ import annotations

import datetime
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from umonitor.errors import ProtocolError, TooLarge

MAX_FRAME = 65536

# The defaults RFC 3164 §4.3.3 gives a message without a PRI: user.notice.
DEFAULT_FACILITY = 1
# RFC 5424 6.2.1: the facility names, by code (the record field "facility" holds them).
FACILITIES = (
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
    "authpriv", "ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2",
    "local3", "local4", "local5", "local6", "local7",
)  # fmt: skip
DEFAULT_SEVERITY = 5

SdParams = tuple[tuple[str, str], ...]
StructuredData = tuple[tuple[str, SdParams], ...]


@dataclass(frozen=True, slots=True)
class SyslogMessage:
    """One syslog message, whichever RFC it followed; absent fields are empty."""

    facility: int
    severity: int
    timestamp_ns: int | None
    hostname: str
    app_name: str
    procid: str
    msgid: str
    structured_data: StructuredData
    message: str
    rfc: int


# Bytes that carry nothing: a frame made only of these is empty.
_BLANK = b" \t\r\n\0"
# Line-end debris around a frame, never part of the message.
_DEBRIS = b"\r\n\0"
_BOM = b"\xef\xbb\xbf"
_SP = 0x20
_NS = 1_000_000_000
_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()
_FIRST_NS = (datetime.date(1, 1, 1).toordinal() - _EPOCH_ORDINAL) * 86400 * _NS
_LAST_NS = (datetime.date(9999, 12, 31).toordinal() - _EPOCH_ORDINAL + 1) * 86400 * _NS - 1

# <PRI>: one to three digits. RFC 5424 forbids leading zeros and values above 191;
# both are accepted here (see docs/syslog.md).
_PRI = re.compile(rb"<([0-9]{1,3})>")
# RFC 5424 TIMESTAMP (an RFC 3339 date-time), with lowercase t/z, up to nanoseconds
# and a missing offset (read as UTC) tolerated.
_ISO_TIME = re.compile(
    rb"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    rb"(?:\.([0-9]{1,9}))?([Zz]|[+-][0-9]{2}:[0-9]{2})?"
)
# RFC 3164 TIMESTAMP "Mmm dd hh:mm:ss": the day space-padded, zero-padded or bare.
_BSD_TIME = re.compile(
    rb"([A-Za-z]{3}) {1,2}([0-9]{1,2}) ([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?"
)
_MONTHS = {
    name: number
    for number, name in enumerate(b"jan feb mar apr may jun jul aug sep oct nov dec".split(), 1)
}
# RFC 3164 TAG as senders write it: "app:", "app[pid]:" or "app[pid]", then a space
# or the end. A word without ':' or '[' is not taken as a TAG: it stays in the message.
_TAG = re.compile(rb"([^\x00-\x20\x7f:\[\]]{1,128})(?:\[([^\x00-\x20\[\]]{0,128})\]:?|:)(?: |\Z)")
# SD-NAME: printable US-ASCII except '=', SP, ']' and '"' (RFC 5424 §6.3.2).
_SD_NAME = re.compile(rb"[!#-<>-\\^-~]+")
# PARAM-VALUE up to its closing quote; a backslash always takes the next byte along.
_SD_VALUE = re.compile(rb'((?:[^"\\]|\\.)*)"', re.DOTALL)
_SD_ESCAPE = re.compile(rb'\\([\\"\]])')
_LINE_END = re.compile(rb"[\n\0]")


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _field(raw: bytes) -> str:
    """A header field: the NILVALUE '-' means absent."""
    return "" if raw == b"-" else _text(raw)


def _token(frame: bytes, pos: int) -> tuple[bytes, int]:
    """The bytes from ``pos`` up to the next space, and where the next token starts."""
    end = frame.find(b" ", pos)
    if end < 0:
        return frame[pos:], len(frame)
    return frame[pos:end], end + 1


def _message(raw: bytes) -> str:
    if raw.startswith(_BOM):
        raw = raw[len(_BOM) :]
    return _text(raw)


def _civil_ns(
    year: int, month: int, day: int, hour: int, minute: int, second: int, frac: bytes | None
) -> int | None:
    """Nanoseconds since the epoch of a UTC civil time, or None if there is no such time."""
    if hour > 23 or minute > 59 or second > 59:
        return None
    try:
        days = datetime.date(year, month, day).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        return None
    nanos = int(frac.ljust(9, b"0")) if frac else 0
    return (days * 86400 + hour * 3600 + minute * 60 + second) * _NS + nanos


def _iso_ns(match: re.Match[bytes]) -> int | None:
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    ns = _civil_ns(year, month, day, hour, minute, second, match.group(7))
    if ns is None:
        return None
    offset = match.group(8)
    if offset and offset not in (b"Z", b"z"):
        hours, minutes = int(offset[1:3]), int(offset[4:6])
        if hours > 23 or minutes > 59:
            return None
        seconds = hours * 3600 + minutes * 60
        ns -= (seconds if offset[:1] == b"+" else -seconds) * _NS
    # An offset can move a valid date out of years 1-9999, which no log line can show.
    return ns if _FIRST_NS <= ns <= _LAST_NS else None


def _bsd_ns(match: re.Match[bytes], now_ns: int | None) -> int | None:
    """A year-less RFC 3164 time, read as UTC in the year that puts it closest to now."""
    month = _MONTHS.get(match.group(1).lower())
    if month is None:
        return None
    day, hour, minute, second = (int(match.group(i)) for i in range(2, 6))
    now = time.time_ns() if now_ns is None else now_ns
    this_year = datetime.datetime.fromtimestamp(now // _NS, datetime.UTC).year
    best: int | None = None
    for year in (this_year - 1, this_year, this_year + 1):
        ns = _civil_ns(year, month, day, hour, minute, second, match.group(6))
        if ns is not None and (best is None or abs(ns - now) < abs(best - now)):
            best = ns
    return best


def _at_token_end(frame: bytes, end: int) -> bool:
    return end == len(frame) or frame[end] == _SP


def _structured_data_untrusted(frame: bytes, pos: int) -> tuple[StructuredData, int] | None:
    """The STRUCTURED-DATA at ``pos`` and where it ends, or None if it is malformed."""
    size = len(frame)
    if pos >= size:
        return (), pos
    if frame[pos] == 0x2D and _at_token_end(frame, pos + 1):  # "-"
        return (), pos + 1
    elements: list[tuple[str, SdParams]] = []
    while pos < size and frame[pos] == 0x5B:  # "["
        match = _SD_NAME.match(frame, pos + 1)
        if match is None:
            return None
        sd_id = match.group().decode("ascii")
        pos = match.end()
        params: list[tuple[str, str]] = []
        while True:
            if pos >= size:
                return None
            if frame[pos] == 0x5D:  # "]"
                pos += 1
                break
            if frame[pos] != _SP:
                return None
            match = _SD_NAME.match(frame, pos + 1)
            if match is None or frame[match.end() : match.end() + 2] != b'="':
                return None
            name = match.group().decode("ascii")
            value = _SD_VALUE.match(frame, match.end() + 2)
            if value is None:
                return None
            params.append((name, _text(_SD_ESCAPE.sub(rb"\1", value.group(1)))))
            pos = value.end()
        elements.append((sd_id, tuple(params)))
    if not elements:
        return None
    return tuple(elements), pos


def _parse_5424(frame: bytes, pos: int, facility: int, severity: int) -> SyslogMessage:
    stamp, pos = _token(frame, pos)
    hostname, pos = _token(frame, pos)
    app_name, pos = _token(frame, pos)
    procid, pos = _token(frame, pos)
    msgid, pos = _token(frame, pos)
    match = _ISO_TIME.fullmatch(stamp)
    sd = _structured_data_untrusted(frame, pos)
    if sd is None:
        structured: StructuredData = ()
        message = frame[pos:]
    else:
        structured, pos = sd
        if pos < len(frame) and frame[pos] == _SP:
            pos += 1
        message = frame[pos:]
    return SyslogMessage(
        facility,
        severity,
        _iso_ns(match) if match else None,
        _field(hostname),
        _field(app_name),
        _field(procid),
        _field(msgid),
        structured,
        _message(message),
        5424,
    )


def _stamp_3164(frame: bytes, pos: int, now_ns: int | None) -> tuple[int | None, int] | None:
    """The timestamp at ``pos`` (RFC 3164 or RFC 3339) and where it ends, if there is one."""
    match = _BSD_TIME.match(frame, pos)
    if match is not None and match.group(1).lower() in _MONTHS:
        if _at_token_end(frame, match.end()):
            return _bsd_ns(match, now_ns), match.end()
        return None
    match = _ISO_TIME.match(frame, pos)
    if match is not None and _at_token_end(frame, match.end()):
        return _iso_ns(match), match.end()
    return None


def _parse_3164(
    frame: bytes, pos: int, facility: int, severity: int, now_ns: int | None
) -> SyslogMessage:
    timestamp_ns: int | None = None
    hostname = app_name = procid = ""
    stamp = _stamp_3164(frame, pos, now_ns)
    if stamp is not None:
        timestamp_ns, pos = stamp
        pos = min(pos + 1, len(frame))
        if _TAG.match(frame, pos) is None:
            host, pos = _token(frame, pos)
            hostname = _text(host)
    tag = _TAG.match(frame, pos)
    if tag is not None:
        app_name = _text(tag.group(1))
        procid = _text(tag.group(2) or b"")
        pos = tag.end()
    return SyslogMessage(
        facility,
        severity,
        timestamp_ns,
        hostname,
        app_name,
        procid,
        "",
        (),
        _message(frame[pos:]),
        3164,
    )


def parse_syslog_untrusted(
    frame: bytes | bytearray | memoryview,
    *,
    now_ns: int | None = None,
    max_frame: int = MAX_FRAME,
) -> SyslogMessage:
    """One syslog message from one frame, RFC 5424 or RFC 3164.

    ``now_ns`` (default: the wall clock) picks the year of an RFC 3164 timestamp.
    Raises ProtocolError only for a frame larger than ``max_frame`` bytes or one
    with nothing but spaces, tabs, CR, LF and NUL in it.
    """
    data = bytes(frame)
    if len(data) > max_frame:
        raise TooLarge(f"syslog frame of {len(data)} bytes exceeds the maximum of {max_frame}")
    if not data.strip(_BLANK):
        raise ProtocolError("empty syslog frame")
    data = data.strip(_DEBRIS)
    pri = _PRI.match(data)
    if pri is None:
        # RFC 3164 §4.3.3: without a PRI the whole frame is the message.
        return SyslogMessage(
            DEFAULT_FACILITY, DEFAULT_SEVERITY, None, "", "", "", "", (), _message(data), 3164
        )
    value = int(pri.group(1))
    facility, severity = min(value >> 3, 23), value & 7
    pos = pri.end()
    if data.startswith(b"1 ", pos):
        return _parse_5424(data, pos + 2, facility, severity)
    return _parse_3164(data, pos, facility, severity, now_ns)


class SyslogStreamDecoder:
    """RFC 6587 framing for TCP/TLS, detected per frame.

    Octet counting (``LEN SP MSG``) when a frame starts with a digit 1-9, else
    non-transparent framing: the frame ends at LF or NUL. A digit run followed by
    anything but a digit or a space is an LF frame after all.
    """

    def __init__(self, *, max_frame: int = MAX_FRAME) -> None:
        if max_frame < 1:
            raise ValueError("max_frame must be at least 1")
        self._max = max_frame
        self._max_digits = len(str(max_frame))
        self._buf = bytearray()
        # The frame at the start of the buffer is an LF frame (decided, or cut).
        self._in_line = False
        # Bytes at the start of the buffer known to hold no LF or NUL.
        self._scanned = 0
        self._broken: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held that do not yet form a complete frame."""
        return len(self._buf)

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        self._buf += data

    def next_frames(self, limit: int = 0) -> list[bytes]:
        """Complete frames received so far, without their framing; blank ones skipped.

        At most ``limit`` frames when it is above 0. A declared length above
        ``max_frame`` raises ProtocolError: on this call if no frame came before it,
        else on the next one; and on every call after.
        """
        if self._broken is not None:
            raise self._broken
        out: list[bytes] = []
        try:
            self._drain_untrusted(out, limit)
        except ProtocolError as exc:
            self._broken = exc
            self._buf.clear()
            if not out:
                raise
        return out

    def end_of_stream(self) -> list[bytes]:
        """The frames left when the peer closes: complete ones, then a last partial one.

        The partial one is an unterminated LF frame, or the part received of an
        octet-counted frame (the parser reads truncated messages).
        """
        out = self.next_frames()
        rest = bytes(self._buf)
        if not self._in_line:
            digits = len(rest) - len(rest.lstrip(b"0123456789"))
            if 0 < digits < len(rest) and rest[digits] == _SP:
                rest = rest[digits + 1 :]
        self._emit(out, rest)
        self._buf.clear()
        self._in_line = False
        self._scanned = 0
        return out

    @staticmethod
    def _emit(out: list[bytes], piece: bytes | bytearray) -> None:
        if piece.strip(_BLANK):
            out.append(bytes(piece))

    def take_run(self, take: Callable[[bytearray, int], int]) -> None:
        """Offer the buffered bytes, when they start at a frame, to a fast path.

        ``take(buf, end)`` handles whole frames from the start of ``buf[:end]`` and
        returns where it stopped; those bytes are dropped from the buffer.
        """
        if self._broken is not None or self._in_line or not self._buf:
            return
        stop = take(self._buf, len(self._buf))
        if stop:
            del self._buf[:stop]

    def _drain_untrusted(self, out: list[bytes], count: int = 0) -> None:
        buf = self._buf
        pos = 0
        end = len(buf)
        limit = self._max
        try:
            while pos < end and not (count and len(out) >= count):
                if not self._in_line:
                    if 0x31 <= buf[pos] <= 0x39:
                        at = pos + 1
                        stop = min(end, pos + self._max_digits)
                        while at < stop and 0x30 <= buf[at] <= 0x39:
                            at += 1
                        if at == end:
                            break  # the length is still arriving
                        if buf[at] == _SP:
                            length = int(buf[pos:at])
                            if length > limit:
                                raise TooLarge(
                                    f"syslog frame of {length} bytes exceeds the maximum of {limit}"
                                )
                            if end - at - 1 < length:
                                break
                            self._emit(out, buf[at + 1 : at + 1 + length])
                            pos = at + 1 + length
                            continue
                        if 0x30 <= buf[at] <= 0x39:
                            raise TooLarge(
                                f"syslog frame length has more than {self._max_digits} digits"
                            )
                    self._in_line = True
                    self._scanned = pos
                cut = pos + limit
                found = _LINE_END.search(buf, max(pos, self._scanned), min(end, cut + 1))
                if found is not None:
                    self._emit(out, buf[pos : found.start()])
                    pos = found.end()
                    self._in_line = False
                elif end >= cut:
                    self._emit(out, buf[pos:cut])
                    pos = cut
                    self._scanned = cut
                else:
                    self._scanned = end
                    break
        finally:
            if pos:
                del buf[:pos]
                self._scanned = max(0, self._scanned - pos)
