"""The OTLP encoder, checked with the official protobuf classes; the response readers."""

from __future__ import annotations

import contextlib
import importlib.metadata
import socket
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2

from umonitor.errors import ProtocolError, UsageError
from umonitor.export.base import ExportItem
from umonitor.export.http_exchange import ClientConnection, HttpResponse
from umonitor.export.otlp import MAX_BODY, OtlpHttpSink
from umonitor.protocol.otlp_logs import (
    SEVERITY_NUMBERS,
    LogsEncoder,
    parse_partial_success_untrusted,
)
from umonitor.records import Fields, Kind, Origin, Record, Severity, StoredRecord

NS = 1_000_000_000
T0 = 1_760_000_000 * NS
INT64_MAX = (1 << 63) - 1
HOST = "host-7.example"
VERSION = "1.2.3"
ENCODER = LogsEncoder(HOST, VERSION)


def encode_logs_request(items: Sequence[ExportItem]) -> bytes:
    return ENCODER.encode(items)


def encode_logs_requests(
    items: Sequence[ExportItem], max_body: int = MAX_BODY
) -> Iterator[tuple[int, bytes]]:
    return ENCODER.encode_split(items, max_body)


def item(
    instance: str = "web1",
    seq: int = 1,
    message: str = "hello",
    *,
    severity: Severity = Severity.INFO,
    kind: Kind = Kind.LOG,
    time_ns: int = T0,
    wall_ns: int | None = None,
    origin: Origin = Origin.APP,
    boot: str = "b00t",
    file: str = "",
    line: int = 0,
    function: str = "",
    fields: Fields = (),
) -> ExportItem:
    record = Record(seq, severity, message, kind, None, wall_ns, file, line, function, fields)
    return ExportItem(StoredRecord(instance, time_ns, origin, record), boot, f"{origin.value}.log")


def decode(body: bytes) -> logs_service_pb2.ExportLogsServiceRequest:
    return logs_service_pb2.ExportLogsServiceRequest.FromString(body)


def attributes(pairs: Sequence[common_pb2.KeyValue]) -> dict[str, Any]:
    """KeyValues as a dict, after checking that no key repeats."""
    keys = [kv.key for kv in pairs]
    assert len(keys) == len(set(keys)), keys
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in pairs}


def only_record(body: bytes) -> logs_pb2.LogRecord:
    [resource_logs] = decode(body).resource_logs
    [scope_logs] = resource_logs.scope_logs
    [record] = scope_logs.log_records
    return record


def severity_number(name: str) -> int:
    return logs_pb2.SeverityNumber.Value(f"SEVERITY_NUMBER_{name}")


# --- the log record -------------------------------------------------------------------


def test_every_field_of_a_full_record() -> None:
    body = encode_logs_request(
        [
            item(
                "web1",
                42,
                "disk full",
                severity=Severity.ERR,
                kind=Kind.CRASH,
                time_ns=T0 + 5,
                wall_ns=T0 - 7,
                origin=Origin.CONSOLE,
                boot="0123abcd",
                file="src/disk.c",
                line=118,
                function="flush",
                fields=(("disk", "sda"), ("free", "0")),
            )
        ]
    )
    record = only_record(body)
    assert record.time_unix_nano == T0 - 7
    assert record.observed_time_unix_nano == T0 + 5
    assert record.severity_number == severity_number("ERROR")
    assert record.severity_text == "err"
    assert record.body.WhichOneof("value") == "string_value"
    assert record.body.string_value == "disk full"
    assert attributes(record.attributes) == {
        "disk": "sda",
        "free": "0",
        "umonitor.origin": "console",
        "umonitor.seq": 42,
        "umonitor.boot": "0123abcd",
        "umonitor.kind": "crash",
        "code.file.path": "src/disk.c",
        "code.line.number": 118,
        "code.function.name": "flush",
    }
    assert record.attributes[0].key == "disk"  # the guest's fields first, in order
    assert record.dropped_attributes_count == 0
    assert record.flags == 0 and record.trace_id == b"" and record.span_id == b""


