"""OTLP logs on the wire: ``ExportLogsServiceRequest`` written, the answers read.

How this works: ``LogsEncoder`` writes an ``ExportLogsServiceRequest`` by hand
(varints and length-prefixed fields; the field numbers below are taken from the
opentelemetry-proto ``.proto`` files and checked by the tests, which decode with the
official classes; docs/benchmarks.md says why it is written here rather than built
with those classes). Entries become one ``ResourceLogs`` per instance, in first-seen
order, each holding one ``ScopeLogs`` (scope ``umonitor``, with the version the
encoder was given) with the instance's records in the order given. What reads a
server's answer ends in ``_untrusted`` and can raise only ``ProtocolError``. Nothing
here does I/O: the host name and version come from the caller (export/otlp.py).

Severity, RFC 5424 → OTel ``SeverityNumber``::

    emerg   → FATAL4 (24)      warning → WARN  (13)
    alert   → FATAL2 (22)      notice  → INFO2 (10)
    crit    → FATAL  (21)      info    → INFO   (9)
    err     → ERROR  (17)      debug   → DEBUG  (5)

The example table in the OTel data model's appendix puts crit and alert among the
errors (ERROR2, ERROR3) and only emerg at FATAL. Here crit is where the names
``fatal`` and ``critical``, Python's ``logging.CRITICAL`` and the supervisor's crash
records land, and OTel's own SDKs map those to FATAL; so crit opens the FATAL range
and alert and emerg sit above it, emerg at the top of the scale.

Resource (one per instance): ``service.name``, ``service.instance.id`` and
``umonitor.instance`` are the instance name; ``host.name`` is the name
the encoder was given (the collector's host).

Log record: ``time_unix_nano`` is the guest's wall clock when it sent one, else the
time the collector stored the record, which is always ``observed_time_unix_nano``;
``severity_text`` is the RFC 5424 name (``err``, ``warning``…); ``body`` is the
message as a string. Attributes, all strings unless marked:

- each record field as given; a key given twice keeps its last value (the OTel data
  model requires unique keys, and backends disagree on which duplicate they keep);
- ``umonitor.origin`` (``app``, ``console``, ``syslog``), ``umonitor.seq`` (int),
  ``umonitor.boot`` (left out when unknown), ``umonitor.kind`` (``enter``, ``exit``,
  ``crash``; left out for plain logs);
- ``code.file.path``, ``code.line.number`` (int), ``code.function.name``, each when
  the record has it (current semantic-conventions names; ``code.filepath``,
  ``code.lineno`` and ``code.function`` are their deprecated forms).

umonitor's own keys win over a record field of the same name. Text that is not
valid Unicode (lone surrogates) is sent with U+FFFD in their place.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator, Sequence
from typing import Protocol

from umonitor.errors import ProtocolError
from umonitor.records import Kind, Severity, StoredRecord

SCOPE_NAME = "umonitor"

SEVERITY_NUMBERS: dict[Severity, int] = {
    Severity.EMERG: 24,  # FATAL4
    Severity.ALERT: 22,  # FATAL2
    Severity.CRIT: 21,  # FATAL
    Severity.ERR: 17,  # ERROR
    Severity.WARNING: 13,  # WARN
    Severity.NOTICE: 10,  # INFO2
    Severity.INFO: 9,  # INFO
    Severity.DEBUG: 5,  # DEBUG
}

ATTR_ORIGIN = "umonitor.origin"
ATTR_SEQ = "umonitor.seq"
ATTR_BOOT = "umonitor.boot"
ATTR_KIND = "umonitor.kind"
ATTR_INSTANCE = "umonitor.instance"
ATTR_CODE_FILE = "code.file.path"
ATTR_CODE_LINE = "code.line.number"
ATTR_CODE_FUNCTION = "code.function.name"


class LogEntry(Protocol):
    """One stored record and the boot it was numbered in (export's ``ExportItem`` is one)."""

    @property
    def stored(self) -> StoredRecord: ...

    @property
    def boot(self) -> str:
        """The boot (or connection) id; "" if unknown."""
        ...


# --- protobuf, written --------------------------------------------------------------

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5  # wire types
_U64_MASK = (1 << 64) - 1
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_FIXED64 = struct.Struct("<Q")  # fixed64: 8 bytes, little-endian
_ONE_BYTE = tuple(bytes((n,)) for n in range(0x80))
_SURROGATE = re.compile("[\ud800-\udfff]")


def _varint(value: int) -> bytes:
    """``value`` (0 … 2**64-1) as a protobuf varint: 7 bits a byte, low first."""
    if value < 0x80:
        return _ONE_BYTE[value]
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _tag(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    return tag + _varint(len(payload)) + payload


def _uint64(value: int) -> int:
    return min(max(value, 0), _U64_MASK)


def _int64(value: int) -> int:
    """``value`` clamped to int64, as the 64-bit pattern protobuf puts in a varint."""
    return min(max(value, _INT64_MIN), _INT64_MAX) & _U64_MASK


def _utf8(text: str) -> bytes:
    """``text`` as UTF-8, with U+FFFD for lone surrogates (which UTF-8 cannot hold)."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text).encode()


# opentelemetry/proto/common/v1/common.proto
_ANY_VALUE_STRING = _tag(1, _LEN)
_ANY_VALUE_INT = _tag(3, _VARINT)
_KEY_VALUE_KEY = _tag(1, _LEN)
_KEY_VALUE_VALUE = _tag(2, _LEN)
_SCOPE_NAME = _tag(1, _LEN)
_SCOPE_VERSION = _tag(2, _LEN)
# opentelemetry/proto/resource/v1/resource.proto
_RESOURCE_ATTRIBUTES = _tag(1, _LEN)
# opentelemetry/proto/logs/v1/logs.proto
_RESOURCE_LOGS_RESOURCE = _tag(1, _LEN)
_RESOURCE_LOGS_SCOPE_LOGS = _tag(2, _LEN)
_SCOPE_LOGS_SCOPE = _tag(1, _LEN)
_SCOPE_LOGS_LOG_RECORDS = _tag(2, _LEN)
_LOG_RECORD_TIME = _tag(1, _I64)
_LOG_RECORD_SEVERITY_NUMBER = _tag(2, _VARINT)
_LOG_RECORD_SEVERITY_TEXT = _tag(3, _LEN)
_LOG_RECORD_BODY = _tag(5, _LEN)
_LOG_RECORD_ATTRIBUTES = _tag(6, _LEN)
_LOG_RECORD_OBSERVED_TIME = _tag(11, _I64)
# opentelemetry/proto/collector/logs/v1/logs_service.proto
_REQUEST_RESOURCE_LOGS = _tag(1, _LEN)
_RESPONSE_PARTIAL_SUCCESS = 1  # field numbers for reading
_PARTIAL_SUCCESS_REJECTED = 1
_PARTIAL_SUCCESS_MESSAGE = 2
# google/rpc/status.proto, the body of an OTLP error answer
_STATUS_MESSAGE = 2

# Most bytes the wrappers around a record or an instance's group can take: a tag
# byte and a length of at most 5 bytes for each length-delimited level.
_RECORD_WRAPPING = 1 + 5
_GROUP_WRAPPING = 2 * (1 + 5)


def _attribute(key: str, value: str | int) -> bytes:
    """A KeyValue with a string or int64 AnyValue."""
    if isinstance(value, str):
        any_value = _field(_ANY_VALUE_STRING, _utf8(value))
    else:
        any_value = _ANY_VALUE_INT + _varint(_int64(value))
    return _field(_KEY_VALUE_KEY, _utf8(key)) + _field(_KEY_VALUE_VALUE, any_value)


def _log_record(entry: LogEntry) -> bytes:
    """One LogRecord message (without its tag and length)."""
    stored = entry.stored
    record = stored.record
    attributes: dict[str, str | int] = dict(record.fields)
    attributes[ATTR_ORIGIN] = stored.origin.value
    attributes[ATTR_SEQ] = record.seq
    if entry.boot:
        attributes[ATTR_BOOT] = entry.boot
    if record.kind != Kind.LOG:
        attributes[ATTR_KIND] = Kind(record.kind).name.lower()
    if record.file:
        attributes[ATTR_CODE_FILE] = record.file
    if record.line > 0:
        attributes[ATTR_CODE_LINE] = record.line
    if record.function:
        attributes[ATTR_CODE_FUNCTION] = record.function
    when = record.wall_ns if record.wall_ns is not None else stored.time_ns
    severity = Severity(record.severity)
    parts = [
        _LOG_RECORD_TIME,
        _FIXED64.pack(_uint64(when)),
        _LOG_RECORD_SEVERITY_NUMBER,
        _varint(SEVERITY_NUMBERS[severity]),
        _field(_LOG_RECORD_SEVERITY_TEXT, severity.label.encode()),
        _field(_LOG_RECORD_BODY, _field(_ANY_VALUE_STRING, _utf8(record.message))),
    ]
    parts.extend(_field(_LOG_RECORD_ATTRIBUTES, _attribute(k, v)) for k, v in attributes.items())
    parts += (_LOG_RECORD_OBSERVED_TIME, _FIXED64.pack(_uint64(stored.time_ns)))
    return b"".join(parts)


class LogsEncoder:
    """Writes ``ExportLogsServiceRequest`` bodies for one host and one umonitor version.

    ``host_name`` goes into every resource as ``host.name``; ``scope_version`` is the
    scope's version (left out when ""). The resource of each instance is written once
    and kept (up to ``_MAX_RESOURCES`` of them), as every batch repeats it.
    """

    _MAX_RESOURCES = 4096

    def __init__(self, host_name: str, scope_version: str = "") -> None:
        self._host_name = host_name
        scope = _field(_SCOPE_NAME, SCOPE_NAME.encode())
        if scope_version:
            scope += _field(_SCOPE_VERSION, _utf8(scope_version))
        self._scope_field = _field(_SCOPE_LOGS_SCOPE, scope)
        self._resources: dict[str, bytes] = {}

    def encode(self, entries: Sequence[LogEntry]) -> bytes:
        """``entries`` as one serialized ``ExportLogsServiceRequest``."""
        return self._assemble([(e.stored.instance, _log_record(e)) for e in entries])

    def encode_split(
        self, entries: Sequence[LogEntry], max_body: int
    ) -> Iterator[tuple[int, bytes]]:
        """``entries`` as request bodies of at most ``max_body`` bytes, each with its count.

        Each body holds the next run of whole entries, so the counts of the bodies a
        server took add up to how many entries from the start it has. An entry too big
        for a body of its own still goes, alone; the server may refuse it.
        """
        run: list[tuple[str, bytes]] = []
        instances: set[str] = set()
        size = 0  # an upper bound on the body ``run`` makes
        for entry in entries:
            instance = entry.stored.instance
            record = _log_record(entry)
            cost = _RECORD_WRAPPING + len(record)
            new_group = 0 if instance in instances else self._group_overhead(instance)
            if run and size + new_group + cost > max_body:
                yield len(run), self._assemble(run)
                run, instances, size = [], set(), 0
            if instance not in instances:
                instances.add(instance)
                size += self._group_overhead(instance)
            run.append((instance, record))
            size += cost
        if run:
            yield len(run), self._assemble(run)

    def _resource_field(self, instance: str) -> bytes:
        """The ResourceLogs.resource field for one instance."""
        field = self._resources.get(instance)
        if field is None:
            attributes = (
                ("service.name", instance),
                ("service.instance.id", instance),
                (ATTR_INSTANCE, instance),
                ("host.name", self._host_name),
            )
            resource = b"".join(
                _field(_RESOURCE_ATTRIBUTES, _attribute(k, v)) for k, v in attributes
            )
            field = _field(_RESOURCE_LOGS_RESOURCE, resource)
            if len(self._resources) >= self._MAX_RESOURCES:
                self._resources.clear()
            self._resources[instance] = field
        return field

    def _group_overhead(self, instance: str) -> int:
        return len(self._resource_field(instance)) + len(self._scope_field) + _GROUP_WRAPPING

    def _assemble(self, records: Sequence[tuple[str, bytes]]) -> bytes:
        """An ExportLogsServiceRequest from (instance, encoded LogRecord) pairs."""
        groups: dict[str, list[bytes]] = {}
        for instance, record in records:
            groups.setdefault(instance, []).append(record)
        out = []
        for instance, group in groups.items():
            records_field = b"".join(_field(_SCOPE_LOGS_LOG_RECORDS, r) for r in group)
            scope_logs = self._scope_field + records_field
            resource_logs = self._resource_field(instance) + _field(
                _RESOURCE_LOGS_SCOPE_LOGS, scope_logs
            )
            out.append(_field(_REQUEST_RESOURCE_LOGS, resource_logs))
        return b"".join(out)


# --- protobuf, read -------------------------------------------------------------------


def _varint_untrusted(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it."""
    value = shift = 0
    while shift < 70:
        if pos >= len(data):
            raise ProtocolError("truncated protobuf varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value & _U64_MASK, pos
        shift += 7
    raise ProtocolError("protobuf varint longer than 10 bytes")


def _fields_untrusted(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) for each field of one message: ints, or bytes for LEN."""
    pos = 0
    while pos < len(data):
        key, pos = _varint_untrusted(data, pos)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise ProtocolError("protobuf field number 0")
        value: int | bytes
        if wire_type == _VARINT:
            value, pos = _varint_untrusted(data, pos)
        elif wire_type in (_I64, _I32):
            end = pos + (8 if wire_type == _I64 else 4)
            if end > len(data):
                raise ProtocolError("truncated protobuf fixed-width field")
            value, pos = int.from_bytes(data[pos:end], "little"), end
        elif wire_type == _LEN:
            length, pos = _varint_untrusted(data, pos)
            if length > len(data) - pos:
                raise ProtocolError("protobuf field longer than its message")
            value, pos = data[pos : pos + length], pos + length
        else:
            raise ProtocolError(f"unsupported protobuf wire type {wire_type}")
        yield number, value


def text_untrusted(raw: bytes) -> str:
    """Server text fit for a one-line message: decoded, printable, bounded."""
    return one_line(raw.decode("utf-8", "replace"))


def one_line(text: str, limit: int = 200) -> str:
    """``text`` on one line: unprintable characters as spaces, runs of space as one."""
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_partial_success_untrusted(body: bytes) -> tuple[int, str]:
    """``(rejected_log_records, error_message)`` from an ExportLogsServiceResponse."""
    rejected, message = 0, ""
    for number, value in _fields_untrusted(body):
        if number != _RESPONSE_PARTIAL_SUCCESS or not isinstance(value, bytes):
            continue
        for inner, inner_value in _fields_untrusted(value):
            if inner == _PARTIAL_SUCCESS_REJECTED and isinstance(inner_value, int):
                as_int64 = inner_value - (1 << 64) if inner_value > _INT64_MAX else inner_value
                rejected = max(as_int64, 0)
            elif inner == _PARTIAL_SUCCESS_MESSAGE and isinstance(inner_value, bytes):
                message = text_untrusted(inner_value)
    return rejected, message


def status_message_untrusted(body: bytes) -> str:
    """The message of a google.rpc.Status, the body OTLP servers send with errors."""
    message = ""
    for number, value in _fields_untrusted(body):
        if number == _STATUS_MESSAGE and isinstance(value, bytes):
            message = text_untrusted(value)
    return message
