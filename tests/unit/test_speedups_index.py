"""The C line parser against ``parse_line`` (Hypothesis).

``parse_record_lines`` must give, for every line it takes, exactly the row the
indexer builds from ``parse_line``, and stop before every line it does not take, so
that ``parse_line`` decides it. These tests drive it the way the indexer does: run
it, let Python parse the one line where it stopped, run it again. They also pin its
contract down: ``in_fast_case`` below says independently which lines it must take.
"""

from __future__ import annotations

import ctypes
import datetime
import mmap
import re
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from umonitor.records import Kind, Origin, Record, Severity
from umonitor.store.index_schema import from_sql_u64, record_row
from umonitor.store.logfile import (
    BootLine,
    DroppedLine,
    LineError,
    RecordLine,
    format_boot_line,
    format_dropped_line,
    format_record_line,
    parse_line,
)

try:
    from umonitor._speedups import parse_record_lines
except ImportError as exc:  # CI builds the extension: a missing one is a failure
    raise ImportError(
        "umonitor._speedups.parse_record_lines is not built; "
        "run `pip install -e .` with a C compiler"
    ) from exc

Row = tuple[object, ...]
U64 = 2**64 - 1
MAX_FIELDS = 256
T = "2026-11-26T13:44:35.123456Z"
SECONDS_0001 = -62_135_596_800  # 0001-01-01T00:00:00Z
SECONDS_9999 = 253_402_300_799  # 9999-12-31T23:59:59Z
SECONDS_1000 = -30_610_224_000  # 1000-01-01T00:00:00Z

# -- the reference: what the indexer builds from parse_line ---------------------------


def python_parse(raw: bytes) -> BootLine | DroppedLine | RecordLine | None:
    """``parse_line`` as the indexer calls it; None also for a rejected line."""
    try:
        return parse_line(raw.decode("utf-8", "replace"))
    except LineError:
        return None


def python_row(parsed: RecordLine) -> Row:
    return record_row(parsed)


def python_rows(data: bytes, pos: int, end: int) -> list[Row]:
    """The rows of every complete record line in data[pos:end], by Python alone."""
    complete = data.rfind(b"\n", pos, end) + 1
    rows = []
    if complete > pos:
        for raw in data[pos:complete].split(b"\n")[:-1]:
            parsed = python_parse(raw)
            if isinstance(parsed, RecordLine):
                rows.append(python_row(parsed))
    return rows


def assert_same_row(got: object, expected: Row) -> None:
    assert type(got) is tuple
    assert got == expected
    assert [type(v) for v in got] == [type(v) for v in expected]


# -- the contract: which lines the fast path takes ---------------------------------------

_KEY = rb"[!#-<>-~]+"  # printable, no space, '"' or '='
_VALUE = rb'"[ !#-~]*"|[!#-<>-~]*'  # quoted without '"', or bare without '"' and '='
_PAIR = rb"(" + _KEY + rb")=(?:" + _VALUE + rb")"
_FIELDS = re.compile(rb"(?:" + _PAIR + rb"(?: " + _PAIR + rb")*)?")
_PAIRS = re.compile(rb"(?:^| )" + _PAIR)
_RECORD = re.compile(
    rb"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\.\d{6}Z"
    rb" (?:emerg|alert|crit|err|warning|notice|info|debug)"
    rb" (?:app|console|syslog)(?:/(?:enter|exit|crash))?"
    rb" (0|[1-9]\d*)"
    rb" (?:-|\+(0|[1-9]\d*)\.(\d{9}))"
    rb" ([^ \t]*)"
    rb" [^\t]*"
    rb"(?:\t(.*))?",
    re.S,
)


def in_fast_case(raw: bytes) -> bool:
    """Whether ``parse_record_lines`` takes this line (without its newline)."""
    if any(not (0x20 <= b <= 0x7E and b != 0x5C) and b != 0x09 for b in raw):
        return False
    match = _RECORD.fullmatch(raw)
    if match is None:
        return False
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    try:
        datetime.date(year, month, day)
    except ValueError:
        return False
    if hour > 23 or minute > 59 or second > 61:
        return False
    seq, whole, fraction, source, fields = match.groups()[6:]
    if int(seq) > U64:
        return False
    if whole is not None and int(whole) * 1_000_000_000 + int(fraction) > U64:
        return False
    if source != b"-":
        line_text = source.partition(b":")[2].partition(b":")[0]
        if line_text and not (line_text.isdigit() and int(line_text) <= U64):
            return False
    if fields is not None:
        if _FIELDS.fullmatch(fields) is None:
            return False
        keys = [m.group(1) for m in _PAIRS.finditer(fields)]
        if len(set(keys)) != len(keys) or len(keys) > MAX_FIELDS:
            return False
    return True