def test_a_bare_record_has_only_what_it_knows() -> None:
    record = only_record(encode_logs_request([item(seq=3, boot="", origin=Origin.SYSLOG)]))
    assert attributes(record.attributes) == {"umonitor.origin": "syslog", "umonitor.seq": 3}


def test_without_a_guest_clock_the_time_is_when_it_was_stored() -> None:
    record = only_record(encode_logs_request([item(time_ns=T0 + 9, wall_ns=None)]))
    assert record.time_unix_nano == record.observed_time_unix_nano == T0 + 9


def test_a_guest_clock_at_zero_is_still_used() -> None:
    record = only_record(encode_logs_request([item(time_ns=T0, wall_ns=0)]))
    assert record.time_unix_nano == 0
    assert record.observed_time_unix_nano == T0


@pytest.mark.parametrize(
    ("wall_ns", "sent"),
    [(-1, 0), (-(10**30), 0), ((1 << 64) - 1, (1 << 64) - 1), (1 << 70, (1 << 64) - 1)],
)
def test_times_out_of_range_are_clamped(wall_ns: int, sent: int) -> None:
    assert only_record(encode_logs_request([item(wall_ns=wall_ns)])).time_unix_nano == sent


@pytest.mark.parametrize(
    ("seq", "sent"),
    [(0, 0), (1, 1), (INT64_MAX, INT64_MAX), ((1 << 64) - 1, INT64_MAX), (-5, -5)],
)
def test_seq_is_an_int64(seq: int, sent: int) -> None:
    record = only_record(encode_logs_request([item(seq=seq)]))
    assert attributes(record.attributes)["umonitor.seq"] == sent


@pytest.mark.parametrize(
    ("severity", "number", "text"),
    [
        (Severity.EMERG, "FATAL4", "emerg"),
        (Severity.ALERT, "FATAL2", "alert"),
        (Severity.CRIT, "FATAL", "crit"),
        (Severity.ERR, "ERROR", "err"),
        (Severity.WARNING, "WARN", "warning"),
        (Severity.NOTICE, "INFO2", "notice"),
        (Severity.INFO, "INFO", "info"),
        (Severity.DEBUG, "DEBUG", "debug"),
    ],
)
def test_severity_mapping(severity: Severity, number: str, text: str) -> None:
    record = only_record(encode_logs_request([item(severity=severity)]))
    assert record.severity_number == severity_number(number)
    assert record.severity_text == text


@pytest.mark.parametrize(
    ("kind", "label"), [(Kind.LOG, None), (Kind.ENTER, "enter"), (Kind.EXIT, "exit")]
)
def test_kind(kind: Kind, label: str | None) -> None:
    sent = attributes(only_record(encode_logs_request([item(kind=kind)])).attributes)
    assert sent.get("umonitor.kind") == label


@pytest.mark.parametrize(
    ("file", "line", "function", "expected"),
    [
        ("a.c", 0, "", {"code.file.path": "a.c"}),
        ("", 7, "", {"code.line.number": 7}),
        ("", 0, "main", {"code.function.name": "main"}),
        ("", -3, "", {}),
    ],
)
def test_code_location_parts_go_separately(
    file: str, line: int, function: str, expected: dict[str, Any]
) -> None:
    sent = attributes(
        only_record(encode_logs_request([item(file=file, line=line, function=function)])).attributes
    )
    assert {k: v for k, v in sent.items() if k.startswith("code.")} == expected


@pytest.mark.parametrize(
    "message",
    [
        "",
        "ünïcödé",
        "日本語のログ",
        "emoji 🚀 and zwj 👩‍💻",
        "nul \x00 inside",
        "tab\tand\nnewline",
    ],
)
def test_messages_arrive_unchanged(message: str) -> None:
    record = only_record(encode_logs_request([item(message=message)]))
    assert record.body.WhichOneof("value") == "string_value"
    assert record.body.string_value == message


