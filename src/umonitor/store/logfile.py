"""The per-instance log file format: one line per record, readable and parseable.

How this works (docs/storage.md has the full grammar)::

    # boot 000102030405060708090a0b0c0d0e0f lib=umonitor-c/1.0.0 peer=10.77.0.5:40122
    2026-11-26T13:44:35.123456Z warning app 42 +1.234567890 main.c:120:divide text\\tk=v

A line is ``TIME SEVERITY ORIGIN[/KIND] SEQ UPTIME SOURCE MESSAGE``, single spaces,
then optionally a TAB and the fields in logfmt. Every byte a guest chose is escaped
so that no line holds a newline, TAB, ANSI escape or other control character:
``\\\\ \\t \\n \\r \\xHH \\uHHHH``. Lines starting with ``#`` are context: which
boot the following records belong to, and drop notices. The index is rebuilt from
these lines alone, so everything it holds must be here.
"""

from __future__ import annotations

import calendar
import functools
import re
import time
from dataclasses import dataclass

from umonitor.errors import LineError
from umonitor.records import SEVERITY_NAMES, Kind, Origin, Record, Severity

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\\]")
_TOKEN_BAD = re.compile(r"[\x00-\x20\x7f-\x9f\\:]")
_KEY_BAD = re.compile(r'[\x00-\x20\x7f-\x9f\\="\s]')
_VALUE_QUOTE = re.compile(r'[\s"=]')
_SHORT = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}
_UNESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|.)", re.S)
_KIND_SUFFIX = {Kind.LOG: "", Kind.ENTER: "/enter", Kind.EXIT: "/exit", Kind.CRASH: "/crash"}
_KIND_BY_NAME = {"enter": Kind.ENTER, "exit": Kind.EXIT, "crash": Kind.CRASH}
_SEVERITY_BY_NAME = {name: Severity(i) for i, name in enumerate(SEVERITY_NAMES)}
_ORIGIN_BY_NAME = {o.value: o for o in Origin}
_FIELD = re.compile(r'([^\s=]+)=("(?:[^"\\]|\\.)*"|\S*)')


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    short = _SHORT.get(char)
    if short is not None:
        return short
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}"


def escape(text: str) -> str:
    """``text`` with every control character and backslash escaped."""
    return _CONTROL.sub(_escape_char, text) if _CONTROL.search(text) else text


def _escape_token(text: str, bad: re.Pattern[str]) -> str:
    return bad.sub(_escape_char, text) if bad.search(text) else text


def _unescape_one(match: re.Match[str]) -> str:
    body = match.group(1)
    if len(body) > 1:
        return chr(int(body[1:], 16))
    return {"t": "\t", "n": "\n", "r": "\r"}.get(body, body)


def unescape(text: str) -> str:
    return _UNESCAPE.sub(_unescape_one, text) if "\\" in text else text


def format_fields(fields: tuple[tuple[str, str], ...]) -> str:
    parts = []
    for key, value in fields:
        key_text = _escape_token(key, _KEY_BAD) if key else "\\x00"
        value_text = escape(value)
        if not value_text or _VALUE_QUOTE.search(value_text):
            value_text = '"' + value_text.replace('"', '\\"') + '"'
        parts.append(f"{key_text}={value_text}")
    return " ".join(parts)


def parse_fields(text: str) -> tuple[tuple[str, str], ...]:
    out = []
    for match in _FIELD.finditer(text):
        key, value = match.groups()
        if value.startswith('"') and value.endswith('"') and len(value) >= 2:
            value = value[1:-1]
        out.append((unescape(key), unescape(value)))
    return tuple(out)


@functools.lru_cache(maxsize=4096)
def _epoch_seconds(prefix: str) -> int:
    try:
        return calendar.timegm(time.strptime(prefix, "%Y-%m-%dT%H:%M:%S"))
    except ValueError as exc:
        raise LineError(f"bad time {prefix!r}") from exc


def _is_digits(text: str) -> bool:
    """ASCII digits only: str.isdigit() also takes '²' and other digits int() refuses."""
    return text.isascii() and text.isdigit()


def parse_time(text: str) -> int:
    """Nanoseconds since the epoch from this file's time format."""
    micros = text[20:26]
    if len(text) != 27 or text[19] != "." or text[26] != "Z" or not _is_digits(micros):
        raise LineError(f"bad time {text!r}")
    return _epoch_seconds(text[:19]) * 1_000_000_000 + int(text[20:26]) * 1000


def format_source(record: Record) -> str:
    if not (record.file or record.line or record.function):
        return "-"
    file = _escape_token(record.file, _TOKEN_BAD)
    if file == "-":
        file = "\\x2d"
    func = _escape_token(record.function, _TOKEN_BAD)
    return f"{file}:{record.line or ''}:{func}"


_ORIGIN_KIND = {(o, k): f"{o.value}{_KIND_SUFFIX[k]}" for o in Origin for k in Kind}