# -- the indexer-like driver -----------------------------------------------------------


def check_call(data: bytes | bytearray, pos: int, end: int) -> tuple[int, list[Row]]:
    """One call, checked: it took whole record lines, each exactly as Python reads it."""
    stop, rows = parse_record_lines(data, pos, end)
    assert type(stop) is int and type(rows) is list
    assert pos <= stop <= end
    assert stop == pos or data[stop - 1] == 0x0A  # a line start
    taken = bytes(data[pos:stop])
    lines = taken.split(b"\n")[:-1] if taken else []
    assert len(lines) == len(rows)
    for raw, row in zip(lines, rows, strict=True):
        parsed = python_parse(raw)
        # Never a line Python rejects or reads as anything but a record.
        assert isinstance(parsed, RecordLine), raw
        assert_same_row(row, python_row(parsed))
        assert in_fast_case(raw), raw
    newline = bytes(data).find(b"\n", stop, end)
    if newline >= 0:
        # It stopped at a complete line: one outside the fast case.
        assert not in_fast_case(bytes(data[stop:newline])), data[stop:newline]
    return stop, rows


def drive(data: bytes, pos: int, end: int) -> tuple[list[Row], int, int]:
    """Rows as an indexer using the fast path gets them; also counts fast and slow."""
    rows: list[Row] = []
    fast = slow = 0
    at = pos
    while True:
        stop, got = check_call(data, at, end)
        rows.extend(got)
        fast += len(got)
        newline = data.find(b"\n", stop, end)
        if newline < 0:
            return rows, fast, slow
        parsed = python_parse(data[stop:newline])
        if isinstance(parsed, RecordLine):
            rows.append(python_row(parsed))
            slow += 1
        at = newline + 1


# -- strategies ----------------------------------------------------------------------

PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
SPECIAL = st.sampled_from(
    ["\\", '"', "=", " ", ":", "-", "/", "#", "\t", "\n", "\r", "\x00", "\x1b", "\x7f", "\x85"]
)
ANY_CHAR = st.one_of(st.sampled_from("é😀"), st.characters(codec="utf-8"))


def texts(max_size: int, min_size: int = 0) -> st.SearchStrategy[str]:
    """Mostly printable ASCII, often with a character the fast path must refuse."""
    return st.one_of(
        st.text(PRINTABLE, min_size=min_size, max_size=max_size),
        st.text(PRINTABLE, min_size=min_size, max_size=max_size),
        st.text(st.one_of(PRINTABLE, SPECIAL, ANY_CHAR), min_size=min_size, max_size=max_size),
    )


def safe_text(refused: str = "", **kwargs: int) -> st.SearchStrategy[str]:
    chars = st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="\\" + refused)
    return st.text(chars, **kwargs)


KEYS = st.one_of(st.sampled_from(["a", "k", "status", "ms", "a b", 'q"', "x=y"]), texts(8, 1))
VALUES = st.one_of(
    st.sampled_from(["", "1", "a b", 'say "hi"', "x=y", "/dev/vda", "é", "a\tb", " "]),
    texts(16),
)
FIELDS = st.lists(st.tuples(KEYS, VALUES), max_size=5).map(tuple)
SAFE_FIELDS = st.lists(
    st.tuples(safe_text(' ="', min_size=1, max_size=8), safe_text('"', max_size=16)),
    max_size=5,
    unique_by=lambda pair: pair[0],
).map(tuple)

records = st.builds(
    Record,
    seq=st.one_of(st.integers(0, 50), st.integers(0, U64), st.integers(-(2**70), 2**70)),
    severity=st.sampled_from(list(Severity)),
    message=texts(80),
    kind=st.sampled_from(list(Kind)),
    mono_ns=st.one_of(
        st.none(), st.integers(0, 10**12), st.integers(0, U64), st.integers(-(2**70), 2**70)
    ),
    wall_ns=st.none(),
    file=st.one_of(st.sampled_from(["", "-", "main.c", "a:b", "a b"]), texts(20)),
    line=st.one_of(st.just(0), st.integers(0, 2**32 - 1), st.integers(0, 2**70)),
    function=st.one_of(st.sampled_from(["", "-", "main", "f:g"]), texts(20)),
    fields=FIELDS,
)