def test_lone_surrogates_become_replacement_characters() -> None:
    body = encode_logs_request(
        [item("vm\udcff", message="bad \udc80 byte", fields=(("k\ud800", "v\udfff"),))]
    )
    [resource_logs] = decode(body).resource_logs
    assert attributes(resource_logs.resource.attributes)["service.name"] == "vm\ufffd"
    record = resource_logs.scope_logs[0].log_records[0]
    assert record.body.string_value == "bad \ufffd byte"
    assert attributes(record.attributes)["k\ufffd"] == "v\ufffd"


def test_a_repeated_field_keeps_its_last_value() -> None:
    fields = (("a", "1"), ("b", "2"), ("a", "3"))
    record = only_record(encode_logs_request([item(fields=fields)]))
    assert [kv.key for kv in record.attributes][:2] == ["a", "b"]
    assert attributes(record.attributes)["a"] == "3"


def test_umonitor_keys_win_over_fields_of_the_same_name() -> None:
    fields = (("umonitor.seq", "forged"), ("code.line.number", "x"), ("umonitor.kind", "k"))
    record = only_record(encode_logs_request([item(seq=9, line=4, fields=fields)]))
    sent = attributes(record.attributes)
    assert sent["umonitor.seq"] == 9
    assert sent["code.line.number"] == 4
    assert sent["umonitor.kind"] == "k"  # a plain log has no kind of its own to give


# --- resources and grouping -----------------------------------------------------------


def test_resource_and_scope() -> None:
    [resource_logs] = decode(encode_logs_request([item("db-2")])).resource_logs
    assert attributes(resource_logs.resource.attributes) == {
        "service.name": "db-2",
        "service.instance.id": "db-2",
        "umonitor.instance": "db-2",
        "host.name": HOST,
    }
    [scope_logs] = resource_logs.scope_logs
    assert scope_logs.scope.name == "umonitor"
    assert scope_logs.scope.version == VERSION


def test_a_scope_without_a_version_leaves_it_out() -> None:
    [resource_logs] = decode(LogsEncoder("h").encode([item("db-2")])).resource_logs
    scope = resource_logs.scope_logs[0].scope
    assert (scope.name, scope.version) == ("umonitor", "")
    assert [field.name for field, _ in scope.ListFields()] == ["name"]


def test_the_sink_names_this_host_and_the_installed_version() -> None:
    from umonitor.export.otlp import _encoder

    [resource_logs] = decode(_encoder().encode([item("db-2")])).resource_logs
    assert attributes(resource_logs.resource.attributes)["host.name"] == socket.gethostname()
    version = resource_logs.scope_logs[0].scope.version
    assert version == importlib.metadata.version("umonitor")


def test_instances_are_grouped_in_first_seen_order() -> None:
    items = [item("b", 1), item("a", 1), item("b", 2), item("c", 1), item("a", 2), item("b", 3)]
    request = decode(encode_logs_request(items))
    seen = []
    for resource_logs in request.resource_logs:
        name = attributes(resource_logs.resource.attributes)["service.name"]
        [scope_logs] = resource_logs.scope_logs
        seqs = [attributes(r.attributes)["umonitor.seq"] for r in scope_logs.log_records]
        seen.append((name, seqs))
    assert seen == [("b", [1, 2, 3]), ("a", [1, 2]), ("c", [1])]


def test_no_items_make_an_empty_request() -> None:
    assert encode_logs_request([]) == b""
    assert list(encode_logs_requests([])) == []


# --- properties -----------------------------------------------------------------------

names = st.text(min_size=1, max_size=20)
int64s = st.integers(min_value=-(1 << 63), max_value=INT64_MAX)
items_strategy = st.builds(
    item,
    names,
    int64s,
    st.text(),
    severity=st.sampled_from(Severity),
    kind=st.sampled_from(Kind),
    time_ns=st.integers(min_value=0, max_value=(1 << 64) - 1),
    wall_ns=st.none() | st.integers(min_value=0, max_value=(1 << 64) - 1),
    origin=st.sampled_from(Origin),
    boot=st.text(max_size=16),
    file=st.text(max_size=30),
    line=st.integers(min_value=0, max_value=INT64_MAX),
    function=st.text(max_size=30),
    fields=st.lists(st.tuples(st.text(max_size=12), st.text()), max_size=6).map(tuple),
)


