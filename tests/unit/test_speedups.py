"""The C accelerator against the pure-Python decoder and LineFormatter (Hypothesis).

``format_records`` must write, for every record it takes, exactly the line the pure
path writes, and stop before every frame it does not take. These tests drive it the
way the collector does: run it, let the Python decoder take one frame where it
stopped, run it again.
"""

from __future__ import annotations

import ctypes
import itertools
import mmap
import struct
import sys
from array import array
from collections.abc import Callable, Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from umonitor.protocol import frame_codec as fc
from umonitor.records import SEVERITY_NAMES, Kind, Origin, Record, Severity
from umonitor.store.logfile import LineFormatter

try:
    from umonitor._speedups import format_records
except ImportError as exc:  # CI builds the extension: a missing one is a failure
    raise ImportError(
        "umonitor._speedups is not built; run `pip install -e .` with a C compiler"
    ) from exc

MAX_BODY = fc.DEFAULT_MAX_FRAME - 5
NOW = 1_767_225_600_123_456_789  # 2026-01-01T00:00:00.123456789Z
LAST_NS = 253_402_300_799_999_999_999  # 9999-12-31T23:59:59.999999999Z
_HEADER = struct.Struct(">IB")

# -- strategies ------------------------------------------------------------------

PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
SPECIAL = st.sampled_from(
    ["\\", '"', "=", " ", ":", "-", "\t", "\n", "\r", "\x00", "\x1b", "\x7f", "\x85", "é", "😀"]
)
ANY_CHAR = st.characters(codec="utf-8")


def texts(max_size: int, min_size: int = 0) -> st.SearchStrategy[str]:
    """Mostly common-case text, often with a character the fast path must refuse."""
    return st.one_of(
        st.text(PRINTABLE, min_size=min_size, max_size=max_size),
        st.text(PRINTABLE, min_size=min_size, max_size=max_size),
        st.text(st.one_of(PRINTABLE, SPECIAL, ANY_CHAR), min_size=min_size, max_size=max_size),
    )


BEFORE_EPOCH = st.integers(-(2**63), -1)
SEQS = st.one_of(st.integers(1, 40), st.integers(1, 2**64 - 1))
HIGHS = st.one_of(st.just(0), st.integers(0, 40), st.integers(0, 2**64 - 1))
NOWS = st.one_of(
    st.just(NOW),
    st.sampled_from(
        [0, 999, LAST_NS, LAST_NS + 1, -(10**9) - 1, -(10**18), 2**63 - 1, 2**63, 2**64 + 3]
    ),
)

records = st.builds(
    Record,
    seq=SEQS,
    severity=st.sampled_from(list(Severity)),
    message=texts(120),
    kind=st.sampled_from(list(Kind)),
    mono_ns=st.one_of(st.none(), st.integers(0, 2**64 - 1)),
    wall_ns=st.one_of(
        st.none(),
        st.integers(0, 2**63 - 1),
        st.integers(1_700_000_000 * 10**9, 1_800_000_000 * 10**9),
        BEFORE_EPOCH,
    ),
    file=st.one_of(st.sampled_from(["", "-", "main.c"]), texts(20)),
    line=st.one_of(st.just(0), st.integers(0, 2**32 - 1)),
    function=st.one_of(st.sampled_from(["", "-", "main"]), texts(20)),
    fields=st.lists(st.tuples(texts(16, min_size=1), texts(24)), max_size=5).map(tuple),
)


def _common_case(text: str, refused: str = "") -> bool:
    return all(" " <= c <= "~" and c != "\\" and c not in refused for c in text)


def is_fast(record: Record, now_ns: int) -> bool:
    """Whether ``format_records`` takes this (valid) record, per its contract."""
    time_ns = now_ns if record.wall_ns is None else record.wall_ns
    return (
        _common_case(record.file, " :")
        and _common_case(record.function, " :")
        and record.file != "-"
        and _common_case(record.message)
        and all(_common_case(k, ' ="') and _common_case(v) for k, v in record.fields)
        and 0 <= time_ns <= LAST_NS
    )


# -- reference and collector-like driver -----------------------------------------