fast_records = st.builds(
    Record,
    seq=st.one_of(st.integers(1, 1000), st.integers(0, U64)),
    severity=st.sampled_from(list(Severity)),
    message=safe_text(max_size=80),
    kind=st.sampled_from(list(Kind)),
    mono_ns=st.one_of(st.none(), st.integers(0, U64)),
    wall_ns=st.none(),
    file=safe_text(" :", max_size=12).filter(lambda s: s != "-"),
    line=st.integers(0, U64),
    function=safe_text(" :", max_size=12),
    fields=SAFE_FIELDS,
)

TIMES = st.builds(
    lambda second, rest: second * 1_000_000_000 + rest,
    st.one_of(
        st.integers(1_700_000_000, 1_800_000_000),
        st.integers(0, SECONDS_9999),
        st.integers(SECONDS_0001, SECONDS_9999),
        st.sampled_from([951_782_400, 1_709_164_800, 4_107_542_400, SECONDS_0001, SECONDS_9999]),
    ),
    st.integers(0, 999_999_999),
)
# The formatter writes years before 1000 with fewer than four digits.
FOUR_DIGIT_YEARS = st.builds(
    lambda second, rest: second * 1_000_000_000 + rest,
    st.one_of(st.integers(1_700_000_000, 1_800_000_000), st.integers(SECONDS_1000, SECONDS_9999)),
    st.integers(0, 999_999_999),
)
ORIGINS = st.sampled_from(list(Origin))


def record_line(record: Record, time_ns: int, origin: Origin) -> bytes:
    return format_record_line(time_ns, origin, record).encode()


record_lines = st.builds(record_line, records, TIMES, ORIGINS)
fast_lines = st.builds(record_line, fast_records, FOUR_DIGIT_YEARS, ORIGINS)
context_lines = st.one_of(
    st.builds(
        lambda b: format_boot_line(b).encode(),
        st.builds(BootLine, st.text(max_size=32), texts(12), texts(12), texts(12)),
    ),
    st.builds(
        lambda d: format_dropped_line(d).encode(),
        st.builds(DroppedLine, st.text(max_size=32), st.integers(0, 99), st.integers(0, 99)),
    ),
    st.sampled_from([b"# a comment", b"#", b"", b" ", b"garbage"]),
)
garbage_lines = st.binary(max_size=80).map(lambda b: b.replace(b"\n", b""))


@st.composite
def damaged_lines(draw: st.DrawFn) -> bytes:
    """A common-case line with a few bytes replaced, inserted or removed."""
    line = bytearray(draw(fast_lines))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(line)))
        byte = draw(st.one_of(st.sampled_from(b' \t"=:/.+-0519#\\Tt\xc3\x7f'), st.integers(0, 255)))
        action = draw(st.sampled_from(["replace", "insert", "delete"]))
        if action == "insert" or at == len(line):
            line.insert(at, byte)
        elif action == "replace":
            line[at] = byte
        else:
            del line[at]
    return bytes(line).replace(b"\n", b"")


other_lines = st.one_of(record_lines, damaged_lines(), context_lines, garbage_lines)


@st.composite
def any_lines(draw: st.DrawFn) -> bytes:
    """A common-case line about half of the time, else anything."""
    return draw(fast_lines if draw(st.booleans()) else other_lines)


# -- (a) equivalence with parse_line -------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(
    st.lists(any_lines(), max_size=14), st.binary(max_size=12), st.binary(max_size=12), st.data()
)
def test_rows_match_parse_line(
    lines: list[bytes], prefix: bytes, suffix: bytes, data: st.DataObject
) -> None:
    body = b"".join(line + b"\n" for line in lines)
    if data.draw(st.booleans(), label="cut"):
        body = body[: data.draw(st.integers(0, len(body)), label="end")]
    buf = prefix + body + suffix
    pos, end = len(prefix), len(prefix) + len(body)
    rows, fast, slow = drive(buf, pos, end)
    assert rows == python_rows(buf, pos, end)
    assert fast + slow == len(rows)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(records, TIMES, ORIGINS), min_size=1, max_size=8))