def expected_attributes(it: ExportItem) -> dict[str, Any]:
    record = it.stored.record
    want: dict[str, Any] = dict(record.fields)
    want["umonitor.origin"] = it.stored.origin.value
    want["umonitor.seq"] = record.seq
    if it.boot:
        want["umonitor.boot"] = it.boot
    if record.kind != Kind.LOG:
        want["umonitor.kind"] = record.kind.name.lower()
    if record.file:
        want["code.file.path"] = record.file
    if record.line:
        want["code.line.number"] = record.line
    if record.function:
        want["code.function.name"] = record.function
    return want


def official_request(items: Sequence[ExportItem]) -> logs_service_pb2.ExportLogsServiceRequest:
    """The request the official classes build for ``items``: what ours must decode to."""
    request = logs_service_pb2.ExportLogsServiceRequest()
    groups: dict[str, logs_pb2.ScopeLogs] = {}
    for it in items:
        scope_logs = groups.get(it.instance)
        if scope_logs is None:
            resource_logs = request.resource_logs.add()
            for key in ("service.name", "service.instance.id", "umonitor.instance"):
                resource_logs.resource.attributes.add(key=key).value.string_value = it.instance
            resource_logs.resource.attributes.add(key="host.name").value.string_value = HOST
            scope_logs = groups[it.instance] = resource_logs.scope_logs.add()
            scope_logs.scope.name = "umonitor"
            scope_logs.scope.version = VERSION
        record = it.stored.record
        log = scope_logs.log_records.add()
        log.time_unix_nano = record.wall_ns if record.wall_ns is not None else it.stored.time_ns
        log.observed_time_unix_nano = it.stored.time_ns
        log.severity_number = SEVERITY_NUMBERS[record.severity]
        log.severity_text = record.severity.label
        log.body.string_value = record.message
        for key, value in expected_attributes(it).items():
            kv = log.attributes.add(key=key)
            if isinstance(value, str):
                kv.value.string_value = value
            else:
                kv.value.int_value = value
    return request


@settings(max_examples=150)
@given(st.lists(items_strategy, min_size=1, max_size=8))
def test_arbitrary_items_decode_to_what_the_official_classes_build(
    items: list[ExportItem],
) -> None:
    assert decode(encode_logs_request(items)) == official_request(items)