def reference(data: bytes, high: int, now_ns: int) -> tuple[list[str], int]:
    """The pure-Python lines for a stream of RECORD frames, with replay dedup."""
    decoder = fc.FrameDecoder(fc.Peer.GUEST, expect_preface=False)
    decoder.receive_data(data)
    formatter = LineFormatter()
    lines = []
    for event in decoder.next_events():
        assert isinstance(event, Record)
        if event.seq <= high:
            continue
        high = event.seq
        time_ns = now_ns if event.wall_ns is None else event.wall_ns
        lines.append(formatter.line(time_ns, Origin.APP, event))
    return lines, high


class Collector:
    """Feeds chunks through ``take_record_run`` + ``next_events(limit=1)``."""

    def __init__(self, high: int, now_ns: int) -> None:
        self.decoder = fc.FrameDecoder(fc.Peer.GUEST, expect_preface=False)
        self.formatter = LineFormatter()
        self.high = high
        self.now_ns = now_ns
        self.lines: list[str] = []
        self.fast = 0
        self.slow = 0

    def consume(self, buf: bytearray, pos: int, end: int, max_body: int) -> int:
        high = self.high
        tally = array("q", bytes(64))
        args = (buf, pos, end, max_body, high, self.now_ns, tally)
        stop, text, new_high, count = format_records(*args)
        assert type(stop) is int and type(text) is str and type(count) is int
        assert pos <= stop <= end
        assert text.isascii() and not text.endswith("\n")
        by_severity = [0] * 8
        if text:
            written = text.split("\n")
            assert len(written) == count  # count: the lines written, replays not
            for line in written:  # the tally counts what was written, per severity
                by_severity[SEVERITY_NAMES.index(line.split(" ")[1])] += 1
            self.lines.extend(written)
            assert new_high > high
        else:
            assert count == 0 and new_high is high
        assert tally.tolist() == by_severity
        self.high = new_high
        self.fast += len(frame_ends(bytes(buf), pos, stop))
        return stop

    def feed(self, chunk: bytes) -> None:
        decoder = self.decoder
        decoder.receive_data(chunk)
        while True:
            decoder.take_record_run(self.consume)
            events = decoder.next_events(limit=1)
            if not events:
                return
            (event,) = events
            assert isinstance(event, Record)
            # The run stopped right before this complete frame: it must be one the
            # fast path is not meant to take.
            assert not is_fast(event, self.now_ns), event
            self.slow += 1
            if event.seq > self.high:
                self.high = event.seq
                time_ns = self.now_ns if event.wall_ns is None else event.wall_ns
                self.lines.append(self.formatter.line(time_ns, Origin.APP, event))


def chunked(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def frame_ends(data: bytes | bytearray, pos: int, stop: int) -> list[int]:
    ends = []
    while pos < stop:
        length, _ = _HEADER.unpack_from(data, pos)
        pos += 4 + length
        ends.append(pos)
    assert pos == stop
    return ends


# -- (a) equivalence with the pure path --------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    st.lists(records, max_size=12),
    st.lists(st.integers(0, 10_000), max_size=6),
    HIGHS,
    NOWS,
    st.data(),
)
def test_lines_and_high_match_the_pure_path(
    stream: list[Record], cuts: list[int], high: int, now_ns: int, data: st.DataObject
) -> None:
    if stream and data.draw(st.booleans(), label="replay"):
        # A reconnect: the guest sends an unacknowledged tail again.
        start = data.draw(st.integers(0, len(stream) - 1), label="replay from")
        stream = stream + stream[start:]
    encoded = b"".join(fc.encode_record(r) for r in stream)
    expected_lines, expected_high = reference(encoded, high, now_ns)

    collector = Collector(high, now_ns)
    for chunk in chunked(encoded, cuts):
        collector.feed(chunk)

    assert collector.decoder.buffered == 0
    assert collector.lines == expected_lines
    assert collector.high == expected_high
    assert collector.fast + collector.slow == len(stream)
    assert collector.fast == sum(is_fast(r, now_ns) for r in stream)


def safe_chars(refused: str = "") -> st.SearchStrategy[str]:
    """Printable ASCII without a backslash or any of ``refused``."""
    return st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="\\" + refused)


fast_records = st.builds(
    Record,
    seq=SEQS,
    severity=st.sampled_from(list(Severity)),
    message=st.text(safe_chars(), max_size=100),
    kind=st.sampled_from(list(Kind)),
    mono_ns=st.integers(0, 2**64 - 1),
    wall_ns=st.one_of(st.none(), st.integers(0, 2**63 - 1)),
    file=st.text(safe_chars(" :"), max_size=12).filter(lambda s: s != "-"),
    line=st.integers(0, 2**32 - 1),
    function=st.text(safe_chars(" :"), max_size=12),
    fields=st.lists(
        st.tuples(
            st.text(safe_chars(' ="'), min_size=1, max_size=8),
            st.text(safe_chars(), max_size=16),
        ),
        max_size=4,
    ).map(tuple),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(fast_records, max_size=10), HIGHS)
