"""Syslog out: the RFC 5424 mapping, octet counting and the RELP codec, without sockets."""

from __future__ import annotations

import datetime
import re
import ssl
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from umonitor.collector.syslog_listeners import syslog_fields
from umonitor.errors import ProtocolError
from umonitor.export.base import ExportItem
from umonitor.export.relp_sink import RelpSink
from umonitor.export.syslog_sink import SyslogSink, format_item
from umonitor.protocol.relp import (
    MAX_RELP_DATA,
    RelpDecoder,
    RelpFrame,
    encode_relp,
    relp_offers_untrusted,
    relp_status_untrusted,
)
from umonitor.protocol.syslog import (
    FACILITIES,
    SyslogMessage,
    SyslogStreamDecoder,
    parse_syslog_untrusted,
)
from umonitor.protocol.syslog_format import FIELDS_SD_ID, UMONITOR_SD_ID, octet_counted, sd_name
from umonitor.records import Fields, Kind, Origin, Record, Severity, StoredRecord

BOM = b"\xef\xbb\xbf"
NS = 1_000_000_000
# 2026-11-26T16:10:10.123456789Z
T = 1_795_709_410 * NS + 123_456_789
STAMP = b"2026-11-26T16:10:10.123456Z"


def item(
    message: str = "hello",
    *,
    instance: str = "web-1",
    origin: Origin = Origin.APP,
    fields: Fields = (),
    severity: Severity = Severity.INFO,
    seq: int = 7,
    wall_ns: int | None = None,
    time_ns: int = T,
    boot: str = "b1",
    kind: Kind = Kind.LOG,
    file: str = "",
    line: int = 0,
    function: str = "",
) -> ExportItem:
    record = Record(seq, severity, message, kind, None, wall_ns, file, line, function, fields)
    return ExportItem(StoredRecord(instance, time_ns, origin, record), boot, "app.log")


OURS = b'[umonitor@32473 origin="app" seq="7" boot="b1"]'