@settings(max_examples=150)
@given(
    st.lists(
        st.builds(
            item,
            names,
            int64s,
            st.text(),
            severity=st.sampled_from(Severity),
            kind=st.sampled_from(Kind),
            time_ns=st.integers(min_value=1, max_value=(1 << 64) - 1),
            wall_ns=st.none() | st.integers(min_value=1, max_value=(1 << 64) - 1),
            origin=st.sampled_from(Origin),
            boot=st.text(max_size=16),
            file=st.text(max_size=30),
            line=st.integers(min_value=0, max_value=INT64_MAX),
            function=st.text(max_size=30),
            fields=st.lists(st.tuples(st.text(min_size=1, max_size=12), st.text()), max_size=6).map(
                tuple
            ),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_the_bytes_are_the_official_classes_bytes(items: list[ExportItem]) -> None:
    # The official serializer leaves out fields at their default (a zero time, an empty
    # key), which ours writes; away from those the two must agree byte for byte.
    assert encode_logs_request(items) == official_request(items).SerializeToString()


@settings(max_examples=150)
@given(st.lists(items_strategy, min_size=1, max_size=8))
def test_arbitrary_items_round_trip_through_the_official_decoder(
    items: list[ExportItem],
) -> None:
    request = decode(encode_logs_request(items))
    order = list(dict.fromkeys(it.instance for it in items))
    assert [attributes(r.resource.attributes)["service.name"] for r in request.resource_logs] == (
        order
    )
    for resource_logs, instance in zip(request.resource_logs, order, strict=True):
        mine = [it for it in items if it.instance == instance]
        [scope_logs] = resource_logs.scope_logs
        assert len(scope_logs.log_records) == len(mine)
        for got, it in zip(scope_logs.log_records, mine, strict=True):
            record = it.stored.record
            assert got.body.string_value == record.message
            assert got.severity_text == record.severity.label
            wall = record.wall_ns
            assert got.time_unix_nano == (wall if wall is not None else it.stored.time_ns)
            assert got.observed_time_unix_nano == it.stored.time_ns
            assert attributes(got.attributes) == expected_attributes(it)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.builds(item, st.sampled_from(["a", "bb", "ccc"]), st.integers(0, 10**6), st.text()),
        max_size=40,
    ),
    st.integers(min_value=100, max_value=3000),
)
def test_split_requests_are_bounded_runs_of_whole_items(
    items: list[ExportItem], limit: int
) -> None:
    start = 0
    for count, body in encode_logs_requests(items, limit):
        assert count >= 1
        assert len(body) <= limit or count == 1
        run = items[start : start + count]
        request = decode(body)
        got = sorted(
            (attributes(rl.resource.attributes)["service.name"], r.body.string_value)
            for rl in request.resource_logs
            for r in rl.scope_logs[0].log_records
        )
        assert got == sorted((it.instance, it.stored.record.message) for it in run)
        start += count
    assert start == len(items)


def test_a_body_under_the_limit_is_one_request() -> None:
    items = [item(str(n % 3), n, "x" * 50) for n in range(100)]
    [(count, body)] = list(encode_logs_requests(items))
    assert count == 100 and body == encode_logs_request(items)


# --- partial success and error bodies -------------------------------------------------


def partial(rejected: int, message: str) -> bytes:
    response = logs_service_pb2.ExportLogsServiceResponse()
    response.partial_success.rejected_log_records = rejected
    response.partial_success.error_message = message
    return response.SerializeToString()


def test_partial_success_is_read() -> None:
    assert parse_partial_success_untrusted(partial(3, "too old")) == (3, "too old")
    assert parse_partial_success_untrusted(b"") == (0, "")
    assert parse_partial_success_untrusted(partial(0, "just a warning")) == (0, "just a warning")
    assert parse_partial_success_untrusted(partial(-4, "")) == (0, "")


@given(st.integers(min_value=0, max_value=INT64_MAX), st.text(max_size=150))
def test_partial_success_agrees_with_the_official_classes(rejected: int, message: str) -> None:
    one_line = " ".join("".join(c if c.isprintable() else " " for c in message).split())
    assert parse_partial_success_untrusted(partial(rejected, message)) == (rejected, one_line)


@settings(max_examples=500)
@given(st.binary(max_size=64))
def test_arbitrary_response_bytes_only_raise_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        parse_partial_success_untrusted(data)


# --- reading HTTP answers (h11 inside) ------------------------------------------------


def answering(max_body: int = 1 << 20) -> ClientConnection:
    """A client connection that has sent its request and waits for the answer."""
    connection = ClientConnection(max_body)
    connection.send_request("POST", "/v1/logs", [(b"Host", b"collector")], b"x")
    return connection


def parse(data: bytes, *, eof: bool = False, max_body: int = 1 << 20) -> HttpResponse | None:
    connection = answering(max_body)
    connection.receive_data(data)
    if eof:
        connection.receive_data(b"")
    return connection.next_response_untrusted()


def test_the_request_is_framed_by_content_length() -> None:
    connection = ClientConnection()
    raw = b"".join(connection.send_request("POST", "/v1/logs", [(b"Host", b"c:4318")], b"\x0a\x00"))
    assert raw == (b"POST /v1/logs HTTP/1.1\r\nHost: c:4318\r\nContent-Length: 2\r\n\r\n\x0a\x00")


def test_a_kept_connection_carries_the_next_request() -> None:
    connection = answering()
    connection.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
    first = connection.next_response_untrusted()
    assert first is not None and first.keep_alive
    connection.start_next_cycle()
    connection.send_request("POST", "/v1/logs", [(b"Host", b"collector")], b"y")
    connection.receive_data(b"HTTP/1.1 204 No Content\r\n\r\n")
    second = connection.next_response_untrusted()
    assert second is not None and (second.status, second.body) == (204, b"")


@pytest.mark.parametrize(
    ("raw", "eof", "status", "body", "keep_alive"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", False, 200, b"hi", True),
        (b"HTTP/1.1 200 OK\r\ncontent-length:0\r\n\r\n", False, 200, b"", True),
        (b"HTTP/1.1 204 No Content\r\n\r\n", False, 204, b"", True),
        (b"HTTP/1.1 200\r\nContent-Length: 1\r\n\r\nx", False, 200, b"x", True),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", False, 200, b"",
         False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", False, 200, b"", False),
        (b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n", False, 200,
         b"", False),  # h11 keeps no HTTP/1.0 connection alive
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", True, 200, b"x", False),
        (b"HTTP/1.1 503 Busy\r\nRetry-After: 3\r\n\r\nlater", True, 503, b"later", False),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"3;ext=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nTrailer: x\r\n\r\n", False, 200,
         b"abc0123456789abcdef", True),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
         False, 201, b"", True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nextra", False, 200, b"", False),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", False, 200,
         b"abc", True),
    ],
)  # fmt: skip
def test_responses(raw: bytes, eof: bool, status: int, body: bytes, keep_alive: bool) -> None:
    response = parse(raw, eof=eof)
    assert response is not None
    assert (response.status, response.body, response.keep_alive) == (status, body, keep_alive)


