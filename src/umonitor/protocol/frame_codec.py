"""The native umonitor frame codec (docs/protocol.md §2), sans-IO.

How this works: the caller pushes whatever bytes arrived with ``receive_data`` and
pulls every complete frame as a typed event with ``next_events``. The decoder never
holds more than ``max_frame`` bytes of an incomplete frame: the 4-byte length is
checked as soon as it arrives. Every path that reads peer bytes ends in
``_untrusted`` and can raise only ``ProtocolError``; after one, the decoder stays
broken, because a byte stream that lost its framing cannot be trusted again.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass

from umonitor.errors import ProtocolError, TooLarge
from umonitor.records import Fields, Kind, Record, Severity

PREFACE = b"\x89UMN"
VERSION = 1
DEFAULT_MAX_FRAME = 65536


class FrameType(enum.IntEnum):
    HELLO = 0x01
    RECORD = 0x02
    DROPPED = 0x03
    BYE = 0x04
    LEVEL = 0x05
    TRACE = 0x06
    PING = 0x10
    PONG = 0x11
    ERROR = 0x7F
    ACK = 0x81
    SET_LEVEL = 0x82
    SET_TRACE = 0x83


class ErrorCode(enum.IntEnum):
    BAD_VERSION = 1
    MALFORMED = 2
    TOO_LARGE = 3
    UNEXPECTED = 4
    NOT_ALLOWED = 5
    SHUTTING_DOWN = 6


class Peer(enum.Enum):
    """Who is on the other end of the bytes being decoded."""

    GUEST = "guest"
    HOST = "host"


_FROM_GUEST = frozenset(
    {
        FrameType.HELLO,
        FrameType.RECORD,
        FrameType.DROPPED,
        FrameType.BYE,
        FrameType.LEVEL,
        FrameType.TRACE,
    }
)
_FROM_HOST = frozenset({FrameType.ACK, FrameType.SET_LEVEL, FrameType.SET_TRACE})
_EITHER = frozenset({FrameType.PING, FrameType.PONG, FrameType.ERROR})
_ALLOWED = {Peer.GUEST: _FROM_GUEST | _EITHER, Peer.HOST: _FROM_HOST | _EITHER}


@dataclass(frozen=True, slots=True)
class Hello:
    name: str
    boot_id: bytes
    token: bytes = b""
    library: str = ""
    version: int = VERSION
    level: Severity | None = None  # the guest's minimum level, when it says (flags bit 3)
    tracing: bool = False  # the guest takes SET_TRACE (flags bit 4)


@dataclass(frozen=True, slots=True)
class Dropped:
    count: int
    through_seq: int


@dataclass(frozen=True, slots=True)
class Bye:
    pass


@dataclass(frozen=True, slots=True)
class Level:
    """The guest's minimum level now in force: its answer to SET_LEVEL."""

    level: Severity


MAX_TRACE_RANGES = 16  # address ranges one SET_TRACE carries, at most


@dataclass(frozen=True, slots=True)
class Trace:
    """Function tracing now in force in the guest: its answer to SET_TRACE."""

    on: bool
    ranges: int  # how many address ranges limit it (0: every function)


@dataclass(frozen=True, slots=True)
class Ping:
    nonce: int


@dataclass(frozen=True, slots=True)
class Pong:
    nonce: int


@dataclass(frozen=True, slots=True)
class ErrorFrame:
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Ack:
    seq: int


@dataclass(frozen=True, slots=True)
class SetLevel:
    level: Severity


@dataclass(frozen=True, slots=True)
class SetTrace:
    """Switch function tracing on or off, for functions in ``ranges`` ([start, end)
    link-time addresses, moved by the guest's load bias: ``anchor`` is where the
    guest library's ``umon_logx`` was linked; 0 when the ranges are run-time
    addresses already). No ranges: every function."""

    on: bool
    anchor: int = 0
    ranges: tuple[tuple[int, int], ...] = ()


Event = (
    Hello
    | Record
    | Dropped
    | Bye
    | Level
    | Trace
    | Ping
    | Pong
    | ErrorFrame
    | Ack
    | SetLevel
    | SetTrace
)
RecordRunConsumer = Callable[[bytearray, int, int, int], int]