def test_a_common_case_stream_is_taken_in_one_call(stream: list[Record], high: int) -> None:
    encoded = bytearray(b"".join(fc.encode_record(r) for r in stream))
    stop, text, new_high, count = format_records(encoded, 0, len(encoded), MAX_BODY, high, NOW)
    expected_lines, expected_high = reference(bytes(encoded), high, NOW)
    assert (stop, count) == (len(encoded), len(expected_lines))  # replays are not written
    assert text == "\n".join(expected_lines)
    assert new_high == expected_high


# -- (b) arbitrary and damaged bytes -------------------------------------------------


def check_run(
    data: bytes, pos: int, end: int, max_body: int, high: int, now_ns: int
) -> tuple[int, str, int, int]:
    buf = bytearray(data)
    result = format_records(buf, pos, end, max_body, high, now_ns)
    stop, text, new_high, count = result
    assert pos <= stop <= end
    # Only buf[pos:end] counts: the slice alone gives the same answer.
    alone = format_records(bytes(buf[pos:end]), 0, end - pos, max_body, high, now_ns)
    assert alone == (stop - pos, text, new_high, count)
    # What was taken is whole RECORD frames the Python decoder accepts, and the lines
    # (``count`` of them) are the ones it would write.
    ends = frame_ends(buf, pos, stop)
    at = pos
    for frame_end in ends:
        length, ftype = _HEADER.unpack_from(buf, at)
        assert ftype == fc.FrameType.RECORD and 1 <= length <= max_body + 1
        at = frame_end
    if ends and max_body >= 59:
        decoder = fc.FrameDecoder(fc.Peer.GUEST, max_frame=max_body + 5, expect_preface=False)
        decoder.receive_data(buf[pos:stop])
        events = decoder.next_events()
        assert len(events) == len(ends) and decoder.buffered == 0
        assert all(is_fast(e, now_ns) for e in events if isinstance(e, Record))
    lines, expected_high = reference(bytes(buf[pos:stop]), high, now_ns)
    assert text == "\n".join(lines) and count == len(lines)
    assert new_high == expected_high
    # The buffer export is released: the bytearray can be resized again.
    buf.extend(b"x")
    return result


MAX_BODIES = st.one_of(st.just(MAX_BODY), st.integers(59, 400), st.integers(-3, 80))


@settings(max_examples=500, deadline=None)
@given(
    st.binary(max_size=16),
    st.binary(max_size=400),
    st.binary(max_size=16),
    MAX_BODIES,
    HIGHS,
    NOWS,
)
def test_arbitrary_bytes(
    prefix: bytes, body: bytes, suffix: bytes, max_body: int, high: int, now_ns: int
) -> None:
    check_run(prefix + body + suffix, len(prefix), len(prefix) + len(body), max_body, high, now_ns)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(fast_records, min_size=1, max_size=6),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
    st.binary(max_size=8),
    st.binary(max_size=8),
    MAX_BODIES,
    HIGHS,
)
def test_damaged_frames(
    stream: list[Record],
    damage: list[tuple[int, int]],
    prefix: bytes,
    suffix: bytes,
    max_body: int,
    high: int,
) -> None:
    body = bytearray(b"".join(fc.encode_record(r) for r in stream))
    for at, value in damage:
        body[at % len(body)] = value
    data = prefix + bytes(body) + suffix
    check_run(data, len(prefix), len(prefix) + len(body), max_body, high, NOW)