def test_headers_are_kept_in_lower_case() -> None:
    response = parse(b"HTTP/1.1 429 Slow Down\r\nRetry-After:  7 \r\nX-A: 1\r\nx-a: 2\r\n\r\n")
    assert response is None  # no length: the body runs to the end of the connection
    response = parse(
        b"HTTP/1.1 429 Slow Down\r\nRetry-After:  7 \r\nX-A: 1\r\nx-a: 2\r\n\r\n", eof=True
    )
    assert response is not None and response.reason == "Slow Down"
    assert response.header("retry-after") == "7"
    assert response.header("x-a") == "2"
    assert response.header("missing") is None


@pytest.mark.parametrize(
    ("raw", "eof", "error"),
    [
        (b"", True, "without answering"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc", True, "in the middle"),
        (b"HTTP/1.1 200 OK\r\n", True, "in the middle"),
        (b"SMTP ready\r\n\r\n", False, "status line"),
        (b"HTTP/2 200 OK\r\n\r\n", False, "status line"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", False, "status line"),
        (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", False, "header line"),
        (b"HTTP/1.1 200 OK\r\n folded: x\r\n\r\n", False, "continuation line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", False, "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\n", False, "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", False,
         "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n", False, "longer than"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", False, "chunk header"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcd", False, "chunk footer"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", False, "Transfer-Encoding"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 101 + b"\r\n", False, "more than 100"),
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n", False, "switched"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"y" * (70 << 10), False, "head longer"),
    ],
)  # fmt: skip
def test_malformed_responses(raw: bytes, eof: bool, error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        parse(raw, eof=eof)


def test_bodies_past_the_bound_are_refused_however_framed() -> None:
    head = b"HTTP/1.1 200 OK\r\n"
    with pytest.raises(ProtocolError, match="longer than 8"):
        parse(head + b"Transfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n5\r\nfghi", max_body=8)
    with pytest.raises(ProtocolError, match="longer than 8"):
        parse(head + b"\r\n" + b"x" * 9, max_body=8)


responses = st.sampled_from(
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n1\r\n!\r\n0\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 400 Bad\r\nContent-Length: 3\r\n\r\nbad",
        b"HTTP/1.0 500 Oops\r\n\r\nuntil the end",
    ]
)


@settings(max_examples=300)
@given(responses, st.data())
def test_bytes_whole_or_in_pieces_give_the_same_response(raw: bytes, data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=8)))
    pieces = [raw[start:end] for start, end in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    connection = answering()
    got = None
    for piece in pieces:
        if piece:  # an empty piece would mean the end of the connection
            connection.receive_data(piece)
        got = got or connection.next_response_untrusted()
    if got is None:
        connection.receive_data(b"")
        got = connection.next_response_untrusted()
    assert got is not None
    assert got == (parse(raw) or parse(raw, eof=True))


@settings(max_examples=500)
@given(st.binary(max_size=200), st.booleans())
def test_arbitrary_bytes_parse_or_raise_protocol_error(data: bytes, eof: bool) -> None:
    for raw in (data, b"HTTP/1.1 200 OK\r\n" + data):
        with contextlib.suppress(ProtocolError):
            parse(raw, eof=eof)


# --- google.rpc.Status in error answers -----------------------------------------------


def status_class() -> Any:
    """google.rpc.Status, built by the protobuf library from its definition."""
    proto = descriptor_pb2.FileDescriptorProto(name="status_for_test.proto", package="google.rpc")
    message = proto.message_type.add(name="Status")
    message.field.add(name="code", number=1, type=5, label=1)  # int32
    message.field.add(name="message", number=2, type=9, label=1)  # string
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("google.rpc.Status"))


def test_error_detail_comes_from_a_status_body() -> None:
    body = status_class()(code=3, message="log record too\nbig").SerializeToString()
    response = HttpResponse(400, "Bad Request", (("content-type", "application/x-protobuf"),),
                            body, True)  # fmt: skip
    assert OtlpHttpSink._error_detail(response) == ": log record too big"
    text = HttpResponse(400, "Bad Request", (("content-type", "text/plain"),), b"no\tway", True)
    assert OtlpHttpSink._error_detail(text) == ": no way"


# --- the sink's configuration ---------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("http://127.0.0.1:4318/v1/logs", "otlp+http://127.0.0.1:4318/v1/logs"),
        ("http://collector:4318", "otlp+http://collector:4318/v1/logs"),
        ("http://collector:4318/", "otlp+http://collector:4318/v1/logs"),
        ("https://otel.example.com/otlp/v1/logs", "otlp+https://otel.example.com:443/otlp/v1/logs"),
        ("HTTP://Example.COM", "otlp+http://example.com:80/v1/logs"),
        ("http://[::1]:4318/v1/logs?tenant=a", "otlp+http://[::1]:4318/v1/logs?tenant=a"),
    ],
)
def test_target(url: str, target: str) -> None:
    assert OtlpHttpSink(url).target == target