# Frame header:  length u32 | type u8
#   +----+----+----+----+----+
#   |      length       |type|
#   +----+----+----+----+----+
_HEADER = struct.Struct(">IB")
_LENGTH = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_U16 = struct.Struct(">H")
_ERROR_HEAD = struct.Struct(">H")
_DROPPED = struct.Struct(">QQ")
# HELLO head: version u8 | flags u8 | boot_id 16 bytes
#   flags: bit 3 set = bits 0-2 hold the guest's minimum level; bits 4-7 reserved
_HELLO_HEAD = struct.Struct(">BB16s")
_HELLO_HAS_LEVEL = 0x08
_HELLO_TRACING = 0x10
# SET_TRACE: on u8 | count u8 | anchor u64 | count x ( start u64 | end u64 )
_SET_TRACE_HEAD = struct.Struct(">BBQ")
_RANGE = struct.Struct(">QQ")
# TRACE: on u8 | count u8
_TRACE = struct.Struct(">BB")
# RECORD head (36 bytes):
#   seq u64 | mono_ns u64 | wall_ns i64 | severity u8 | kind u8 | flags u8 |
#   nfields u8 | line u32 | file_len u16 | func_len u16
_RECORD_HEAD = struct.Struct(">QQqBBBBIHH")
# field head: key_len u8 | value_len u16
_FIELD_HEAD = struct.Struct(">BH")
_FLAG_WALL = 0x01
_U64_MAX = (1 << 64) - 1


def _text(raw: bytes | bytearray) -> str:
    return raw.decode("utf-8", "replace")