def _guarded(data: bytes) -> tuple[mmap.mmap, int, int]:
    """``data`` placed to end right at an inaccessible page (reading past it faults)."""
    page = mmap.PAGESIZE
    size = (len(data) // page + 2) * page
    area = mmap.mmap(-1, size)
    start = size - page - len(data)
    area[start : start + len(data)] = data
    view = ctypes.c_char.from_buffer(area)
    address = ctypes.addressof(view) + size - page
    del view  # the export would keep the mapping from being closed
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    assert libc.mprotect(address, page, 0) == 0, ctypes.get_errno()  # PROT_NONE
    return area, start, start + len(data)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses mprotect via ctypes")
@settings(max_examples=200, deadline=None)
@given(st.lists(fast_records, max_size=4), st.integers(0, 10_000), st.binary(max_size=40))
def test_never_reads_past_end(stream: list[Record], cut: int, tail: bytes) -> None:
    data = b"".join(fc.encode_record(r) for r in stream)
    data = data[: cut % (len(data) + 1)] + tail
    area, pos, end = _guarded(data)
    try:
        stop, _text, _high, _count = format_records(area, pos, end, MAX_BODY, 0, NOW)
    finally:
        area.close()
    assert pos <= stop <= end
    assert format_records(data, 0, len(data), MAX_BODY, 0, NOW)[0] == stop - pos


# -- (c) truncated streams ----------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(fast_records, min_size=1, max_size=5))
def test_truncated_stream_stops_at_the_last_complete_frame(stream: list[Record]) -> None:
    data = b"".join(fc.encode_record(r) for r in stream)
    ends = frame_ends(data, 0, len(data))
    for cut in range(len(data) + 1):
        complete = [e for e in ends if e <= cut]
        stop, text, new_high, count = format_records(bytearray(data), 0, cut, MAX_BODY, 0, NOW)
        assert stop == (complete[-1] if complete else 0)
        lines, high = reference(data[:stop], 0, NOW)
        assert (text, new_high, count) == ("\n".join(lines), high, len(lines))


# -- examples: each reason to stop ----------------------------------------------------

BASE = Record(
    7,
    Severity.WARNING,
    "disk almost full",
    Kind.LOG,
    1_234_567_890,
    None,
    "fs.c",
    120,
    "check",
    (("pct", "97"), ("dev", "/dev/vda 1")),
)


def _set(offset: int, fmt: str, value: int) -> Callable[[bytearray], None]:
    def change(frame: bytearray) -> None:
        struct.pack_into(fmt, frame, offset, value)

    return change


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(_set(0, ">I", 0), id="length 0"),
        pytest.param(_set(4, ">B", 0x03), id="not a RECORD"),
        pytest.param(_set(5, ">Q", 0), id="seq 0"),
        pytest.param(_set(5 + 24, ">B", 8), id="severity 8"),
        pytest.param(_set(5 + 25, ">B", 4), id="kind 4"),
        pytest.param(_set(5 + 32, ">H", 0xFFFF), id="file runs past"),
        pytest.param(_set(5 + 36 + 4 + 5, ">B", 0), id="empty field key"),
        pytest.param(_set(5 + 36 + 4 + 5 + 1, ">H", 0xFFFF), id="field value runs past"),
        pytest.param(_set(5 + 27, ">B", 200), id="too many fields"),
        pytest.param(_set(5 + 36, ">B", ord("\\")), id="backslash in file"),
        pytest.param(_set(5 + 36 + 1, ">B", ord(":")), id="colon in file"),
        pytest.param(_set(5 + 36 + 4, ">B", ord(" ")), id="space in function"),
        pytest.param(_set(-1, ">B", 0x09), id="tab in message"),
        pytest.param(_set(-1, ">B", 0xC3), id="non-ASCII in message"),
        pytest.param(_set(5 + 36 + 9 + 3, ">B", ord("=")), id="equals in key"),
        pytest.param(_set(5 + 36 + 9 + 3 + 3, ">B", 0x7F), id="DEL in value"),
    ],
)
def test_stops_before_a_frame_it_does_not_take(change: Callable[[bytearray], None]) -> None:
    good = fc.encode_record(BASE._replace(seq=6))
    frame = bytearray(fc.encode_record(BASE))
    change(frame)
    buf = bytearray(good + frame + good)
    high = 5
    stop, text, new_high, count = format_records(buf, 0, len(buf), MAX_BODY, high, NOW)
    assert (stop, count, new_high) == (len(good), 1, 6)
    assert text == reference(good, high, NOW)[0][0]


@pytest.mark.parametrize(
    ("record", "now_ns"),
    [
        (BASE._replace(file="-"), NOW),
        (BASE._replace(wall_ns=-1), NOW),
        (BASE, -1),
        (BASE, LAST_NS + 1),
    ],
    ids=["file is -", "negative wall clock", "negative now", "now after 9999"],
)
def test_stops_outside_the_common_case(record: Record, now_ns: int) -> None:
    buf = bytearray(fc.encode_record(record))
    high = 3
    assert format_records(buf, 0, len(buf), MAX_BODY, high, now_ns) == (0, "", high, 0)