def test_arbitrary_records_round_trip(items: list[tuple[Record, int, Origin]]) -> None:
    data = b"".join(record_line(r, t, o) + b"\n" for r, t, o in items)
    rows, fast, _slow = drive(data, 0, len(data))
    assert rows == python_rows(data, 0, len(data))
    assert fast == sum(in_fast_case(line) for line in data.split(b"\n")[:-1])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(fast_records, FOUR_DIGIT_YEARS, ORIGINS), max_size=10))
def test_common_case_lines_are_taken_in_one_call(items: list[tuple[Record, int, Origin]]) -> None:
    data = b"".join(record_line(r, t, o) + b"\n" for r, t, o in items)
    stop, rows = check_call(data, 0, len(data))
    assert stop == len(data)
    assert rows == python_rows(data, 0, len(data))
    for row, (record, time_ns, origin) in zip(rows, items, strict=True):
        assert from_sql_u64(row[0]) == record.seq and row[4] == origin.value  # type: ignore[arg-type]
        assert row[1] == min(max(time_ns // 1000 * 1000, -(2**63)), 2**63 - 1)


@pytest.mark.parametrize(
    ("stamp", "time_ns"),
    [
        ("1677-09-21T00:12:43.145225Z", -9_223_372_036_854_775_000),  # the first in range
        ("1677-09-21T00:12:43.145224Z", -(2**63)),  # 192 ns too early: saturated
        ("1677-09-21T00:12:43.000000Z", -(2**63)),
        ("1677-09-21T00:12:44.000000Z", -9_223_372_036_000_000_000),
        ("0001-01-01T00:00:00.000000Z", -(2**63)),
        ("2262-04-11T23:47:16.854775Z", 9_223_372_036_854_775_000),  # the last in range
        ("2262-04-11T23:47:16.854776Z", 2**63 - 1),
        ("9999-12-31T23:59:59.999999Z", 2**63 - 1),
    ],
)
def test_index_times_saturate_at_sqlite_integer(stamp: str, time_ns: int) -> None:
    """Times outside what SQLite's INTEGER holds are clamped, by C and Python alike."""
    line = f"{stamp} info app 1 - f.c:1:f hi\n".encode()
    stop, rows = check_call(line, 0, len(line))
    assert stop == len(line) and rows[0][1] == time_ns


# -- (b) arbitrary bytes ---------------------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=16), st.binary(max_size=400), st.binary(max_size=16))
def test_arbitrary_bytes(prefix: bytes, body: bytes, suffix: bytes) -> None:
    buf = bytearray(prefix + body + suffix)
    pos, end = len(prefix), len(prefix) + len(body)
    stop, rows = check_call(buf, pos, end)
    # Only data[pos:end] matters.
    assert parse_record_lines(bytes(buf[pos:end]), 0, end - pos) == (stop - pos, rows)
    # The buffer export was released: the bytearray can be resized.
    buf.extend(b"x")


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(damaged_lines(), fast_lines), min_size=1, max_size=6))
def test_damaged_lines(lines: list[bytes]) -> None:
    data = b"".join(line + b"\n" for line in lines)
    rows, _fast, _slow = drive(data, 0, len(data))
    assert rows == python_rows(data, 0, len(data))