# (name, item, the whole message expected)
CASES: list[tuple[str, ExportItem, bytes]] = [
    (
        "plain app record",
        item(),
        b"<14>1 " + STAMP + b" web-1 app - - " + OURS + b" hello",
    ),
    (
        "guest wall clock wins over the store's time",
        item(wall_ns=T + 3_600 * NS, severity=Severity.ERR),
        b"<11>1 2026-11-26T17:10:10.123456Z web-1 app - - " + OURS + b" hello",
    ),
    (
        "wall clock beyond year 9999 falls back to the store's time",
        item(wall_ns=300_000_000_000 * NS),
        b"<14>1 " + STAMP + b" web-1 app - - " + OURS + b" hello",
    ),
    (
        "before 1970 is still a time",
        item(wall_ns=-NS // 2),
        b"<14>1 1969-12-31T23:59:59.500000Z web-1 app - - " + OURS + b" hello",
    ),
    (
        "console record, no boot",
        item("boot ok", origin=Origin.CONSOLE, boot="", seq=1),
        b"<14>1 " + STAMP + b' web-1 console - - [umonitor@32473 origin="console" seq="1"] boot ok',
    ),
    (
        "source location and kind",
        item(kind=Kind.CRASH, file="main.c", line=42, function="run", severity=Severity.CRIT),
        b"<10>1 " + STAMP + b" web-1 app - - "
        b'[umonitor@32473 origin="app" seq="7" boot="b1" src="main.c:42:run" kind="crash"]'
        b" hello",
    ),
    (
        "enter record with only a function",
        item(kind=Kind.ENTER, function="f"),
        b"<14>1 " + STAMP + b" web-1 app - - "
        b'[umonitor@32473 origin="app" seq="7" boot="b1" src=":0:f" kind="enter"] hello',
    ),
    (
        "fields, in order, repeated keys kept",
        item(fields=(("user", "ann"), ("n", "1"), ("user", "bob"))),
        b"<14>1 "
        + STAMP
        + b" web-1 app - - "
        + OURS
        + b'[fields@32473 user="ann" n="1" user="bob"] hello',
    ),
    (
        "field keys made SD-NAMEs, values escaped",
        item(fields=(('a b=c]"d', 'say "hi" \\ [x]'), ("", "empty key"), ("k" * 40, "long"))),
        b"<14>1 "
        + STAMP
        + b" web-1 app - - "
        + OURS
        + b'[fields@32473 a_b_c__d="say \\"hi\\" \\\\ [x\\]" _="empty key" '
        + b"k" * 32
        + b'="long"] hello',
    ),
    (
        "facility, app, procid and msgid fields go to the header",
        item(
            origin=Origin.SYSLOG,
            fields=(
                ("facility", "local3"),
                ("hostname", "web-1"),
                ("app", "nginx"),
                ("procid", "812"),
                ("msgid", "ACCESS"),
            ),
            severity=Severity.WARNING,
        ),
        b"<156>1 " + STAMP + b" web-1 nginx 812 ACCESS "
        b'[umonitor@32473 origin="syslog" seq="7" boot="b1"] hello',
    ),
    (
        "what the header cannot carry unchanged is also a field",
        item(
            fields=(
                ("facility", "bogus"),
                ("hostname", "other"),
                ("app", "my app"),
                ("procid", "-"),
                ("msgid", "m" * 33),
            ),
        ),
        b"<14>1 "
        + STAMP
        + b" web-1 my_app - "
        + b"m" * 32
        + b" "
        + OURS
        + b'[fields@32473 facility="bogus" hostname="other" app="my app" procid="-" msgid="'
        + b"m" * 33
        + b'"] hello',
    ),
    (
        "incoming structured data goes back into its elements",
        item(
            origin=Origin.SYSLOG,
            fields=(
                ("facility", "user"),
                ("app", "su"),
                ("example@32473.iut", "3"),
                ("origin.ip", "192.0.2.1"),
                ("example@32473.eventID", "1011"),
                ("tag", "x"),
            ),
        ),
        b"<14>1 " + STAMP + b" web-1 su - - "
        b'[umonitor@32473 origin="syslog" seq="7" boot="b1"]'
        b'[example@32473 iut="3" eventID="1011"][origin ip="192.0.2.1"]'
        b'[fields@32473 tag="x"] hello',
    ),
    (
        "dotted keys of app records stay fields",
        item(fields=(("http.status", "200"),)),
        b"<14>1 " + STAMP + b" web-1 app - - " + OURS + b'[fields@32473 http.status="200"] hello',
    ),
    (
        "incoming elements named like ours become fields",
        item(origin=Origin.SYSLOG, fields=(("umonitor@32473.seq", "3"),)),
        b"<14>1 " + STAMP + b" web-1 syslog - - "
        b'[umonitor@32473 origin="syslog" seq="7" boot="b1"]'
        b'[fields@32473 umonitor@32473.seq="3"] hello',
    ),
    (
        "hostname and app sanitized to printable US-ASCII",
        item(instance="wéb 1", fields=(("app", "äpp"),)),
        b"<14>1 " + STAMP + b" w_b_1 _pp - - " + OURS + '[fields@32473 app="äpp"] hello'.encode(),
    ),
    (
        "non-ASCII message gets a BOM",
        item("grüße"),
        b"<14>1 " + STAMP + b" web-1 app - - " + OURS + b" " + BOM + "grüße".encode(),
    ),
    (
        "newlines stay in the message",
        item("one\ntwo\n"),
        b"<14>1 " + STAMP + b" web-1 app - - " + OURS + b" one\ntwo\n",
    ),
    (
        "empty message: no MSG part",
        item(""),
        b"<14>1 " + STAMP + b" web-1 app - - " + OURS,
    ),
]


@pytest.mark.parametrize(("name", "given_item", "expected"), CASES, ids=[c[0] for c in CASES])
def test_format(name: str, given_item: ExportItem, expected: bytes) -> None:
    assert format_item(given_item) == expected


def test_cut_to_header_limits() -> None:
    out = format_item(item(instance="h" * 300, fields=(("app", "a" * 60), ("procid", "p" * 200))))
    parsed = parse_syslog_untrusted(out)
    assert parsed.hostname == "h" * 255
    assert parsed.app_name == "a" * 48
    assert parsed.procid == "p" * 128
    # The whole values are kept as fields.
    assert dict(parsed.structured_data)[FIELDS_SD_ID] == (("app", "a" * 60), ("procid", "p" * 200))


@pytest.mark.parametrize(
    ("key", "name"),
    [("ok", "ok"), ("a=b", "a_b"), ('q"', "q_"), ("]", "_"), ("tab\there", "tab_here"),
     ("ünï", "_n_"), ("", "_"), ("x" * 33, "x" * 32), ("a.b@1", "a.b@1")],
)  # fmt: skip
def test_sd_name(key: str, name: str) -> None:
    assert sd_name(key) == name


def test_octet_counting_frames_decode_with_our_listener_decoder() -> None:
    messages = [format_item(item(m)) for m in ("a", "multi\nline", "ünïcode", "")]
    decoder = SyslogStreamDecoder()
    decoder.receive_data(b"".join(octet_counted(m) for m in messages))
    assert decoder.next_frames() == messages
    assert octet_counted(b"<14>1 x") == b"7 <14>1 x"


# ---------------------------------------------------------------------------------
# Round trip through the project's own parser.


YEAR_1_NS = -62_135_596_800 * NS
YEAR_10000_NS = 253_402_300_800 * NS


def truncated_us(ns: int) -> int:
    return ns // 1000 * 1000


def check_round_trip(given_item: ExportItem, parsed: SyslogMessage) -> None:
    """What the parser reads back is what the mapping promises, field by field."""
    stored = given_item.stored
    record = stored.record
    assert parsed.rfc == 5424
    assert parsed.severity == record.severity
    names = [v for k, v in record.fields if k == "facility" and v in FACILITIES]
    assert parsed.facility == (FACILITIES.index(names[0]) if names else 1)
    when = record.wall_ns
    if when is None or not YEAR_1_NS <= when < YEAR_10000_NS:
        when = stored.time_ns
    assert parsed.timestamp_ns == truncated_us(when)
    # The listener and the parser both drop CR/LF/NUL that end a frame.
    assert parsed.message == record.message.rstrip("\r\n\0")
    for value, limit in ((parsed.hostname, 255), (parsed.app_name, 48), (parsed.procid, 128),
                         (parsed.msgid, 32)):  # fmt: skip
        assert len(value) <= limit and re.fullmatch(r"[!-~]*", value)
    if re.fullmatch(r"[!-~]{1,255}", stored.instance) and stored.instance != "-":
        assert parsed.hostname == stored.instance

    sd = parsed.structured_data
    ids = [sd_id for sd_id, _ in sd]
    assert len(ids) == len(set(ids)), "an SD-ID appears twice"
    for sd_id, params in sd:
        assert re.fullmatch(r"[!#-<>-\\^-~]{1,32}", sd_id)
        for name, _ in params:
            assert re.fullmatch(r"[!#-<>-\\^-~]{1,32}", name)
    assert ids[0] == UMONITOR_SD_ID
    ours = dict(sd[0][1])
    assert ours["origin"] == stored.origin.value and ours["seq"] == str(record.seq)
    assert ours.get("boot", "") == given_item.boot
    assert ("kind" in ours) == (record.kind is not Kind.LOG)

    # Every field is somewhere: as a parameter value, or in the header it went to.
    header = {"app": parsed.app_name, "procid": parsed.procid, "msgid": parsed.msgid,
              "hostname": parsed.hostname}  # fmt: skip
    values = Counter(value for _, value in record.fields)
    carried = Counter(value for _, params in sd[1:] for _, value in params)
    assert not carried - values, "parameters that are no field"
    for value in values - carried:
        assert any(
            header.get(key) == value
            or (key == "facility" and FACILITIES.index(value) == parsed.facility)
            for key, v in record.fields
            if v == value
        ), f"field value {value!r} is lost"


def test_round_trip_of_the_table() -> None:
    for _, given_item, _ in CASES:
        check_round_trip(given_item, parse_syslog_untrusted(format_item(given_item)))


def test_round_trip_of_an_incoming_syslog_message() -> None:
    """Syslog in, syslog out: the listener's fields make the same message again."""
    original = (
        b"<165>1 2003-10-11T22:14:15.003Z mymachine evntslog 77 ID47 "
        b'[exampleSDID@32473 iut="3" eventSource="Appl\\"ication" eventID="1011"]'
        b'[examplePriority@32473 class="high"] ' + BOM + b"An application event"
    )
    incoming = parse_syslog_untrusted(original)
    record = Record(1, Severity(incoming.severity), incoming.message,
                    wall_ns=incoming.timestamp_ns, fields=syslog_fields(incoming))  # fmt: skip
    stored = StoredRecord("mymachine", T, Origin.SYSLOG, record)
    again = parse_syslog_untrusted(format_item(ExportItem(stored, "", "syslog.log")))
    assert again.facility == incoming.facility and again.severity == incoming.severity
    assert again.timestamp_ns == incoming.timestamp_ns
    assert (again.hostname, again.app_name, again.procid, again.msgid) == (
        "mymachine", "evntslog", "77", "ID47",
    )  # fmt: skip
    assert again.structured_data[1:] == incoming.structured_data
    assert again.message == incoming.message


sd_names = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters='="]'),
    min_size=1,
    max_size=12,
)
any_text = st.text(max_size=40)
field_keys = st.one_of(
    any_text,
    st.sampled_from(["facility", "hostname", "app", "procid", "msgid"]),
    st.builds(lambda a, b: f"{a}@32473.{b}", sd_names, sd_names.filter(lambda s: "." not in s)),
)
field_values = st.one_of(any_text, st.sampled_from(FACILITIES), st.just("-"))
items = st.builds(
    item,
    message=st.text(max_size=200),
    instance=st.one_of(
        st.text(max_size=300), st.from_regex(r"[a-z0-9][a-z0-9._-]{0,63}", fullmatch=True)
    ),
    origin=st.sampled_from(Origin),
    fields=st.lists(st.tuples(field_keys, field_values), max_size=8).map(tuple),
    severity=st.sampled_from(Severity),
    seq=st.integers(1, 2**63),
    wall_ns=st.one_of(st.none(), st.integers(-(2**62), 2**62)),
    time_ns=st.integers(0, 4_000_000_000 * NS),
    boot=st.one_of(st.just(""), st.text(max_size=32)),
    kind=st.sampled_from(Kind),
    file=any_text,
    line=st.integers(0, 2**31),
    function=any_text,
)