class FrameDecoder:
    """Turns a byte stream from ``peer`` into events.

    With ``expect_preface`` the stream must start with ``PREFACE`` (a connection);
    without it the bytes are frames only (after sniffing, or inside a datagram).
    """

    def __init__(
        self,
        peer: Peer,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        expect_preface: bool = True,
    ) -> None:
        if max_frame < 64:
            raise ValueError("max_frame must be at least 64 bytes")
        self._allowed = _ALLOWED[peer]
        self._max_body = max_frame - _HEADER.size
        self._buf = bytearray()
        self._need_preface = expect_preface
        self._broken: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held that do not yet form a complete frame."""
        return len(self._buf)

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        self._buf += data

    def next_events(self, limit: int | None = None) -> list[Event]:
        """Complete frames received so far (at most ``limit``), decoded.

        Raises ProtocolError, and again on every later call.
        """
        if self._broken is not None:
            raise self._broken
        try:
            return self._drain_untrusted(limit)
        except ProtocolError as exc:
            self._broken = exc
            self._buf.clear()
            raise

    def take_record_run(self, consume: RecordRunConsumer) -> None:
        """Let ``consume`` take a run of RECORD frames straight from the buffer.

        A fast path for the collector: ``consume(buf, pos, end, max_body)`` reads
        whole RECORD frames from ``buf[pos:end]`` and returns where it stopped, at a
        frame boundary. It must stop before any frame it does not fully understand;
        ``next_events`` then decodes (or rejects) that frame the ordinary way.
        """
        if self._broken is not None or self._need_preface or not self._buf:
            return
        stop = consume(self._buf, 0, len(self._buf), self._max_body)
        if stop:
            del self._buf[:stop]

    def _drain_untrusted(self, limit: int | None = None) -> list[Event]:
        buf = self._buf
        pos = 0
        end = len(buf)
        if self._need_preface:
            if end < len(PREFACE):
                if buf != PREFACE[:end]:
                    raise ProtocolError("connection does not start with the umonitor preface")
                return []
            if buf[: len(PREFACE)] != PREFACE:
                raise ProtocolError("connection does not start with the umonitor preface")
            pos = len(PREFACE)
            self._need_preface = False
        events: list[Event] = []
        header_size = _HEADER.size
        max_body = self._max_body
        allowed = self._allowed
        # RECORD is the hot case; where it is not allowed it takes the checked branch.
        record_type = FrameType.RECORD if FrameType.RECORD in allowed else -1
        try:
            while end - pos >= 4 and (limit is None or len(events) < limit):
                (length,) = _LENGTH.unpack_from(buf, pos)
                if length == 0:
                    raise ProtocolError("frame length 0")
                if length - 1 > max_body:
                    raise TooLarge(
                        f"frame of {length + 4} bytes exceeds the maximum of "
                        f"{max_body + header_size}"
                    )
                stop = pos + 4 + length
                if stop > end:
                    break
                ftype = buf[pos + 4]
                body_at = pos + header_size
                if ftype == record_type:
                    events.append(_decode_record_untrusted(buf, body_at, stop))
                else:
                    if ftype not in allowed:
                        raise ProtocolError(
                            f"frame type 0x{ftype:02x} is not expected here",
                            ErrorCode.UNEXPECTED,
                        )
                    events.append(_decode_other_untrusted(ftype, bytes(buf[body_at:stop])))
                pos = stop
        finally:
            if pos:
                del buf[:pos]
        return events


_SEVERITIES = tuple(Severity)
_KINDS = tuple(Kind)


def _decode_record_untrusted(buf: bytearray, at: int, stop: int) -> Record:
    if stop - at < _RECORD_HEAD.size:
        raise ProtocolError("RECORD frame too short")
    (seq, mono, wall, sev, kind, flags, nfields, line, file_len, func_len) = (
        _RECORD_HEAD.unpack_from(buf, at)
    )
    if seq == 0:
        raise ProtocolError("RECORD sequence number 0")
    if sev > 7:
        raise ProtocolError(f"RECORD severity {sev} is not 0-7")
    if kind > 3:
        raise ProtocolError(f"RECORD kind {kind} is not 0-3")
    pos = at + 36  # _RECORD_HEAD.size
    file = func = ""
    if file_len or func_len:
        if pos + file_len + func_len > stop:
            raise ProtocolError("RECORD source location runs past the frame")
        file = buf[pos : pos + file_len].decode("utf-8", "replace")
        pos += file_len
        func = buf[pos : pos + func_len].decode("utf-8", "replace")
        pos += func_len
    fields: Fields = ()
    if nfields:
        pairs = []
        for _ in range(nfields):
            if pos + _FIELD_HEAD.size > stop:
                raise ProtocolError("RECORD field runs past the frame")
            key_len, value_len = _FIELD_HEAD.unpack_from(buf, pos)
            pos += _FIELD_HEAD.size
            if key_len == 0:
                raise ProtocolError("RECORD field with an empty key")
            if pos + key_len + value_len > stop:
                raise ProtocolError("RECORD field runs past the frame")
            key = _text(buf[pos : pos + key_len])
            pos += key_len
            pairs.append((key, _text(buf[pos : pos + value_len])))
            pos += value_len
        fields = tuple(pairs)
    return Record(
        seq,
        _SEVERITIES[sev],
        buf[pos:stop].decode("utf-8", "replace"),
        _KINDS[kind],
        mono,
        wall if flags & _FLAG_WALL else None,
        file,
        line,
        func,
        fields,
    )


def _need(body: bytes, size: int, what: str) -> None:
    if len(body) != size:
        raise ProtocolError(f"{what} frame body is {len(body)} bytes, expected {size}")


def _decode_other_untrusted(ftype: int, body: bytes) -> Event:
    if ftype == FrameType.HELLO:
        return _decode_hello_untrusted(body)
    if ftype == FrameType.DROPPED:
        _need(body, _DROPPED.size, "DROPPED")
        count, through = _DROPPED.unpack(body)
        return Dropped(count, through)
    if ftype == FrameType.BYE:
        _need(body, 0, "BYE")
        return Bye()
    if ftype in (FrameType.PING, FrameType.PONG, FrameType.ACK):
        _need(body, 8, FrameType(ftype).name)
        (value,) = _U64.unpack(body)
        if ftype == FrameType.PING:
            return Ping(value)
        return Pong(value) if ftype == FrameType.PONG else Ack(value)
    if ftype in (FrameType.SET_LEVEL, FrameType.LEVEL):
        # SET_LEVEL and LEVEL: level u8 (0-7)
        name = FrameType(ftype).name
        _need(body, 1, name)
        if body[0] > 7:
            raise ProtocolError(f"{name} level {body[0]} is not 0-7")
        level = _SEVERITIES[body[0]]
        return SetLevel(level) if ftype == FrameType.SET_LEVEL else Level(level)
    if ftype == FrameType.SET_TRACE:
        return _decode_set_trace_untrusted(body)
    if ftype == FrameType.TRACE:
        _need(body, _TRACE.size, "TRACE")
        on, count = _TRACE.unpack(body)
        if on > 1 or count > MAX_TRACE_RANGES:
            raise ProtocolError(f"TRACE on {on} with {count} ranges is out of range")
        return Trace(bool(on), count)
    if ftype == FrameType.ERROR:
        if len(body) < _ERROR_HEAD.size:
            raise ProtocolError("ERROR frame too short")
        (code,) = _ERROR_HEAD.unpack_from(body)
        return ErrorFrame(code, _text(body[_ERROR_HEAD.size :]))
    raise ProtocolError(f"unknown frame type 0x{ftype:02x}", ErrorCode.UNEXPECTED)


def _decode_set_trace_untrusted(body: bytes) -> SetTrace:
    if len(body) < _SET_TRACE_HEAD.size:
        raise ProtocolError("SET_TRACE frame too short")
    on, count, anchor = _SET_TRACE_HEAD.unpack_from(body)
    if on > 1:
        raise ProtocolError(f"SET_TRACE on is {on}, not 0 or 1")
    if count > MAX_TRACE_RANGES:
        raise ProtocolError(f"SET_TRACE with {count} ranges; at most {MAX_TRACE_RANGES}")
    _need(body, _SET_TRACE_HEAD.size + count * _RANGE.size, "SET_TRACE")
    ranges = tuple(_RANGE.iter_unpack(body[_SET_TRACE_HEAD.size :]))
    if any(start >= end for start, end in ranges):
        raise ProtocolError("SET_TRACE range whose start is not below its end")
    return SetTrace(bool(on), anchor, ranges)


def _decode_hello_untrusted(body: bytes) -> Hello:
    if len(body) < _HELLO_HEAD.size + 1:
        raise ProtocolError("HELLO frame too short")
    version, flags, boot_id = _HELLO_HEAD.unpack_from(body)
    if version != VERSION:
        raise ProtocolError(
            f"unsupported protocol version {version}; this collector speaks {VERSION}",
            ErrorCode.BAD_VERSION,
        )
    pos = _HELLO_HEAD.size
    parts: list[bytes] = []
    for what in ("name", "token", "library"):
        if pos >= len(body):
            raise ProtocolError(f"HELLO ends before its {what}")
        size = body[pos]
        pos += 1
        if pos + size > len(body):
            raise ProtocolError(f"HELLO {what} runs past the frame")
        parts.append(body[pos : pos + size])
        pos += size
    if pos != len(body):
        raise ProtocolError("HELLO has bytes after the library name")
    name, token, library = parts
    if not name:
        raise ProtocolError("HELLO with an empty instance name")
    level = _SEVERITIES[flags & 0x07] if flags & _HELLO_HAS_LEVEL else None
    tracing = bool(flags & _HELLO_TRACING)
    return Hello(_text(name), boot_id, token, _text(library), version, level, tracing)


# -- encoding -----------------------------------------------------------------------


def _frame(ftype: int, body: bytes) -> bytes:
    return _HEADER.pack(len(body) + 1, ftype) + body


def _short(value: bytes, what: str, limit: int = 255) -> bytes:
    if len(value) > limit:
        raise ValueError(f"{what} is {len(value)} bytes; the limit is {limit}")
    return value


def encode_hello(hello: Hello) -> bytes:
    if len(hello.boot_id) != 16:
        raise ValueError("boot_id must be 16 bytes")
    name = _short(hello.name.encode(), "instance name")
    if not name:
        raise ValueError("instance name must not be empty")
    token = _short(hello.token, "token")
    library = _short(hello.library.encode(), "library name")
    flags = 0 if hello.level is None else _HELLO_HAS_LEVEL | int(hello.level)
    if hello.tracing:
        flags |= _HELLO_TRACING
    body = b"".join(
        (
            _HELLO_HEAD.pack(hello.version, flags, hello.boot_id),
            bytes((len(name),)),
            name,
            bytes((len(token),)),
            token,
            bytes((len(library),)),
            library,
        )
    )
    return _frame(FrameType.HELLO, body)


def encode_record(record: Record) -> bytes:
    if not 1 <= record.seq <= _U64_MAX:
        raise ValueError("seq must be 1..2**64-1")
    file = _short(record.file.encode(), "file name", 0xFFFF)
    func = _short(record.function.encode(), "function name", 0xFFFF)
    if len(record.fields) > 255:
        raise ValueError("at most 255 fields")
    parts = [b""]
    for key, value in record.fields:
        k = _short(key.encode(), "field key")
        if not k:
            raise ValueError("field keys must not be empty")
        v = _short(value.encode(), "field value", 0xFFFF)
        parts.append(_FIELD_HEAD.pack(len(k), len(v)) + k + v)
    wall = record.wall_ns
    parts[0] = _RECORD_HEAD.pack(
        record.seq,
        record.mono_ns or 0,
        wall if wall is not None else 0,
        record.severity,
        record.kind,
        _FLAG_WALL if wall is not None else 0,
        len(record.fields),
        record.line,
        len(file),
        len(func),
    )
    parts.insert(1, file + func)
    parts.append(record.message.encode())
    return _frame(FrameType.RECORD, b"".join(parts))


def encode(event: Event) -> bytes:
    """The frame for ``event``; raises ValueError for values the format cannot hold."""
    if isinstance(event, Record):
        return encode_record(event)
    if isinstance(event, Hello):
        return encode_hello(event)
    if isinstance(event, Dropped):
        return _frame(FrameType.DROPPED, _DROPPED.pack(event.count, event.through_seq))
    if isinstance(event, Bye):
        return _frame(FrameType.BYE, b"")
    if isinstance(event, Ping):
        return _frame(FrameType.PING, _U64.pack(event.nonce))
    if isinstance(event, Pong):
        return _frame(FrameType.PONG, _U64.pack(event.nonce))
    if isinstance(event, Ack):
        return _frame(FrameType.ACK, _U64.pack(event.seq))
    if isinstance(event, SetLevel):
        return _frame(FrameType.SET_LEVEL, bytes((int(event.level),)))
    if isinstance(event, Level):
        return _frame(FrameType.LEVEL, bytes((int(event.level),)))
    if isinstance(event, Trace):
        if not 0 <= event.ranges <= MAX_TRACE_RANGES:
            raise ValueError(f"at most {MAX_TRACE_RANGES} trace ranges")
        return _frame(FrameType.TRACE, _TRACE.pack(event.on, event.ranges))
    if isinstance(event, SetTrace):
        return _frame(FrameType.SET_TRACE, _encode_set_trace(event))
    return _frame(FrameType.ERROR, _ERROR_HEAD.pack(event.code) + event.reason.encode())


def _encode_set_trace(event: SetTrace) -> bytes:
    if len(event.ranges) > MAX_TRACE_RANGES:
        raise ValueError(f"at most {MAX_TRACE_RANGES} trace ranges, not {len(event.ranges)}")
    if not 0 <= event.anchor <= _U64_MAX:
        raise ValueError("anchor must be 0..2**64-1")
    for start, end in event.ranges:
        if not 0 <= start < end <= _U64_MAX:
            raise ValueError(f"bad trace range [{start:#x}, {end:#x})")
    head = _SET_TRACE_HEAD.pack(event.on, len(event.ranges), event.anchor)
    return head + b"".join(_RANGE.pack(start, end) for start, end in event.ranges)


def decode_datagram_untrusted(
    data: bytes, max_frame: int = DEFAULT_MAX_FRAME
) -> tuple[Hello, Record | Dropped]:
    """One UDP datagram: preface, HELLO, then one RECORD or DROPPED (§3)."""
    decoder = FrameDecoder(Peer.GUEST, max_frame=max_frame)
    decoder.receive_data(data)
    events = decoder.next_events()
    if decoder.buffered:
        raise ProtocolError("datagram ends inside a frame")
    if len(events) != 2:
        raise ProtocolError(f"datagram holds {len(events)} frames, expected 2")
    hello, body = events
    if not isinstance(hello, Hello) or not isinstance(body, Record | Dropped):
        raise ProtocolError("datagram must be HELLO then RECORD or DROPPED")
    return hello, body


def encode_datagram(hello: Hello, body: Record | Dropped) -> bytes:
    return PREFACE + encode_hello(hello) + encode(body)