def _fenced(data: bytes) -> tuple[mmap.mmap, int, int]:
    """``data`` copied to end exactly where an unreadable page begins."""
    page = mmap.PAGESIZE
    pages = -(-len(data) // page) + 1
    area = mmap.mmap(-1, (pages + 1) * page)
    fence = pages * page
    start = fence - len(data)
    area[start:fence] = data
    anchor = ctypes.c_char.from_buffer(area)
    fence_address = ctypes.addressof(anchor) + fence
    del anchor
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    if libc.mprotect(fence_address, page, 0) != 0:  # PROT_NONE
        raise OSError(ctypes.get_errno(), "mprotect failed")
    return area, start, fence


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses mprotect via ctypes")
@settings(max_examples=200, deadline=None)
@given(st.lists(fast_lines, max_size=4), st.integers(0, 10_000), st.binary(max_size=40))
def test_never_reads_past_end(lines: list[bytes], cut: int, tail: bytes) -> None:
    data = b"".join(line + b"\n" for line in lines)
    data = data[: cut % (len(data) + 1)] + tail
    area, pos, end = _fenced(data)
    try:
        stop, rows = parse_record_lines(area, pos, end)
    finally:
        area.close()
    assert parse_record_lines(data, 0, len(data)) == (stop - pos, rows)


@pytest.mark.parametrize(("pos", "end"), [(-1, 4), (5, 4), (0, 10_000)])
def test_bad_positions_raise_and_release_the_buffer(pos: int, end: int) -> None:
    buf = bytearray(T.encode() + b" info app 1 - - x\n")
    with pytest.raises(ValueError):
        parse_record_lines(buf, pos, end)
    buf.extend(b"x")


def test_argument_errors() -> None:
    with pytest.raises(TypeError):
        parse_record_lines(b"", 0)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        parse_record_lines("text", 0, 0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        parse_record_lines(b"", 0.0, 0)  # type: ignore[arg-type]


def test_other_buffers() -> None:
    line = (T + " info app 1 - - x\n").encode()
    expected = (len(line), python_rows(line, 0, len(line)))
    assert parse_record_lines(bytearray(line), 0, len(line)) == expected
    assert parse_record_lines(memoryview(line), 0, len(line)) == expected
    assert parse_record_lines(b"", 0, 0) == (0, [])


# -- (c) lines cut at end --------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(fast_lines, fast_lines, any_lines()), min_size=1, max_size=5))
def test_lines_cut_at_end_are_never_consumed(lines: list[bytes]) -> None:
    data = b"".join(line + b"\n" for line in lines)
    all_fast = all(in_fast_case(line) for line in lines)
    for cut in range(len(data) + 1):
        complete = data.rfind(b"\n", 0, cut) + 1
        stop, _rows = check_call(data, 0, cut)
        assert stop <= complete
        if all_fast:
            assert stop == complete
        assert drive(data, 0, cut)[0] == python_rows(data, 0, cut)


# -- examples ---------------------------------------------------------------------------------


def line_with(**parts: str) -> str:
    """A line from these tokens; the defaults make a common-case line."""
    tokens = {
        "time": T,
        "severity": "warning",
        "origin": "app",
        "seq": "42",
        "uptime": "+1.234567890",
        "source": "main.c:120:divide",
        "message": "division by zero",
    }
    tokens.update(parts)
    fields = tokens.pop("fields", None)
    line = " ".join(tokens.values())
    return line if fields is None else f"{line}\t{fields}"


TAKEN = [
    line_with(),
    line_with(fields="a=10 b=0"),
    line_with(fields=""),
    line_with(fields='a="x y" b= c=""'),
    line_with(fields='k="a=b" url=/dev/vda path="/a b/"'),
    line_with(fields="x!#$%&'()*+,-./:;<>?@[]^_`{|}~=y!#$%&'()*+,-./:;<>?@[]^_`{|}~"),
    line_with(fields=" ".join(f"k{i}=v" for i in range(MAX_FIELDS))),
    line_with(message=""),
    line_with(message='  spaces,  quotes " = and # everywhere  '),
    line_with(time="2024-02-29T00:00:00.000000Z"),
    line_with(time="2000-02-29T23:59:59.999999Z"),
    line_with(time="2026-12-31T23:59:60.000000Z"),
    line_with(time="2026-12-31T23:59:61.500000Z"),
    line_with(time="1970-01-01T00:00:00.000000Z"),
    line_with(time="1969-12-31T23:59:59.999999Z"),
    line_with(time="0001-01-01T00:00:00.000000Z"),
    line_with(time="9999-12-31T23:59:61.999999Z"),
    line_with(time="2262-04-11T23:47:16.854775Z"),
    line_with(time="2262-04-11T23:47:17.000000Z"),
    line_with(severity="emerg", origin="console/crash"),
    line_with(severity="debug", origin="syslog/enter"),
    line_with(origin="app/exit"),
    line_with(seq="0"),
    line_with(seq=str(U64)),
    line_with(uptime="-"),
    line_with(uptime="+0.000000000"),
    line_with(uptime="+18446744073.709551615"),
    line_with(source="-"),
    line_with(source="main.c::divide"),
    line_with(source="::"),
    line_with(source=":::"),
    line_with(source=""),
    line_with(source="main.c"),
    line_with(source="main.c:7"),
    line_with(source="a:1:b:c"),
    line_with(source="main.c:0120:divide"),
    line_with(source=f"main.c:{U64}:divide"),
]

# Lines the fast path leaves to Python, and whether Python takes them.
LEFT = [
    pytest.param("# boot 00ff lib=x peer=y name=z", False, id="comment"),
    pytest.param("", False, id="empty"),
    pytest.param(line_with(time="2023-02-29T00:00:00.000000Z"), False, id="feb 29 no leap"),
    pytest.param(line_with(time="1900-02-29T00:00:00.000000Z"), False, id="feb 29 1900"),
    pytest.param(line_with(time="2026-04-31T00:00:00.000000Z"), False, id="april 31"),
    pytest.param(line_with(time="2026-00-10T00:00:00.000000Z"), False, id="month 0"),
    pytest.param(line_with(time="2026-13-10T00:00:00.000000Z"), False, id="month 13"),
    pytest.param(line_with(time="2026-01-00T00:00:00.000000Z"), False, id="day 0"),
    pytest.param(line_with(time="0000-01-01T00:00:00.000000Z"), False, id="year 0"),
    pytest.param(line_with(time="2026-01-01T24:00:00.000000Z"), False, id="hour 24"),
    pytest.param(line_with(time="2026-01-01T00:60:00.000000Z"), False, id="minute 60"),
    pytest.param(line_with(time="2026-01-01T00:00:62.000000Z"), False, id="second 62"),
    pytest.param(line_with(time="2026-01-01 00:00:00.000000Z"), False, id="space in time"),
    pytest.param(line_with(time="2026-01-01T00:00:00.00000Z"), False, id="5 micro digits"),
    pytest.param(line_with(time="2026-01-01T00:00:00.000000"), False, id="no Z"),
    pytest.param(line_with(time="2026-01-01T00:00:00,000000Z"), False, id="comma"),
    pytest.param(line_with(time="2026-01-01t00:00:00.000000Z"), True, id="lower-case t"),
    pytest.param(line_with(time="2026-1-01T00:00:00.0000000Z"), False, id="short month"),
    pytest.param(line_with(severity="warn"), False, id="severity alias"),
    pytest.param(line_with(severity="INFO"), False, id="severity case"),
    pytest.param(line_with(origin="kernel"), False, id="unknown origin"),
    pytest.param(line_with(origin="app/"), True, id="empty kind"),
    pytest.param(line_with(origin="app/log"), False, id="unknown kind"),
    pytest.param(line_with(origin="app/enter/x"), False, id="kind with slash"),
    pytest.param(line_with(seq="0005"), True, id="seq leading zeros"),
    pytest.param(line_with(seq="00"), True, id="seq 00"),
    pytest.param(line_with(seq="+5"), True, id="seq plus"),
    pytest.param(line_with(seq="5_0"), True, id="seq underscore"),
    pytest.param(line_with(seq="-1"), True, id="seq negative"),
    pytest.param(line_with(seq=str(U64 + 1)), True, id="seq beyond u64"),
    pytest.param(line_with(seq=""), False, id="seq empty"),
    pytest.param(line_with(seq="x"), False, id="seq not a number"),
    pytest.param(line_with(uptime="+1.5"), True, id="uptime short fraction"),
    pytest.param(line_with(uptime="+1.0000000000"), True, id="uptime long fraction"),
    pytest.param(line_with(uptime="+01.000000000"), True, id="uptime leading zero"),
    pytest.param(line_with(uptime="x1.000000000"), True, id="uptime without plus"),
    pytest.param(line_with(uptime="+.000000000"), False, id="uptime no whole"),
    pytest.param(line_with(uptime="+1"), False, id="uptime no fraction"),
    pytest.param(line_with(uptime="+18446744073.709551616"), True, id="uptime beyond u64"),
    pytest.param(line_with(uptime="+-1.999999999"), True, id="uptime negative"),
    pytest.param(line_with(source="main.c:x:divide"), True, id="line not digits"),
    pytest.param(line_with(source=f"main.c:{U64 + 1}:divide"), True, id="line beyond u64"),
    pytest.param(line_with(source="main\\x20c:1:f"), True, id="escaped source"),
    pytest.param(line_with(source="ma\tin.c:1:f"), True, id="tab in source"),
    pytest.param(line_with(message="tab\tand\ttab"), True, id="second tab"),
    pytest.param(line_with(message="back\\\\slash"), True, id="backslash"),
    pytest.param(line_with(message="caf\u00e9"), True, id="non-ASCII"),
    pytest.param(line_with(message="del\x7f"), True, id="DEL"),
    pytest.param(line_with(message="cr\r"), True, id="CR"),
    pytest.param(line_with(message="nul\x00"), True, id="NUL"),
    pytest.param(line_with(fields="a=1 a=2"), True, id="duplicate key"),
    pytest.param(line_with(fields="a=b=c"), True, id="equals in bare value"),
    pytest.param(line_with(fields='a=x"y'), True, id="quote in bare value"),
    pytest.param(line_with(fields='a="x'), True, id="unterminated quote"),
    pytest.param(line_with(fields='a="x"y'), True, id="text after quote"),
    pytest.param(line_with(fields='a="x\\"y"'), True, id="escaped quote"),
    pytest.param(line_with(fields="a=1  b=2"), True, id="two spaces"),
    pytest.param(line_with(fields="a=1 "), True, id="trailing space"),
    pytest.param(line_with(fields=" a=1"), True, id="leading space"),
    pytest.param(line_with(fields="=1"), True, id="empty key"),
    pytest.param(line_with(fields="a"), True, id="no equals"),
    pytest.param(line_with(fields='a"b=1'), True, id="quote in key"),
    pytest.param(line_with(fields="a=1\tb=2"), True, id="tab in fields"),
    pytest.param(
        line_with(fields=" ".join(f"k{i}=v" for i in range(MAX_FIELDS + 1))), True, id="257"
    ),
    pytest.param(line_with(severity=""), False, id="empty token"),
    pytest.param(" ".join(line_with().split(" ")[:6]), False, id="six tokens"),
]


@pytest.mark.parametrize("line", TAKEN)
def test_takes_common_lines(line: str) -> None:
    data = f"{line}\n# boot 00 lib=- peer=- name=-\n".encode()
    stop, rows = check_call(data, 0, len(data))
    assert stop == len(line) + 1
    parsed = parse_line(line)
    assert isinstance(parsed, RecordLine)
    assert rows == [python_row(parsed)]


@pytest.mark.parametrize(("line", "python_takes"), LEFT)
def test_leaves_other_lines_to_python(line: str, python_takes: bool) -> None:
    good = line_with(seq="1")
    data = f"{good}\n{line}\n{good}\n".encode()
    stop, rows = check_call(data, 0, len(data))
    assert stop == len(good) + 1 and len(rows) == 1
    assert isinstance(python_parse(line.encode()), RecordLine) == python_takes
    assert drive(data, 0, len(data))[0] == python_rows(data, 0, len(data))


def test_row_values() -> None:
    line = line_with(
        origin="console/exit",
        fields='a=10 op="a / b" path=/dev/vda empty="" bare=',
    )
    data = f"{line}\n".encode()
    assert parse_record_lines(data, 0, len(data)) == (
        len(data),
        [
            (
                42,
                1_795_700_675_123_456_000,
                1_234_567_890,
                4,
                "console",
                2,
                "main.c",
                120,
                "divide",
                "division by zero",
                '{"a": "10", "op": "a / b", "path": "/dev/vda", "empty": "", "bare": ""}',
            )
        ],
    )


@pytest.mark.parametrize(
    ("time_text", "seconds"),
    [
        ("2024-02-29T00:00:00", 1_709_164_800),
        ("2000-02-29T12:00:00", 951_825_600),
        ("2026-12-31T23:59:60", 1_798_761_600),
        ("2026-12-31T23:59:61", 1_798_761_601),
        ("1969-12-31T23:59:59", -1),
        ("0001-01-01T00:00:00", SECONDS_0001),
        ("9999-12-31T23:59:59", SECONDS_9999),
    ],
)
def test_times(time_text: str, seconds: int) -> None:
    data = f"{line_with(time=time_text + '.000007Z')}\n".encode()
    _stop, rows = check_call(data, 0, len(data))
    # Years 1-1677 and 2262-9999 are saturated to SQLite's INTEGER range.
    assert rows[0][1] == min(max(seconds * 1_000_000_000 + 7000, -(2**63)), 2**63 - 1)


def test_large_values() -> None:
    data = f"{line_with(seq=str(U64), uptime='+18446744073.709551615')}\n".encode()
    (row,) = check_call(data, 0, len(data))[1]
    assert row[0] == -1 and row[2] == -1  # as SQLite's signed INTEGER holds them
    assert from_sql_u64(-1) == U64


def test_stops_at_a_line_without_newline() -> None:
    line = line_with().encode()
    data = line + b"\n" + line
    assert parse_record_lines(data, 0, len(data))[0] == len(line) + 1
    assert parse_record_lines(data, 0, len(line))[0] == 0
    assert parse_record_lines(data, len(line) + 1, len(data)) == (len(line) + 1, [])
