"""``syslog_lines`` (the syslog intake's C fast path) against the Python parser.

For every frame it takes, the C function must write exactly the line that
``SyslogStreamDecoder`` + ``parse_syslog_untrusted`` + ``syslog_fields`` +
``LineFormatter`` write, and it must stop before every frame it does not take. The
tests drive it as the intake does: run it, let the decoder cut one frame where it
stopped, parse that one in Python, run it again.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from umonitor.collector.syslog_listeners import syslog_record
from umonitor.protocol.syslog import SyslogStreamDecoder, parse_syslog_untrusted
from umonitor.records import Origin
from umonitor.store.logfile import LineFormatter

try:
    from umonitor._speedups import syslog_lines
except ImportError as exc:  # CI builds the extension: a missing one is a failure
    raise ImportError(
        "umonitor._speedups is not built; run `pip install -e .` with a C compiler"
    ) from exc

NOW = 1_767_225_600_123_456_789  # 2026-01-01T00:00:00.123456789Z
MAX_FRAME = 65536
LOGGEN = (
    b"<38>1 2026-11-26T16:12:45+00:00 localhost prg00000 1234 - - \xef\xbb\xbfseq: "
    b"0000000000, thread: 0000, runid: 1795709565, stamp: 2026-11-26T16:12:45 PADDPAD\n"
)


def python_lines(frames: list[bytes], host: bytes, seq: int) -> list[str]:
    """What the pure path stores for ``frames`` (all from ``host``), numbered after seq."""
    formatter = LineFormatter()
    out = []
    for frame in frames:
        msg = parse_syslog_untrusted(frame, now_ns=NOW, max_frame=MAX_FRAME)
        assert msg.rfc == 5424 and msg.hostname.encode() == host
        seq += 1
        record = syslog_record(msg, seq)
        time_ns = NOW if msg.timestamp_ns is None else msg.timestamp_ns
        out.append(formatter.line(time_ns, Origin.SYSLOG, record))
    return out


class FastPath:
    """The intake's fast path with every run checked against the pure path."""

    def __init__(self, host: bytes, seq: int) -> None:
        self.host = host
        self.seq = seq
        self.taken = 0

    def __call__(self, buf: bytearray, end: int) -> int:
        before = bytes(buf[:end])
        stop, text, new_seq, count = syslog_lines(buf, 0, end, MAX_FRAME, self.host, self.seq, NOW)
        # The frames C took are the frames the decoder cuts from those bytes.
        reference = SyslogStreamDecoder(max_frame=MAX_FRAME)
        reference.receive_data(before[:stop])
        frames = reference.next_frames()
        assert reference.buffered == 0
        assert len(frames) == count
        assert text == "\n".join(python_lines(frames, self.host, self.seq))
        assert new_seq == self.seq + count
        self.seq = new_seq
        self.taken += count
        return stop


def check(stream: bytes, host: bytes = b"localhost", seq: int = 0) -> int:
    """Feed ``stream`` the intake's way; returns how many frames C took."""
    decoder = SyslogStreamDecoder(max_frame=MAX_FRAME)
    decoder.receive_data(stream)
    fast = FastPath(host, seq)
    while True:
        decoder.take_run(fast)
        if not decoder.next_frames(limit=1):
            return fast.taken
        fast.seq += 1  # the Python path took one


def octet(frame: bytes) -> bytes:
    return b"%d %s" % (len(frame), frame)


def test_loggen_frames_all_take_the_fast_path() -> None:
    assert check(octet(LOGGEN) * 50) == 50
    assert check(LOGGEN * 50) == 50  # LF framing


def test_stops_at_frames_it_does_not_take() -> None:
    others = [
        b"<38>1 2026-11-26T16:12:45Z otherhost app 1 - - hello",  # another host
        b'<38>1 2026-11-26T16:12:45Z localhost app 1 - [x@1 a="b"] sd',  # SD
        b"<38>1 2026-11-26T16:12:45Z localhost app 1 - - caf\xc3\xa9",  # non-ASCII
        b"<38>1 2026-11-26T16:12:45Z localhost app 1 - - back\\slash",
        b"<38>1 2026-13-26T16:12:45Z localhost app 1 - - bad month",
        b"<38>1 1969-12-31T23:59:59Z localhost app 1 - - before 1970",
        b"<38>Nov 26 16:12:45 localhost app: RFC 3164",
        b"<38>1 2026-11-26T16:12:45Z localhost a=b 1 - - quote-worthy app",
        b"<38>1 2026-11-26T16:12:45Z localhost app 1 -",  # MSGID ends the frame
        b"no pri at all",
    ]
    plain = octet(LOGGEN)
    for other in others:
        stream = plain * 3 + octet(other) + plain * 2
        taken = check(stream)
        # The other frame went to Python; the plain ones after it came back to C
        # unless the other frame changed nothing about the host.
        assert 3 <= taken <= 5, other


def test_seq_and_time_fallbacks() -> None:
    assert check(octet(b"<191>1 - localhost - - - - nil time\n") * 3, seq=41) == 3
    assert check(octet(b"<999>1 2026-11-26t16:12:45.123456789-05:30 localhost a b c - x")) == 1


FRAME_PARTS = st.tuples(
    st.sampled_from([b"<38>", b"<0>", b"<191>", b"<999>", b"<038>", b"<3a>", b""]),
    st.sampled_from([b"1 ", b"1 ", b"1 ", b"2 ", b""]),
    st.sampled_from(
        [
            b"2026-11-26T16:12:45+00:00",
            b"2026-11-26T16:12:45.5Z",
            b"2026-02-29T00:00:00Z",
            b"2024-02-29t23:59:59.123456789z",
            b"2026-11-26T16:12:45+24:00",
            b"2026-11-26T16:12:60Z",
            b"9999-12-31T23:59:59-01:00",
            b"-",
            b"",
        ]
    ),
    st.sampled_from([b" localhost", b" localhost", b" otherhost", b" -", b"  localhost"]),
    st.one_of(
        st.lists(st.sampled_from([b"app", b"-", b"12", b"ID47"]), min_size=3, max_size=3),
        st.lists(st.sampled_from([b"app", b"-", b"p=q", b'"', b"\\", b"x\ty", b""]), max_size=4),
    ),
    st.sampled_from([b" -", b" - ", b' [a@1 b="c"]', b"", b" -x"]),
    st.binary(max_size=40)
    | st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(str.encode),
    st.sampled_from([b"", b"\n", b"\r\n", b"\0", b"\xef\xbb\xbf"]),
)


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    pri, version, stamp, host, tokens, sd, msg, end = draw(FRAME_PARTS)
    head = pri + version + stamp + host + b"".join(b" " + t for t in tokens)
    return head + sd + b" " + msg + end


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(frames(), st.booleans()), max_size=12), st.integers(0, 2**64 - 1))
def test_matches_python_on_generated_streams(parts: list[tuple[bytes, bool]], seq: int) -> None:
    stream = b""
    for frame, octet_counted in parts:
        stream += octet(frame) if octet_counted else frame.replace(b"\n", b"") + b"\n"
    try:
        check(stream, seq=seq % (2**63))
    except Exception as exc:  # a ProtocolError from the decoder is the pure path's business
        from umonitor.errors import ProtocolError

        if not isinstance(exc, ProtocolError):
            raise


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_break_it(data: bytes) -> None:
    for start in (data, b"<38>1 - localhost a b c - " + data):
        stop, text, _, count = syslog_lines(bytearray(start), 0, len(start), 64, b"localhost", 0, 0)
        assert 0 <= stop <= len(start)
        assert text.count("\n") == max(0, count - 1)