@settings(max_examples=400)
@given(items)
def test_round_trip_property(given_item: ExportItem) -> None:
    out = format_item(given_item)
    check_round_trip(given_item, parse_syslog_untrusted(out, max_frame=len(out)))


@settings(max_examples=200)
@given(st.lists(items, min_size=1, max_size=5), st.integers(1, 64))
def test_octet_counted_stream_round_trip(batch: list[ExportItem], chunk: int) -> None:
    """Messages framed back to back decode to the same messages, in any chunking."""
    messages = [format_item(i) for i in batch]
    stream = b"".join(octet_counted(m) for m in messages)
    decoder = SyslogStreamDecoder(max_frame=max(len(m) for m in messages))
    frames: list[bytes] = []
    for start in range(0, len(stream), chunk):
        decoder.receive_data(stream[start : start + chunk])
        frames.extend(decoder.next_frames())
    assert frames == messages


def test_timestamp_is_rfc3339_utc_with_microseconds() -> None:
    for ns in (0, T, 253_402_300_799 * NS + 999_999_999):
        out = format_item(item(wall_ns=ns))
        stamp = out.split(b" ")[1].decode()
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", stamp)
        moment = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        assert moment.timestamp() * NS == pytest.approx(ns, abs=1000)


# ---------------------------------------------------------------------------------
# RELP framing.