def test_stops_at_an_oversized_frame() -> None:
    frame = fc.encode_record(BASE)
    size = len(frame) - 5
    assert format_records(frame, 0, len(frame), size - 1, 0, NOW)[3] == 0
    assert format_records(frame, 0, len(frame), size, 0, NOW)[3] == 1


def test_one_line_exactly() -> None:
    record = BASE._replace(
        kind=Kind.EXIT,
        wall_ns=1_767_225_600_987_654_321,
        fields=(("a", ""), ("b", 'say "hi"'), ("c", "x=y"), ("d", 'q"')),
    )
    frame = fc.encode_record(record)
    _stop, text, _high, _count = format_records(frame, 0, len(frame), MAX_BODY, 0, NOW)
    assert text == (
        "2026-01-01T00:00:00.987654Z warning app/exit 7 +1.234567890 fs.c:120:check "
        'disk almost full\ta="" b="say \\"hi\\"" c="x=y" d="q\\""'
    )
    assert [text] == reference(frame, 0, NOW)[0]


def test_source_forms() -> None:
    def line(**changes: object) -> str:
        frame = fc.encode_record(BASE._replace(fields=(), **changes))
        return format_records(frame, 0, len(frame), MAX_BODY, 0, NOW)[1].split(" ")[5]

    assert line(file="", line=0, function="") == "-"
    assert line(file="", line=9, function="") == ":9:"
    assert line(line=0) == "fs.c::check"
    assert line(file="", line=0, function="-") == "::-"


def test_replayed_records_are_consumed_but_not_written() -> None:
    frames = b"".join(fc.encode_record(BASE._replace(seq=s)) for s in (3, 4, 2, 5, 5, 1))
    stop, text, new_high, count = format_records(frames, 0, len(frames), MAX_BODY, 3, NOW)
    assert (stop, count, new_high) == (len(frames), 2, 5)  # count: the lines written
    assert [line.split(" ")[3] for line in text.split("\n")] == ["4", "5"]


def test_high_beyond_u64_and_negative() -> None:
    frames = fc.encode_record(BASE._replace(seq=2**64 - 1))
    huge = 2**70
    assert format_records(frames, 0, len(frames), MAX_BODY, huge, NOW)[1:] == ("", huge, 0)
    _stop, text, new_high, _count = format_records(frames, 0, len(frames), MAX_BODY, -5, NOW)
    assert text and new_high == 2**64 - 1


def test_now_beyond_i64_but_before_year_10000() -> None:
    frame = fc.encode_record(BASE)
    now_ns = 2**64 + 3
    _stop, text, _high, count = format_records(frame, 0, len(frame), MAX_BODY, 0, now_ns)
    assert count == 1
    assert [text] == reference(frame, 0, now_ns)[0]


def test_empty_and_partial_input() -> None:
    buf = bytearray(fc.encode_record(BASE))
    assert format_records(buf, 0, 0, MAX_BODY, 0, NOW) == (0, "", 0, 0)
    assert format_records(buf, 0, 4, MAX_BODY, 0, NOW) == (0, "", 0, 0)
    assert format_records(buf, 0, len(buf) - 1, MAX_BODY, 0, NOW) == (0, "", 0, 0)
    assert format_records(buf, len(buf), len(buf), MAX_BODY, 0, NOW) == (len(buf), "", 0, 0)


@pytest.mark.parametrize(("pos", "end"), [(-1, 4), (5, 4), (0, 10_000)])
def test_bad_positions_raise_and_release_the_buffer(pos: int, end: int) -> None:
    buf = bytearray(fc.encode_record(BASE))
    with pytest.raises(ValueError):
        format_records(buf, pos, end, MAX_BODY, 0, NOW)
    buf.extend(b"x")  # no export left behind


def test_argument_types() -> None:
    buf = bytearray(fc.encode_record(BASE))
    with pytest.raises(TypeError):
        format_records(buf, 0, len(buf), MAX_BODY, 0)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        format_records("text", 0, 0, MAX_BODY, 0, NOW)
    with pytest.raises(TypeError):
        format_records(buf, 0, len(buf), MAX_BODY, 1.5, NOW)
    buf.extend(b"x")