@pytest.mark.parametrize(
    ("url", "kwargs", "error"),
    [
        ("grpc://collector:4317", {}, "http:// or https://"),
        ("collector:4318", {}, "http:// or https://"),
        ("http://collector:99999/", {}, "bad port"),
        ("http:///v1/logs", {}, "no host"),
        ("http://user:pw@collector:4318", {}, "credentials"),
        ("http://collector:4318", {"headers": {"Content-Length": "1"}}, "set by umonitor"),
        ("http://collector:4318", {"headers": {"X-Evil": "a\r\nHost: b"}}, "line break"),
        ("http://collector:4318", {"headers": {"Bad Name": "x"}}, "header name"),
        ("http://collector:4318", {"headers": {"X-Key": "日本"}}, "Latin-1"),
        ("http://collector:4318", {"compression": "zstd"}, "compression"),
        ("http://collector:4318", {"timeout": 0}, "positive"),
        ("http://collector:4318/v1/a b", {}, "bad request"),
    ],
)
def test_bad_configuration_is_a_usage_error(url: str, kwargs: dict[str, Any], error: str) -> None:
    with pytest.raises(UsageError, match=error):
        OtlpHttpSink(url, **kwargs)


def test_a_tls_context_needs_https() -> None:
    import ssl

    with pytest.raises(UsageError, match="plain-HTTP"):
        OtlpHttpSink("http://collector:4318", ssl_context=ssl.create_default_context())


def test_spaces_around_a_header_value_are_not_sent() -> None:
    # h11 refuses them in a value, and HTTP does not count them as part of it.
    sink = OtlpHttpSink("http://collector:4318", headers={"Authorization": " Bearer x\t"})
    assert sink._headers[-1] == (b"Authorization", b"Bearer x")