RELP_CASES: list[tuple[str, bytes, list[RelpFrame]]] = [
    ("answer", b"2 rsp 6 200 OK\n", [RelpFrame(2, "rsp", b"200 OK")]),
    ("no data", b"0 serverclose 0\n", [RelpFrame(0, "serverclose")]),
    ("empty answer to close", b"5 rsp 0\n", [RelpFrame(5, "rsp")]),
    (
        "answer to open",
        b"1 rsp 53 200 OK\nrelp_version=0\nrelp_software=x\ncommands=syslog\n",
        [RelpFrame(1, "rsp", b"200 OK\nrelp_version=0\nrelp_software=x\ncommands=syslog")],
    ),
    (
        "several, data with newlines",
        b"3 rsp 6 200 OK\n4 syslog 3 a\nb\n",
        [RelpFrame(3, "rsp", b"200 OK"), RelpFrame(4, "syslog", b"a\nb")],
    ),
    ("header not complete", b"12 rs", []),
    ("data not complete", b"1 rsp 6 200", []),
]


@pytest.mark.parametrize(("name", "data", "frames"), RELP_CASES, ids=[c[0] for c in RELP_CASES])
def test_relp_decoder(name: str, data: bytes, frames: list[RelpFrame]) -> None:
    decoder = RelpDecoder()
    decoder.receive_data(data)
    assert decoder.next_frames() == frames