class LineFormatter:
    """Formats record lines; caches what repeats from record to record.

    Time text is cached per second and source tokens per (file, line, function), so
    the common record costs one f-string and one regex search.
    """

    __slots__ = ("_prefix", "_second", "_sources")

    def __init__(self) -> None:
        self._second: int | None = None
        self._prefix = ""
        self._sources: dict[tuple[str, int, str], str] = {}

    def time_text(self, time_ns: int) -> str:
        second, rest = divmod(time_ns, 1_000_000_000)
        if second != self._second:
            self._second = second
            tm = time.gmtime(second)
            # The year by hand: strftime("%Y") does not pad years below 1000.
            self._prefix = f"{tm.tm_year:04d}" + time.strftime("-%m-%dT%H:%M:%S", tm)
        return f"{self._prefix}.{rest // 1000:06d}Z"

    def line(self, time_ns: int, origin: Origin, record: Record) -> str:
        """The line for ``record`` without its newline."""
        key = (record.file, record.line, record.function)
        source = self._sources.get(key)
        if source is None:
            if len(self._sources) >= 4096:
                self._sources.clear()
            source = self._sources[key] = format_source(record)
        mono = record.mono_ns
        uptime = "-" if mono is None else f"+{mono // 1000000000}.{mono % 1000000000:09d}"
        message = record.message
        if _CONTROL.search(message):
            message = _CONTROL.sub(_escape_char, message)
        line = (
            f"{self.time_text(time_ns)} {SEVERITY_NAMES[record.severity]} "
            f"{_ORIGIN_KIND[origin, record.kind]} {record.seq} {uptime} {source} {message}"
        )
        if record.fields:
            return f"{line}\t{format_fields(record.fields)}"
        return line


def format_record_line(time_ns: int, origin: Origin, record: Record) -> str:
    """The line for ``record`` without its newline (uncached; see LineFormatter)."""
    return LineFormatter().line(time_ns, origin, record)


@dataclass(frozen=True, slots=True)
class BootLine:
    boot: str
    library: str
    peer: str
    name: str


@dataclass(frozen=True, slots=True)
class DroppedLine:
    boot: str
    count: int
    through_seq: int


@dataclass(frozen=True, slots=True)
class RecordLine:
    time_ns: int
    origin: Origin
    record: Record


def _meta_value(text: str) -> str:
    """A boot line value: '-' stands for empty, so a real '-' is escaped."""
    value = _escape_token(text, _KEY_BAD)
    return "\\x2d" if value == "-" else value or "-"


def format_boot_line(boot: BootLine) -> str:
    return (
        f"# boot {boot.boot} lib={_meta_value(boot.library)} "
        f"peer={_meta_value(boot.peer)} name={_meta_value(boot.name)}"
    )


def format_dropped_line(dropped: DroppedLine) -> str:
    return f"# dropped {dropped.boot} count={dropped.count} through={dropped.through_seq}"


def _meta(text: str) -> dict[str, str]:
    out = {}
    for word in text.split(" "):
        key, _, value = word.partition("=")
        out[key] = "" if value == "-" else unescape(value)
    return out


def parse_line(line: str) -> BootLine | DroppedLine | RecordLine | None:
    """What one line (without newline) says; None for comments it does not know."""
    if line.startswith("#"):
        parts = line.split(" ", 3)
        if len(parts) >= 3 and parts[1] == "boot":
            meta = _meta(parts[3]) if len(parts) > 3 else {}
            return BootLine(
                parts[2], meta.get("lib", ""), meta.get("peer", ""), meta.get("name", "")
            )
        if len(parts) >= 3 and parts[1] == "dropped":
            meta = _meta(parts[3]) if len(parts) > 3 else {}
            try:
                return DroppedLine(parts[2], int(meta["count"]), int(meta["through"]))
            except (KeyError, ValueError) as exc:
                raise LineError(f"bad drop notice {line!r}") from exc
        return None
    parts = line.split(" ", 6)
    if len(parts) != 7:
        raise LineError(f"too few words in {line[:80]!r}")
    time_text, severity_text, origin_text, seq_text, uptime_text, source, rest = parts
    severity = _SEVERITY_BY_NAME.get(severity_text)
    if severity is None:
        raise LineError(f"unknown severity {severity_text!r}")
    origin_name, _, kind_name = origin_text.partition("/")
    try:
        origin = _ORIGIN_BY_NAME[origin_name]
        kind = _KIND_BY_NAME[kind_name] if kind_name else Kind.LOG
        seq = int(seq_text)
        mono: int | None = None
        if uptime_text != "-":
            whole, _, frac = uptime_text[1:].partition(".")
            mono = int(whole) * 1_000_000_000 + int(frac)
    except (ValueError, KeyError) as exc:
        raise LineError(f"bad record line {line[:80]!r}") from exc
    file = function = ""
    line_no = 0
    if source != "-":
        file_text, _, tail = source.partition(":")
        line_text, _, func_text = tail.partition(":")
        file, function = unescape(file_text), unescape(func_text)
        if line_text.isdigit() and not (_is_digits(line_text) and len(line_text) <= 20):
            raise LineError(f"bad source line number in {line[:80]!r}")
        line_no = int(line_text) if line_text.isdigit() else 0
    message, tab, field_text = rest.partition("\t")
    fields = parse_fields(field_text) if tab else ()
    record = Record(
        seq, severity, unescape(message), kind, mono, None, file, line_no, function, fields
    )
    return RecordLine(parse_time(time_text), origin, record)
