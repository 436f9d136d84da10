"""Syslog parsing (RFC 5424, RFC 3164) and RFC 6587 framing, plus their invariants."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.syslog_frames import write_5424
from umonitor.errors import ProtocolError, TooLarge
from umonitor.protocol.frame_codec import ErrorCode
from umonitor.protocol.syslog import (
    MAX_FRAME,
    StructuredData,
    SyslogMessage,
    SyslogStreamDecoder,
    parse_syslog_untrusted,
)

BOM = b"\xef\xbb\xbf"
NS = 1_000_000_000
# 2024-03-10T12:00:00Z: "now" for the year-less RFC 3164 timestamps.
NOW = 1_710_072_000 * NS


def ns(text: str) -> int:
    """Nanoseconds since the epoch of an ISO 8601 time (microsecond precision)."""
    moment = datetime.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    delta = moment - datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    return (delta.days * 86400 + delta.seconds) * NS + delta.microseconds * 1000


def msg(
    facility: int = 1,
    severity: int = 5,
    timestamp_ns: int | None = None,
    hostname: str = "",
    app_name: str = "",
    procid: str = "",
    msgid: str = "",
    structured_data: StructuredData = (),
    message: str = "",
    rfc: int = 3164,
) -> SyslogMessage:
    return SyslogMessage(
        facility,
        severity,
        timestamp_ns,
        hostname,
        app_name,
        procid,
        msgid,
        structured_data,
        message,
        rfc,
    )


EXAMPLE_SD = (
    (
        "exampleSDID@32473",
        (("iut", "3"), ("eventSource", "Application"), ("eventID", "1011")),
    ),
)

CASES: list[tuple[str, bytes, SyslogMessage]] = [
    # RFC 5424 §6.5, examples 1-4.
    (
        "5424 example 1",
        b"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - "
        + BOM
        + b"'su root' failed for lonvick on /dev/pts/8",
        msg(
            4,
            2,
            ns("2003-10-11T22:14:15.003Z"),
            "mymachine.example.com",
            "su",
            "",
            "ID47",
            (),
            "'su root' failed for lonvick on /dev/pts/8",
            5424,
        ),
    ),
    (
        "5424 example 2",
        b"<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - "
        b"%% It's time to make the do-nuts.",
        msg(
            20,
            5,
            ns("2003-08-24T12:14:15.000003Z"),
            "192.0.2.1",
            "myproc",
            "8710",
            "",
            (),
            "%% It's time to make the do-nuts.",
            5424,
        ),
    ),
    (
        "5424 example 3",
        b"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 "
        b'[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"] '
        + BOM
        + b"An application event log entry...",
        msg(
            20,
            5,
            ns("2003-10-11T22:14:15.003Z"),
            "mymachine.example.com",
            "evntslog",
            "",
            "ID47",
            EXAMPLE_SD,
            "An application event log entry...",
            5424,
        ),
    ),
    (
        "5424 example 4",
        b"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 "
        b'[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"]'
        b'[examplePriority@32473 class="high"]',
        msg(
            20,
            5,
            ns("2003-10-11T22:14:15.003Z"),
            "mymachine.example.com",
            "evntslog",
            "",
            "ID47",
            (*EXAMPLE_SD, ("examplePriority@32473", (("class", "high"),))),
            "",
            5424,
        ),
    ),
    # RFC 3164 §5.4. Without a valid timestamp the rest is the message.
    (
        "3164 example 1",
        b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8",
        msg(
            4,
            2,
            ns("2023-10-11T22:14:15Z"),
            "mymachine",
            "su",
            message="'su root' failed for lonvick on /dev/pts/8",
        ),
    ),
    ("3164 example 2", b"Use the BFG!", msg(message="Use the BFG!")),
    (
        "3164 example 3",
        b"<165>Aug 24 05:34:00 CST 1987 mymachine myproc[10]: %% It's time to make the "
        b"do-nuts.  %%  Ingredients: Mix=OK, Jet=OK, Apparatus=OK, Fryer=OK",
        msg(
            20,
            5,
            ns("2024-08-24T05:34:00Z"),
            "CST",
            message="1987 mymachine myproc[10]: %% It's time to make the do-nuts.  %%  "
            "Ingredients: Mix=OK, Jet=OK, Apparatus=OK, Fryer=OK",
        ),
    ),
    (
        "3164 example 4",
        b"<0>1990 Oct 22 10:52:01 TZ-6 scapegoat.dmz.example.org 10.1.2.3 sched[0]: "
        b"That's All Folks!",
        msg(
            0,
            0,
            message="1990 Oct 22 10:52:01 TZ-6 scapegoat.dmz.example.org 10.1.2.3 "
            "sched[0]: That's All Folks!",
        ),
    ),
    (
        "3164 example 5",
        b"<0>Oct 22 10:52:12 scapegoat 1990 Oct 22 10:52:01 TZ-6 "
        b"scapegoat.dmz.example.org 10.1.2.3 sched[0]: That's All Folks!",
        msg(
            0,
            0,
            ns("2023-10-22T10:52:12Z"),
            "scapegoat",
            message="1990 Oct 22 10:52:01 TZ-6 scapegoat.dmz.example.org 10.1.2.3 "
            "sched[0]: That's All Folks!",
        ),
    ),
    # util-linux logger.
    (
        "logger --rfc5424",
        b"<13>1 2024-03-05T10:11:12.345678+01:00 myhost alice - - "
        b'[timeQuality tzKnown="1" isSynced="1" syncAccuracy="113500"] hello world',
        msg(
            1,
            5,
            ns("2024-03-05T09:11:12.345678Z"),
            "myhost",
            "alice",
            "",
            "",
            (
                (
                    "timeQuality",
                    (("tzKnown", "1"), ("isSynced", "1"), ("syncAccuracy", "113500")),
                ),
            ),
            "hello world",
            5424,
        ),
    ),
    (
        "logger --rfc5424 --id -t --msgid",
        b"<14>1 2024-03-05T10:11:12.345678+01:00 myhost app 4242 M1 "
        b'[timeQuality tzKnown="1" isSynced="0"] hi\n',
        msg(
            1,
            6,
            ns("2024-03-05T09:11:12.345678Z"),
            "myhost",
            "app",
            "4242",
            "M1",
            (("timeQuality", (("tzKnown", "1"), ("isSynced", "0"))),),
            "hi",
            5424,
        ),
    ),
    (
        "logger --rfc3164",
        b"<13>Mar  5 10:11:12 myhost alice: hello world",
        msg(1, 5, ns("2024-03-05T10:11:12Z"), "myhost", "alice", message="hello world"),
    ),
    (
        "logger --rfc3164 --id",
        b"<13>Mar  5 10:11:12 myhost alice[4242]: hello",
        msg(1, 5, ns("2024-03-05T10:11:12Z"), "myhost", "alice", "4242", message="hello"),
    ),
    # rsyslog's RSYSLOG_SyslogProtocol23Format keeps the space its 3164 parser left
    # at the start of the message.
    (
        "rsyslog SyslogProtocol23",
        b"<38>1 2024-03-05T10:11:12.345678+00:00 web1 sshd 812 - -  Accepted publickey for bob\n",
        msg(
            4,
            6,
            ns("2024-03-05T10:11:12.345678Z"),
            "web1",
            "sshd",
            "812",
            "",
            (),
            " Accepted publickey for bob",
            5424,
        ),
    ),
    (
        "rsyslog ForwardFormat (RFC 3339 time in a 3164 header)",
        b"<30>2024-03-05T10:11:12.345678+00:00 web1 sshd[812]: Accepted",
        msg(3, 6, ns("2024-03-05T10:11:12.345678Z"), "web1", "sshd", "812", message="Accepted"),
    ),
    # Nanos' syslog klib: 5424 header with the guest IP, console bytes as MSG.
    (
        "nanos klib",
        b"<14>1 2024-03-05T10:11:12.345678Z 10.0.2.15 webapp - - - listening on :8080\nready\n",
        msg(
            1,
            6,
            ns("2024-03-05T10:11:12.345678Z"),
            "10.0.2.15",
            "webapp",
            "",
            "",
            (),
            "listening on :8080\nready",
            5424,
        ),
    ),
    # MirageOS logs-syslog (via syslog-message): 3164, daemon facility, source as TAG.
    (
        "mirage logs-syslog",
        b"<28>Mar  5 10:11:12 dns.example resolver: query timed out\0",
        msg(3, 4, ns("2024-03-05T10:11:12Z"), "dns.example", "resolver", message="query timed out"),
    ),
    (
        "mirage logs-syslog, old TAG without colon",
        b"<30>Mar 15 10:11:12 dns.example resolver started",
        msg(3, 6, ns("2024-03-15T10:11:12Z"), "dns.example", message="resolver started"),
    ),
    # Tolerance.
    ("no space after PRI, no header", b"<34>hello", msg(4, 2, message="hello")),
    ("TAG without header", b"<34>app[7]: hi", msg(4, 2, app_name="app", procid="7", message="hi")),
    (
        "TAG with pid, no colon",
        b"<34>app[7] hi",
        msg(4, 2, app_name="app", procid="7", message="hi"),
    ),
    ("URL is not a TAG", b"<34>http://x y", msg(4, 2, message="http://x y")),
    (
        "no hostname before TAG",
        b"<13>Mar  5 10:11:12 cron[99]: job",
        msg(1, 5, ns("2024-03-05T10:11:12Z"), "", "cron", "99", message="job"),
    ),
    (
        "PRI 200",
        b"<200>Mar  5 10:11:12 h a: x",
        msg(23, 0, ns("2024-03-05T10:11:12Z"), "h", "a", message="x"),
    ),
    ("PRI 999", b"<999>x", msg(23, 7, message="x")),
    ("PRI with leading zeros", b"<013>x", msg(1, 5, message="x")),
    ("four-digit PRI is no PRI", b"<1027>x", msg(message="<1027>x")),
    ("unclosed PRI", b"<13 x", msg(message="<13 x")),
    ("no PRI", b"plain text line", msg(message="plain text line")),
    ("trailing CR LF NUL", b"<13>hi\r\n\0", msg(message="hi")),
    ("leading line debris", b"\n\r<13>hi", msg(message="hi")),
    ("BOM in 3164", b"<13>" + BOM + b"hi", msg(message="hi")),
    (
        "invalid UTF-8",
        b"<13>1 - h a - - - caf\xc3\xa9 \xff",
        msg(hostname="h", app_name="a", message="caf\u00e9 \ufffd", rfc=5424),
    ),
    ("invalid UTF-8, 3164", b"caf\xc3\xa9 \xff\xfe", msg(message="caf\u00e9 \ufffd\ufffd")),
    (
        "embedded newline",
        b"<13>1 - h a - - - one\ntwo\n",
        msg(hostname="h", app_name="a", message="one\ntwo", rfc=5424),
    ),
    (
        "5424 truncated in the header",
        b"<34>1 2003-10-11T22:14:15.003Z mymachine",
        msg(4, 2, ns("2003-10-11T22:14:15.003Z"), "mymachine", rfc=5424),
    ),
    (
        "5424 truncated in the structured data",
        b'<165>1 - host app - ID47 [exampleSDID@32473 iut="3" eventSou',
        msg(
            20, 5, None, "host", "app", "", "ID47", (), '[exampleSDID@32473 iut="3" eventSou', 5424
        ),
    ),
    (
        "5424 without the structured data field",
        b"<13>1 - host app - - hello there",
        msg(1, 5, None, "host", "app", message="hello there", rfc=5424),
    ),
    (
        "5424 SD escapes",
        b'<13>1 - - - - - [x@1 a="q\\"uote" b="back\\\\slash" c="br\\]acket" d="lit\\n" '
        b'e="" f="caf\xc3\xa9 ] ok"] m',
        msg(
            structured_data=(
                (
                    "x@1",
                    (
                        ("a", 'q"uote'),
                        ("b", "back\\slash"),
                        ("c", "br]acket"),
                        ("d", "lit\\n"),
                        ("e", ""),
                        ("f", "caf\u00e9 ] ok"),
                    ),
                ),
            ),
            message="m",
            rfc=5424,
        ),
    ),
    (
        "SD without params",
        b"<13>1 - - - - - [a][b] m",
        msg(structured_data=(("a", ()), ("b", ())), message="m", rfc=5424),
    ),
    (
        "SD glued to MSG",
        b"<13>1 - - - - - [a]m",
        msg(structured_data=(("a", ()),), message="m", rfc=5424),
    ),
    ("SD unquoted value", b"<13>1 - - - - - [a b=c] m", msg(message="[a b=c] m", rfc=5424)),
    ("SD empty element", b"<13>1 - - - - - [] m", msg(message="[] m", rfc=5424)),
    ("SD dash glued", b"<13>1 - - - - - -m", msg(message="-m", rfc=5424)),
    ("SD trailing backslash", b'<13>1 - - - - - [a b="x\\', msg(message='[a b="x\\', rfc=5424)),
    ("version 2 is not 5424", b"<13>2 - - - - - - m", msg(message="2 - - - - - - m")),
    ("version without space", b"<13>1", msg(message="1")),
]


@pytest.mark.parametrize(("frame", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_parse(frame: bytes, expected: SyslogMessage) -> None:
    assert parse_syslog_untrusted(frame, now_ns=NOW) == expected


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("-", None),
        ("2003-10-11T22:14:15Z", ns("2003-10-11T22:14:15Z")),
        ("2003-10-11t22:14:15.123456789z", ns("2003-10-11T22:14:15Z") + 123_456_789),
        ("2003-10-11T22:14:15.5+05:30", ns("2003-10-11T16:44:15.5Z")),
        ("2003-10-11T22:14:15", ns("2003-10-11T22:14:15Z")),
        ("1969-12-31T23:59:59Z", -NS),
        ("2003-13-11T22:14:15Z", None),
        ("2003-02-29T22:14:15Z", None),
        ("2003-10-11T24:00:00Z", None),
        ("2016-12-31T23:59:60Z", None),
        ("2003-10-11T22:14:15+24:00", None),
        ("0000-01-01T00:00:00Z", None),
        ("yesterday", None),
    ],
)
def test_5424_timestamps(stamp: str, expected: int | None) -> None:
    parsed = parse_syslog_untrusted(f"<13>1 {stamp} h a - - - m".encode())
    assert (parsed.timestamp_ns, parsed.hostname, parsed.message) == (expected, "h", "m")


@pytest.mark.parametrize(
    ("now", "stamp", "expected"),
    [
        ("2024-01-02T00:00:00", "Dec 31 23:00:00", "2023-12-31T23:00:00"),
        ("2023-12-31T23:00:00", "Jan  1 01:00:00", "2024-01-01T01:00:00"),
        ("2024-06-15T00:00:00", "Jun 14 23:59:59", "2024-06-14T23:59:59"),
        ("2025-03-01T00:00:00", "Feb 29 12:00:00", "2024-02-29T12:00:00"),
        ("2024-03-10T00:00:00", "Mar 05 10:11:12", "2024-03-05T10:11:12"),
        ("2024-03-10T00:00:00", "Mar 5 10:11:12", "2024-03-05T10:11:12"),
        ("2024-03-10T00:00:00", "mar  5 10:11:12.250", "2024-03-05T10:11:12.25"),
    ],
)
def test_3164_year_closest_to_now_in_utc(now: str, stamp: str, expected: str) -> None:
    parsed = parse_syslog_untrusted(f"<13>{stamp} h a: m".encode(), now_ns=ns(now))
    assert (parsed.timestamp_ns, parsed.hostname, parsed.app_name) == (ns(expected), "h", "a")


@pytest.mark.parametrize(
    "stamp", ["Feb 30 10:00:00", "Mar  5 25:00:00", "Mar 32 10:00:00", "Mar  5 10:00:60"]
)
def test_3164_impossible_time_is_consumed_but_unknown(stamp: str) -> None:
    parsed = parse_syslog_untrusted(f"<13>{stamp} h a: m".encode(), now_ns=NOW)
    assert (parsed.timestamp_ns, parsed.hostname, parsed.message) == (None, "h", "m")


def test_3164_default_now_is_the_wall_clock() -> None:
    parsed = parse_syslog_untrusted(b"<13>Mar  5 10:11:12 h a: m")
    assert parsed.timestamp_ns is not None


@pytest.mark.parametrize("frame", [b"", b"\r\n", b"\0\0", b" \t \r\n\0"])
def test_empty_frame_raises(frame: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_syslog_untrusted(frame)


def test_frame_size_limit() -> None:
    frame = b"<13>" + b"x" * (MAX_FRAME - 4)
    assert len(parse_syslog_untrusted(frame).message) == MAX_FRAME - 4
    with pytest.raises(ProtocolError) as info:
        parse_syslog_untrusted(frame + b"x")
    assert isinstance(info.value, TooLarge) and info.value.code == ErrorCode.TOO_LARGE
    with pytest.raises(ProtocolError):
        parse_syslog_untrusted(b"<13>hello", max_frame=8)


def test_accepts_bytes_like() -> None:
    assert parse_syslog_untrusted(bytearray(b"<13>hi")).message == "hi"
    assert parse_syslog_untrusted(memoryview(b"<13>hi")).message == "hi"


# -- stream framing -------------------------------------------------------------------


def octets(frame: bytes) -> bytes:
    return b"%d %b" % (len(frame), frame)


def decode(data: bytes, *, max_frame: int = MAX_FRAME) -> list[bytes]:
    decoder = SyslogStreamDecoder(max_frame=max_frame)
    decoder.receive_data(data)
    return decoder.next_frames() + decoder.end_of_stream()


def test_octet_counting_keeps_embedded_newlines() -> None:
    frame = b"<13>1 - h a - - - one\ntwo\n"
    decoder = SyslogStreamDecoder()
    decoder.receive_data(octets(frame) + octets(b"<13>x"))
    assert decoder.next_frames() == [frame, b"<13>x"]
    assert decoder.buffered == 0
    assert parse_syslog_untrusted(frame).message == "one\ntwo"


def test_framing_is_detected_per_frame() -> None:
    data = (
        octets(b"<13>a")
        + b"<13>b\n"
        + octets(b"<13>c")
        + b"<28>Mar  5 10:11:12 h mirage: d\0"
        + b"<13>e\r\n"
        + b"\n\0\r\n"
        + b"1a is text\n"
        + b"2024-03-05 text too\n"
        + b"<13>f"
    )
    assert decode(data) == [
        b"<13>a",
        b"<13>b",
        b"<13>c",
        b"<28>Mar  5 10:11:12 h mirage: d",
        b"<13>e\r",
        b"1a is text",
        b"2024-03-05 text too",
        b"<13>f",
    ]


def test_partial_octet_frame_waits_and_is_kept_at_end_of_stream() -> None:
    decoder = SyslogStreamDecoder()
    decoder.receive_data(b"12")
    assert decoder.next_frames() == []
    decoder.receive_data(b" <13>trunc")
    assert decoder.next_frames() == []
    assert decoder.buffered == len(b"12 <13>trunc")
    assert decoder.end_of_stream() == [b"<13>trunc"]
    assert decoder.buffered == 0


def test_declared_length_above_max_raises_after_earlier_frames() -> None:
    decoder = SyslogStreamDecoder(max_frame=100)
    decoder.receive_data(octets(b"<13>ok") + b"101 " + b"x" * 10)
    assert decoder.next_frames() == [b"<13>ok"]
    with pytest.raises(ProtocolError) as info:
        decoder.next_frames()
    assert isinstance(info.value, TooLarge) and info.value.code == ErrorCode.TOO_LARGE
    with pytest.raises(ProtocolError):
        decoder.next_frames()
    assert decoder.buffered == 0


def test_length_with_too_many_digits_raises_early() -> None:
    decoder = SyslogStreamDecoder(max_frame=100)
    decoder.receive_data(b"0001")  # a zero is not a length: LF frame
    decoder.receive_data(b"\n1000")
    assert decoder.next_frames() == [b"0001"]
    with pytest.raises(ProtocolError):
        decoder.next_frames()


def test_long_lf_frame_is_cut_not_buffered() -> None:
    decoder = SyslogStreamDecoder(max_frame=100)
    decoder.receive_data(b"<" + b"x" * 249 + b"\n")
    assert [len(f) for f in decoder.next_frames()] == [100, 100, 50]
    decoder.receive_data(b"y" * 1000)
    decoder.next_frames()
    assert decoder.buffered < 100
    # The rest of a cut line stays a line even when it starts with a digit.
    assert decode(b"<" + b"x" * 99 + b"12 abc\n", max_frame=100) == [
        b"<" + b"x" * 99,
        b"12 abc",
    ]


def test_max_frame_must_be_positive() -> None:
    with pytest.raises(ValueError):
        SyslogStreamDecoder(max_frame=0)


# -- properties -----------------------------------------------------------------------


@settings(max_examples=400)
@given(
    st.sampled_from([b"", b"<13>", b"<13>1 ", b"<165>1 - h a - - [x@1 ", b"<34>Oct 11 22:14:15 "]),
    st.binary(max_size=200),
)
def test_arbitrary_bytes_parse_or_raise_protocol_error(prefix: bytes, data: bytes) -> None:
    frame = prefix + data
    try:
        parsed = parse_syslog_untrusted(frame, now_ns=NOW)
    except ProtocolError:
        assert not frame.strip(b" \t\r\n\0")
        return
    assert 0 <= parsed.facility <= 23
    assert 0 <= parsed.severity <= 7
    assert parsed.rfc in (3164, 5424)


stream_pieces = st.one_of(
    st.binary(max_size=40).map(octets),
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"").replace(b"\0", b"") + b"\n"),
    st.binary(max_size=40).map(lambda b: b"<13>" + b.replace(b"\0", b"") + b"\0"),
    st.binary(max_size=20),
    st.sampled_from([b"1", b"9 ", b"70000 ", b"123456789", b"\n", b"0 "]),
)


def feed(chunks: list[bytes], max_frame: int) -> tuple[list[bytes], bool, int]:
    """Frames, whether the decoder broke, and the most it held after next_frames."""
    decoder = SyslogStreamDecoder(max_frame=max_frame)
    frames: list[bytes] = []
    most = 0
    try:
        for chunk in chunks:
            decoder.receive_data(chunk)
            frames += decoder.next_frames()
            most = max(most, decoder.buffered)
        frames += decoder.end_of_stream()
    except ProtocolError:
        return frames, True, most
    return frames, False, most


@settings(max_examples=300)
@given(st.lists(stream_pieces, max_size=12), st.data(), st.sampled_from([8, 64, MAX_FRAME]))
def test_stream_chunking_does_not_matter(
    pieces: list[bytes], data: st.DataObject, max_frame: int
) -> None:
    stream = b"".join(pieces)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    whole = feed([stream], max_frame)[:2]
    assert feed(chunks, max_frame)[:2] == whole
    assert feed([stream[i : i + 1] for i in range(len(stream))], max_frame)[:2] == whole


@settings(max_examples=300)
@given(st.lists(stream_pieces, max_size=12), st.sampled_from([8, 64, 1000]))
def test_stream_holds_at_most_one_frame(pieces: list[bytes], max_frame: int) -> None:
    stream = b"".join(pieces)
    frames, _, most = feed([stream[i : i + 1] for i in range(len(stream))], max_frame)
    assert most <= max_frame + len(str(max_frame)) + 1
    for frame in frames:
        assert len(frame) <= max_frame
        parse_syslog_untrusted(frame, max_frame=max_frame)  # never raises


# A test-only RFC 5424 encoder, for the round trip.
PRINTUSASCII = st.characters(min_codepoint=33, max_codepoint=126)
header_field = st.text(PRINTUSASCII, max_size=20).filter(lambda s: s != "-")
sd_name = st.text(
    st.characters(min_codepoint=33, max_codepoint=126, exclude_characters='= ]"'),
    min_size=1,
    max_size=32,
)
sd_value = st.text(st.characters(codec="utf-8"), max_size=20)
structured = st.lists(
    st.tuples(sd_name, st.lists(st.tuples(sd_name, sd_value), max_size=3).map(tuple)),
    max_size=3,
).map(tuple)
message_text = st.text(st.characters(codec="utf-8"), max_size=40).map(lambda s: s.rstrip("\r\n\0"))
# Years 1 to 9999, to the nanosecond.
timestamps = st.none() | st.integers(-62_135_596_800 * NS, 253_402_300_800 * NS - 1)


@settings(max_examples=300)
@given(
    st.builds(
        SyslogMessage,
        facility=st.integers(0, 23),
        severity=st.integers(0, 7),
        timestamp_ns=timestamps,
        hostname=header_field,
        app_name=header_field,
        procid=header_field,
        msgid=header_field,
        structured_data=structured,
        message=message_text,
        rfc=st.just(5424),
    )
)
def test_5424_round_trip(message: SyslogMessage) -> None:
    assert parse_syslog_untrusted(write_5424(message)) == message