RELP_BAD: list[tuple[str, bytes, str]] = [
    ("not a header", b"HTTP/1.1 400 Bad Request\r\n", "malformed RELP frame header"),
    ("txnr too long", b"1234567890 rsp 0\n", "malformed"),
    ("command too long", b"1 " + b"r" * 33 + b" 0\n", "malformed"),
    ("no trailer", b"1 rsp 2 OKX", "does not end in LF"),
    ("length without data", b"1 rsp 5\n", "announces 5 bytes"),
    ("too large", b"1 rsp %d " % (MAX_RELP_DATA + 1), "exceeds the maximum"),
    ("double space", b"1  rsp 0\n", "malformed"),
]


@pytest.mark.parametrize(("name", "data", "why"), RELP_BAD, ids=[c[0] for c in RELP_BAD])
def test_relp_decoder_rejects(name: str, data: bytes, why: str) -> None:
    decoder = RelpDecoder()
    decoder.receive_data(data)
    with pytest.raises(ProtocolError, match=why):
        decoder.next_frames()
    with pytest.raises(ProtocolError):  # and stays broken
        decoder.next_frames()


def test_relp_frames_before_a_bad_one_come_out_first() -> None:
    decoder = RelpDecoder()
    decoder.receive_data(b"2 rsp 6 200 OK\n3 rsp 6 200 OKjunk")
    assert decoder.next_frames() == [RelpFrame(2, "rsp", b"200 OK")]
    with pytest.raises(ProtocolError):
        decoder.next_frames()


relp_frames = st.builds(
    RelpFrame,
    st.integers(0, 999_999_999),
    st.from_regex(r"[a-z]{1,32}", fullmatch=True),
    st.binary(max_size=100),
)


@settings(max_examples=300)
@given(st.lists(relp_frames, max_size=10), st.integers(1, 40))
def test_relp_round_trip_in_any_chunking(frames: list[RelpFrame], chunk: int) -> None:
    stream = b"".join(encode_relp(f) for f in frames)
    whole = RelpDecoder()
    whole.receive_data(stream)
    assert whole.next_frames() == frames
    pieces = RelpDecoder()
    out: list[RelpFrame] = []
    for start in range(0, len(stream), chunk):
        pieces.receive_data(stream[start : start + chunk])
        out.extend(pieces.next_frames())
    assert out == frames


@settings(max_examples=500)
@given(st.binary(max_size=300), st.integers(1, 300))
def test_relp_arbitrary_bytes_only_raise_protocol_error(data: bytes, max_data: int) -> None:
    decoder = RelpDecoder(max_data=max_data)
    decoder.receive_data(data)
    try:
        for frame in decoder.next_frames():
            assert len(frame.data) <= max_data
        relp_status_untrusted(data)
        relp_offers_untrusted(data)
    except ProtocolError:
        pass


@pytest.mark.parametrize(
    ("data", "status"),
    [(b"200 OK", (200, "OK")), (b"500 command disabled", (500, "command disabled")),
     (b"200 OK\nrelp_version=0", (200, "OK")), (b"200", (200, ""))],
)  # fmt: skip
def test_relp_status(data: bytes, status: tuple[int, str]) -> None:
    assert relp_status_untrusted(data) == status


@pytest.mark.parametrize("data", [b"", b"OK", b"20 OK", b"2000 OK", b"200OK"])
def test_relp_status_rejects(data: bytes) -> None:
    with pytest.raises(ProtocolError, match="malformed RELP response"):
        relp_status_untrusted(data)


def test_relp_offers() -> None:
    data = b"200 OK\nrelp_version=0\nrelp_software=librelp,1.11.0,http://x\ncommands=syslog"
    assert relp_offers_untrusted(data) == {
        "relp_version": "0",
        "relp_software": "librelp,1.11.0,http://x",
        "commands": "syslog",
    }


def test_encode_relp() -> None:
    assert encode_relp(RelpFrame(1, "open", b"a=b")) == b"1 open 3 a=b\n"
    assert encode_relp(RelpFrame(9, "close")) == b"9 close 0\n"


def test_targets() -> None:
    assert SyslogSink("10.0.0.1", 514).target == "syslog+tcp://10.0.0.1:514"
    assert RelpSink("::1", 2514).target == "relp://[::1]:2514"
    tls = SyslogSink("logs.example", 6514, ssl_context=ssl.create_default_context())
    assert tls.target == "syslog+tls://logs.example:6514"
    with pytest.raises(ValueError, match="window"):
        RelpSink("h", 1, window=0)
