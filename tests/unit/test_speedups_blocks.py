"""The C block summary and line scan against blocks.py's pure-Python reference.

``summarize_lines`` must add, for every line it takes, exactly what ``blocks.add_line``
adds, and stop before every other line so that Python reads it; ``scan_lines`` must
keep every line a query may want (each record line it takes with its exact time) and
leave out only record lines that cannot match. ``in_fast_case`` below says
independently which lines both take, so a fast path that quietly takes nothing fails
here too.
"""

from __future__ import annotations

import ctypes
import mmap
import sys
from array import array
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.block_lines import (
    FOLD,
    U64,
    in_fast_case,
    message_bytes,
    python_parse,
    split_lines,
)
from umonitor.records import Kind, Origin, Record, Severity
from umonitor.store import blocks
from umonitor.store.logfile import (
    BootLine,
    DroppedLine,
    RecordLine,
    format_boot_line,
    format_dropped_line,
    format_record_line,
)

try:
    from umonitor._speedups import scan_lines as c_scan_lines
    from umonitor._speedups import summarize_lines
except ImportError as exc:  # CI builds the extension: a missing one is a failure
    raise ImportError(
        "umonitor._speedups.summarize_lines and scan_lines are not built; "
        "run `pip install -e .` with a C compiler"
    ) from exc

I64_MIN = -(2**63)
I64_MAX = 2**63 - 1
T = "2026-11-26T13:44:35.123456Z"
SECONDS_0001 = -62_135_596_800  # 0001-01-01T00:00:00Z
SECONDS_9999 = 253_402_300_799  # 9999-12-31T23:59:59Z
ORIGIN_BIT = {b"app": 1, b"console": 2, b"syslog": 4}


def folded_message(raw: bytes) -> bytes:
    return message_bytes(raw).translate(FOLD)


# -- strategies ----------------------------------------------------------------------------

SPECIAL = st.sampled_from(
    [
        *["\\", '"', "=", " ", ":", "-", "/", "#", "\t", "\n", "\r", "\x00", "\x1b"],
        *["\x7f", "\x85", "\u2028", "\ufeff", "é", "😀", "²", "Ａ"],
    ]
)


def texts(max_size: int, min_size: int = 0) -> st.SearchStrategy[str]:
    """Mostly printable ASCII, often with a character a parser may trip on."""
    return st.text(
        st.one_of(
            st.characters(min_codepoint=0x20, max_codepoint=0x7E),
            SPECIAL,
            st.characters(codec="utf-8"),
        ),
        min_size=min_size,
        max_size=max_size,
    )


ASCII = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)
FIELDS = st.lists(st.tuples(texts(8, 1), texts(16)), max_size=4).map(tuple)
TIMES = st.builds(
    lambda second, rest: second * 1_000_000_000 + rest,
    st.one_of(
        st.integers(1_700_000_000, 1_800_000_000),
        st.integers(SECONDS_0001, SECONDS_9999),
        st.sampled_from([SECONDS_0001, SECONDS_9999, -1, 0, 9_223_372_036, -9_223_372_037]),
    ),
    st.integers(0, 999_999_999),
)
ORIGINS = st.sampled_from(list(Origin))


def _records(
    seq: st.SearchStrategy[int], mono: st.SearchStrategy[int | None], text: Any, line: Any
) -> st.SearchStrategy[Record]:
    return st.builds(
        Record,
        seq=seq,
        severity=st.sampled_from(list(Severity)),
        message=texts(100),
        kind=st.sampled_from(list(Kind)),
        mono_ns=mono,
        wall_ns=st.none(),
        file=text,
        line=line,
        function=text,
        fields=FIELDS,
    )


# Records the fast paths always take: numbers within u64, ASCII source names (any
# message and fields: those may hold every byte but a newline).
taken_records = _records(
    st.one_of(st.integers(1, 1000), st.integers(0, U64)),
    st.one_of(st.none(), st.integers(0, U64)),
    st.one_of(st.sampled_from(["", "-", "main.c", "a:b", "a b", "a\\b"]), ASCII),
    st.one_of(st.integers(0, 5000), st.integers(0, U64)),
)
any_records = _records(
    st.one_of(st.integers(0, U64), st.integers(-(2**70), 2**70)),
    st.one_of(st.none(), st.integers(0, U64), st.integers(-(2**70), 2**70)),
    texts(12),
    st.one_of(st.integers(0, U64), st.integers(0, 2**70)),
)


def record_line(record: Record, time_ns: int, origin: Origin) -> bytes:
    return format_record_line(time_ns, origin, record).encode("utf-8", "surrogatepass")


taken_lines = st.builds(record_line, taken_records, TIMES, ORIGINS)
record_lines = st.builds(record_line, any_records, TIMES, ORIGINS)
context_lines = st.one_of(
    st.builds(
        lambda b: format_boot_line(b).encode(),
        st.builds(BootLine, st.text(max_size=32), texts(12), texts(12), texts(12)),
    ),
    st.builds(
        lambda d: format_dropped_line(d).encode(),
        st.builds(DroppedLine, st.text(max_size=32), st.integers(0, 99), st.integers(0, 99)),
    ),
    st.sampled_from([b"# a comment", b"#", b"", b" ", b"garbage", b"\t"]),
)
garbage_lines = st.binary(max_size=120).map(lambda b: b.replace(b"\n", b""))


@st.composite
def damaged_lines(draw: st.DrawFn) -> bytes:
    """A taken line with a few bytes replaced, inserted or removed (often in the tokens)."""
    line = bytearray(draw(taken_lines))
    tokens_end = blocks.message_span(bytes(line))[0]
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, min(len(line), tokens_end + 2)))
        byte = draw(
            st.one_of(
                st.sampled_from(b' \t"=:/.+-0519#\\Tt\xc3\x80\x7f\r\x0b'), st.integers(0, 255)
            )
        )
        action = draw(st.sampled_from(["replace", "insert", "delete", "truncate"]))
        if action == "insert" or at == len(line):
            line.insert(at, byte)
        elif action == "replace":
            line[at] = byte
        elif action == "delete":
            del line[at]
        else:
            del line[at:]
    return bytes(line).replace(b"\n", b"")


@st.composite
def odd_tokens(draw: st.DrawFn) -> bytes:
    """A line with one token spelled oddly: non-canonical numbers, whitespace, case."""
    tokens = [T, "warning", "app", "42", "+1.234567890", "main.c:120:divide"]
    at = draw(st.integers(0, 5))
    tokens[at] = draw(
        st.sampled_from(
            {
                0: ["2023-02-29T00:00:00.000000Z", "2026-01-01t00:00:00.000000Z", T + "\t", ""],
                1: ["warn", "INFO", "info\t", "\tinfo", "info\x0b", "info\xa0"],
                2: ["app/", "app/log", "kernel", "app/enter/x", "APP", "app\r"],
                3: ["0005", "00", "+5", "5_0", "-1", str(U64 + 1), "", "٣", "5\t"],
                4: ["+1.5", "+01.000000000", "+18446744073.709551616", "-\t", "+1.00000000٣"],
                5: ["main.c:x:f", f"a:{U64 + 1}:f", "a:²:f", "a\tb", "é:1:f", "a:1:é", "a:0012:"],
            }[at]
        )
    )
    message = draw(texts(30))
    tail = draw(st.sampled_from(["", "\tk=v", "\t\t", "\tk=\\x"]))
    return (" ".join([*tokens, message]) + tail).encode().replace(b"\n", b"")


other_lines = st.one_of(record_lines, damaged_lines(), odd_tokens(), context_lines, garbage_lines)


@st.composite
def any_lines(draw: st.DrawFn) -> bytes:
    """A line the fast paths take about half of the time, else anything."""
    return draw(taken_lines if draw(st.booleans()) else other_lines)


def join(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


# -- summarize_lines, driven as blocks.summarize drives it ---------------------------------


def check_summarize_call(
    data: bytes | bytearray | mmap.mmap,
    pos: int,
    end: int,
    stop_after: int,
    counters: array[int],
    grams: bytearray,
) -> int:
    """One call, checked: it took whole record lines and added exactly what Python adds."""
    expected_counters = array("q", counters)
    expected_grams = bytearray(grams)
    stop = summarize_lines(data, pos, end, stop_after, counters, grams)
    assert type(stop) is int and pos <= stop <= end
    assert stop == pos or data[stop - 1] == 0x0A  # a line start
    whole = bytes(data[pos:end])
    for start, raw in split_lines(whole, 0, stop - pos):
        assert pos + start < stop_after  # never one past the line that reached stop_after
        assert in_fast_case(raw), raw
        assert isinstance(python_parse(raw), RecordLine), raw
        assert blocks.add_line(raw, expected_counters, expected_grams) is None
    assert counters == expected_counters
    assert grams == expected_grams
    newline = whole.find(b"\n", stop - pos)
    if stop < stop_after and newline >= 0:
        # It stopped before a complete line: one outside the fast case.
        assert not in_fast_case(whole[stop - pos : newline]), whole[stop - pos : newline]
    return stop


class Checked:
    """blocks.summarize_lines replaced by a checking wrapper that counts lines taken."""

    def __init__(self) -> None:
        self.taken = 0

    def __call__(
        self,
        data: bytes,
        pos: int,
        end: int,
        stop_after: int,
        counters: array[int],
        grams: bytearray,
    ) -> int:
        before = counters[blocks.LINES]
        stop = check_summarize_call(data, pos, end, stop_after, counters, grams)
        self.taken += counters[blocks.LINES] - before
        return stop


@pytest.fixture
def checked(monkeypatch: pytest.MonkeyPatch) -> Checked:
    wrapper = Checked()
    monkeypatch.setattr(blocks, "summarize_lines", wrapper)
    return wrapper


def assert_same_summary(data: bytes, block_bytes: int, checked: Checked) -> None:
    fast = blocks.summarize(data, 0, len(data), "", block_bytes, fast=True)
    slow = blocks.summarize(data, 0, len(data), "", block_bytes, fast=False)
    assert fast == slow
    assert fast.blocks == slow.blocks  # offsets, lengths, boots, counters, grams, bad
    assert fast.context == slow.context and fast.boot == slow.boot


BLOCK_BYTES = st.one_of(
    st.integers(1, 4096), st.integers(1, 300), st.just(blocks.BLOCK_BYTES), st.just(1)
)


@settings(max_examples=300, deadline=None)
@given(st.lists(any_lines(), max_size=16), BLOCK_BYTES)
def test_summaries_match_python(lines: list[bytes], block_bytes: int) -> None:
    wrapper = Checked()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(blocks, "summarize_lines", wrapper)
        assert_same_summary(join(lines), block_bytes, wrapper)
    # Every line is offered to the C path first: it took each one the contract says.
    assert wrapper.taken == sum(in_fast_case(line) for line in lines)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(taken_records, TIMES, ORIGINS), min_size=1, max_size=10))
def test_formatted_records_are_all_taken(items: list[tuple[Record, int, Origin]]) -> None:
    data = join([record_line(r, t, o) for r, t, o in items])
    counters = blocks.new_counters()
    grams = bytearray(blocks.GRAM_BYTES)
    stop = check_summarize_call(data, 0, len(data), len(data), counters, grams)
    assert stop == len(data)
    assert counters[blocks.RECORDS] == counters[blocks.LINES] == len(items)
    times = [blocks.clamp64(t // 1000 * 1000) for _r, t, _o in items]
    assert counters[blocks.MIN_NS] == min(times) and counters[blocks.MAX_NS] == max(times)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(taken_lines, other_lines), min_size=1, max_size=12), BLOCK_BYTES)
def test_hostile_lines(lines: list[bytes], block_bytes: int) -> None:
    data = join(lines)
    with pytest.MonkeyPatch.context() as patch:
        wrapper = Checked()
        patch.setattr(blocks, "summarize_lines", wrapper)
        assert_same_summary(data, block_bytes, wrapper)


def test_summaries_of_many_lines(checked: Checked) -> None:
    lines = []
    for i in range(3000):
        record = Record(i + 1, Severity(i % 8), f"request {i} handled in {i % 97} ms", Kind(i % 4))
        time_ns = 1_767_225_600_000_000_000 + i * 999_999
        lines.append(record_line(record, time_ns, list(Origin)[i % 3]))
        if i % 500 == 0:
            lines.append(format_boot_line(BootLine(f"{i:032x}", "lib", "-", "n")).encode())
        if i % 701 == 0:
            lines.append(b"garbage line")
    data = join(lines)
    for block_bytes in (1, 150, 4096, blocks.BLOCK_BYTES):
        checked.taken = 0
        assert_same_summary(data, block_bytes, checked)
        assert checked.taken == 3000


@pytest.mark.parametrize(
    ("stamp", "time_ns"),
    [
        ("1677-09-21T00:12:43.145225Z", -9_223_372_036_854_775_000),
        ("1677-09-21T00:12:43.145224Z", I64_MIN),
        ("0001-01-01T00:00:00.000000Z", I64_MIN),
        ("2262-04-11T23:47:16.854775Z", 9_223_372_036_854_775_000),
        ("2262-04-11T23:47:16.854776Z", I64_MAX),
        ("9999-12-31T23:59:61.999999Z", I64_MAX),
    ],
)
def test_times_saturate(stamp: str, time_ns: int) -> None:
    line = f"{stamp} info console/crash 1 - f.c:1:f Hi there\n".encode()
    counters = blocks.new_counters()
    grams = bytearray(blocks.GRAM_BYTES)
    assert check_summarize_call(line, 0, len(line), len(line), counters, grams) == len(line)
    assert counters[blocks.MIN_NS] == counters[blocks.MAX_NS] == time_ns
    assert counters[blocks.ORIGINS] == 2 | 1 << (blocks.KIND_SHIFT + 3)
    assert counters[blocks.SEVERITIES] == 1 << 6 and counters[blocks.COUNTS + 6] == 1
    assert blocks.has_grams(grams, blocks.needle_grams("HI THERE"))
    assert not blocks.has_grams(grams, blocks.needle_grams("hi you"))


def line_with(**parts: str) -> bytes:
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
    return (line if fields is None else f"{line}\t{fields}").encode("utf-8", "surrogateescape")


TAKEN = [
    line_with(),
    line_with(message=""),
    line_with(message="caf\u00e9 \\x00 \x00\x7f\r\x0b\x85 😀 \udcff\udcfe bytes"),
    line_with(message="tab\tin\tmessage"),
    line_with(fields='a=1 a=2 b="x'),
    line_with(message='  # = " spaces'),
    line_with(source="-", uptime="-"),
    line_with(source=""),
    line_with(source="a\\x20b:7:\\x3a"),
    line_with(source=":::"),
    line_with(seq=str(U64), uptime="+18446744073.709551615", source=f"a:{U64}:f"),
    line_with(origin="syslog/enter", severity="emerg"),
    line_with(time="0001-01-01T00:00:00.000000Z"),
]

LEFT = [
    b"# boot 00ff lib=x peer=y name=z",
    b"#",
    b"",
    b" ",
    line_with(origin="app/"),
    line_with(seq="0005"),
    line_with(seq="+5"),
    line_with(seq=str(U64 + 1)),
    line_with(uptime="+01.000000000"),
    line_with(source="ma\tin.c:1:f"),
    line_with(source="caf\u00e9.c:1:f"),
    line_with(source="a:\u00b2:f"),
    line_with(severity="info\t"),
    line_with(time="2026-01-01t00:00:00.000000Z"),
    line_with(time=T + "\x0b"),
    b"\xef\xbb\xbf" + line_with(),
    b" " + line_with(),
    line_with().replace(b" warning ", b"  warning "),
    b" ".join(line_with().split(b" ")[:6]),
]


@pytest.mark.parametrize("line", TAKEN)
def test_takes(line: bytes, checked: Checked) -> None:
    assert in_fast_case(line)
    data = line + b"\n# boot 00 lib=- peer=- name=-\n"
    counters = blocks.new_counters()
    grams = bytearray(blocks.GRAM_BYTES)
    assert check_summarize_call(data, 0, len(data), len(data), counters, grams) == len(line) + 1
    assert_same_summary(data, 4096, checked)
    assert checked.taken == 1


@pytest.mark.parametrize("line", LEFT)
def test_leaves_to_python(line: bytes, checked: Checked) -> None:
    assert not in_fast_case(line)
    good = line_with(seq="1")
    data = good + b"\n" + line + b"\n" + good + b"\n"
    counters = blocks.new_counters()
    grams = bytearray(blocks.GRAM_BYTES)
    assert check_summarize_call(data, 0, len(data), len(data), counters, grams) == len(good) + 1
    assert_same_summary(data, 4096, checked)
    assert checked.taken == 2
    found = c_scan_lines(data, 0, len(data), I64_MIN, I64_MAX, 7, 7, b"")
    assert found[1] == (len(good) + 1, None)


def test_stops_after_stop_after() -> None:
    line = line_with()
    data = join([line] * 4)
    size = len(line) + 1
    for stop_after in range(0, len(data) + 3):
        counters = blocks.new_counters()
        grams = bytearray(blocks.GRAM_BYTES)
        stop = check_summarize_call(data, 0, len(data), stop_after, counters, grams)
        assert stop == min(len(data), -(-stop_after // size) * size)
    # A last piece without its newline is never taken.
    counters = blocks.new_counters()
    grams = bytearray(blocks.GRAM_BYTES)
    assert summarize_lines(data + line, 0, len(data) + len(line), 10**9, counters, grams) == len(
        data
    )
    assert summarize_lines(data, size, size, 10**9, counters, grams) == size
    assert summarize_lines(data, 0, size - 1, 10**9, counters, grams) == 0


# -- scan_lines ------------------------------------------------------------------------------


def model_scan(
    data: bytes, pos: int, end: int, since: int, until: int, max_sev: int, mask: int, key: bytes
) -> list[tuple[int, int | None]]:
    """What the C scan gives, from in_fast_case and parse_line."""
    out: list[tuple[int, int | None]] = []
    for start, raw in split_lines(data, pos, end):
        if not in_fast_case(raw):
            out.append((start, None))
            continue
        start_msg, end_msg = blocks.message_span(raw)
        if key and blocks.irregular(raw[start_msg:end_msg]):
            out.append((start, None))  # the key search cannot tell: parse_line decides
            continue
        parsed = python_parse(raw)
        assert isinstance(parsed, RecordLine)
        time_ns = blocks.clamp64(parsed.time_ns)
        if (
            since <= time_ns <= until
            and parsed.record.severity <= max_sev
            and blocks.ORIGIN_BITS[parsed.origin] & mask
            and key in folded_message(raw)
        ):
            out.append((start, time_ns))
    return out


def matches(raw: bytes, since: int, until: int, max_sev: int, mask: int, grep: str) -> bool:
    """The exact query filter on what parse_line reads."""
    parsed = python_parse(raw)
    if not isinstance(parsed, RecordLine):
        return False
    return (
        since <= blocks.clamp64(parsed.time_ns) <= until
        and parsed.record.severity <= max_sev
        and bool(blocks.ORIGIN_BITS[parsed.origin] & mask)
        and blocks.fold(grep) in blocks.fold(parsed.record.message)
    )


def flip_case(text: str, flips: list[bool]) -> str:
    return "".join(
        c.swapcase() if c.isascii() and flip else c
        for c, flip in zip(text, flips + [False] * len(text), strict=False)
    )


@st.composite
def queries(draw: st.DrawFn, lines: list[bytes]) -> tuple[int, int, int, int, str]:
    times = [
        blocks.clamp64(p.time_ns) for p in map(python_parse, lines) if isinstance(p, RecordLine)
    ]
    bound = st.one_of(
        st.sampled_from([I64_MIN, I64_MAX, *times]) if times else st.just(I64_MIN),
        st.integers(I64_MIN, I64_MAX),
    )
    since, until = sorted([draw(bound), draw(bound)])
    if draw(st.booleans()):
        since, until = I64_MIN, I64_MAX
    max_sev = draw(st.one_of(st.integers(0, 7), st.integers(-3, 10)))
    mask = draw(st.one_of(st.integers(0, 7), st.integers(-(2**70), 2**70)))
    messages = [p.record.message for p in map(python_parse, lines) if isinstance(p, RecordLine)]
    grep = ""
    if messages and draw(st.booleans()):
        message = draw(st.sampled_from(messages))
        start = draw(st.integers(0, len(message)))
        grep = message[start : draw(st.integers(start, len(message)))]
        grep = flip_case(grep, draw(st.lists(st.booleans(), max_size=len(grep))))
    elif draw(st.booleans()):
        grep = draw(st.sampled_from(["zero", "ERR", "a", "é", "\\", "%", "x y"]))
    return since, until, max_sev, mask, grep


def check_scan(
    data: bytes, since: int, until: int, max_sev: int, mask: int, grep: str
) -> list[tuple[int, int | None]]:
    key = blocks.search_key(grep)
    got = c_scan_lines(data, 0, len(data), since, until, max_sev, mask, key)
    assert got == model_scan(data, 0, len(data), since, until, max_sev, mask, key)
    kept = dict(got)
    assert len(kept) == len(got)
    reference = blocks.scan_lines(data, 0, len(data), since, until, max_sev, mask, key, fast=False)
    for start, raw in split_lines(data, 0, len(data)):
        exact = matches(raw, since, until, max_sev, mask, grep)
        if start not in kept:
            assert not exact, raw  # only lines that cannot match are left out
            assert (start, None) not in reference
            continue
        time_ns = kept[start]
        if time_ns is None:
            assert raw.startswith(b"#") or not in_fast_case(raw)
            continue
        parsed = python_parse(raw)  # kept with a time: a record matching time, severity, origin
        assert isinstance(parsed, RecordLine)
        assert time_ns == blocks.clamp64(parsed.time_ns)
        assert since <= time_ns <= until and parsed.record.severity <= max_sev
        assert blocks.ORIGIN_BITS[parsed.origin] & mask
        assert key in folded_message(raw)
    for start, time_ns in reference:  # every line the reference keeps, C keeps too
        assert start in kept and kept[start] in (time_ns, None)
    return got


@settings(max_examples=400, deadline=None)
@given(st.lists(any_lines(), max_size=14), st.data())
def test_scan_matches_python(lines: list[bytes], data: st.DataObject) -> None:
    since, until, max_sev, mask, grep = data.draw(queries(lines))
    check_scan(join(lines), since, until, max_sev, mask, grep)


@settings(max_examples=200, deadline=None)
@given(st.lists(taken_lines, min_size=1, max_size=10), st.data())
def test_scan_finds_every_match(lines: list[bytes], data: st.DataObject) -> None:
    since, until, max_sev, mask, grep = data.draw(queries(lines))
    body = join(lines)
    got = check_scan(body, since, until, max_sev, mask, grep)
    starts = [start for start, _raw in split_lines(body, 0, len(body))]
    expected = [
        (start, blocks.clamp64(p.time_ns))
        for start, raw in zip(starts, lines, strict=True)
        if matches(raw, since, until, max_sev, mask, grep)
        and isinstance(p := python_parse(raw), RecordLine)
    ]
    assert all(time_ns is not None for _start, time_ns in got)  # all taken
    assert set(expected) <= set(got)


@pytest.mark.parametrize(
    ("message", "key", "found"),
    [
        ("Division by ZERO", b"zero", True),
        ("Division by ZERO", b"by z", True),
        ("Division by ZERO", b"zeros", False),
        ("zer", b"zero", False),
        ("", b"a", False),
        ("a", b"a", True),
        ("x" * 100 + "Needle" + "y" * 100, b"needle", True),
        ("x" * 100 + "Needl" + "y" * 100, b"needle", False),
        ("nEEDLE" + "e" * 64, b"needle", True),
        ("e" * 64 + "needlE", b"needle", True),
        ("needleneedlneedle", b"needle", True),
        ("@" * 30 + "[" + "{", b"{", True),
        ("@" * 30, b"`", False),  # '@' | 0x20 is '`': only letters fold
        ("ÀÉ ", b"\xc3\xa0", False),  # non-ASCII is never folded
        ("àé", b"\xc3\xa0", True),
        ("q/z/Q/Z", b"q/z", True),
        ("0123456789" * 5, b"90", True),
    ],
)
def test_key_search(message: str, key: bytes, found: bool) -> None:
    line = line_with(message=message) + b"\n"
    got = c_scan_lines(line, 0, len(line), I64_MIN, I64_MAX, 7, 7, key)
    assert got == ([(0, 1_795_700_675_123_456_000)] if found else [])
    assert (key in folded_message(line[:-1])) == found


def test_key_never_matches_fields_or_tokens() -> None:
    line = line_with(message="plain", fields="needle=1") + b"\n"
    assert c_scan_lines(line, 0, len(line), I64_MIN, I64_MAX, 7, 7, b"needle") == []
    assert c_scan_lines(line, 0, len(line), I64_MIN, I64_MAX, 7, 7, b"divide") == []
    assert c_scan_lines(line, 0, len(line), I64_MIN, I64_MAX, 7, 7, b"plain") == [
        (0, 1_795_700_675_123_456_000)
    ]


def test_scan_filters() -> None:
    lines = [
        line_with(severity="err", origin="app", time="2026-01-01T00:00:00.000001Z"),
        line_with(severity="info", origin="console/exit", time="2026-01-01T00:00:00.000002Z"),
        line_with(severity="debug", origin="syslog", time="2026-01-01T00:00:00.000003Z"),
        b"# dropped 00 count=1 through=2",
        line_with(seq="007"),
    ]
    data = join(lines)
    starts = [start for start, _raw in split_lines(data, 0, len(data))]
    t0 = 1_767_225_600_000_000_000

    def scan(since: int, until: int, sev: int, mask: int) -> list[int]:
        return [s for s, _t in c_scan_lines(data, 0, len(data), since, until, sev, mask, b"")]

    assert scan(I64_MIN, I64_MAX, 7, 7) == starts
    assert scan(I64_MIN, I64_MAX, 3, 7) == [starts[0], *starts[3:]]
    assert scan(I64_MIN, I64_MAX, 7, 2) == [starts[1], *starts[3:]]
    assert scan(I64_MIN, I64_MAX, 7, 0) == starts[3:]
    assert scan(I64_MIN, I64_MAX, 7, -4) == [starts[2], *starts[3:]]  # -4 & 7 == 4
    assert scan(t0 + 2000, t0 + 3000, 7, 7) == starts[1:]
    assert scan(t0 + 2000, t0 + 2000, 7, 7) == [starts[1], *starts[3:]]
    assert scan(t0 + 3001, I64_MAX, -1, 7) == starts[3:]


# -- bounds and arguments -----------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    st.lists(any_lines(), max_size=6),
    st.one_of(st.binary(max_size=20).map(lambda b: b.replace(b"\n", b"")), st.just(b"\n\n")),
    st.one_of(st.binary(max_size=20).map(lambda b: b.replace(b"\n", b"")), st.just(b"\n\n")),
    st.data(),
)
def test_only_the_span_is_read(
    lines: list[bytes], prefix: bytes, suffix: bytes, data: st.DataObject
) -> None:
    body = join(lines)
    if data.draw(st.booleans(), label="cut"):
        body = body[: data.draw(st.integers(0, len(body)), label="end")]
    buf = bytearray(prefix + body + suffix)
    pos, end = len(prefix), len(prefix) + len(body)
    stop_after = pos + data.draw(st.integers(0, len(body) + 1), label="stop_after")
    counters = blocks.new_counters()
    grams = bytearray(blocks.GRAM_BYTES)
    stop = check_summarize_call(buf, pos, end, stop_after, counters, grams)
    alone = blocks.new_counters()
    alone_grams = bytearray(blocks.GRAM_BYTES)
    assert summarize_lines(body, 0, len(body), stop_after - pos, alone, alone_grams) == stop - pos
    assert (alone, alone_grams) == (counters, grams)
    query = (I64_MIN, I64_MAX, 7, 7, b"e")
    got = c_scan_lines(buf, pos, end, *query)
    assert got == [(s + pos, t) for s, t in c_scan_lines(body, 0, len(body), *query)]
    assert got == model_scan(bytes(buf), pos, end, *query)
    buf.extend(b"x")  # every buffer export was released


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
@given(
    st.lists(taken_lines, max_size=4),
    st.integers(0, 10_000),
    st.binary(max_size=40),
    st.sampled_from([b"", b"a", b"needle", b"x" * 9, b"zzzzzzzzzzzzzzzzq"]),
)
def test_never_reads_past_end(lines: list[bytes], cut: int, tail: bytes, key: bytes) -> None:
    data = join(lines)
    data = data[: cut % (len(data) + 1)] + tail
    area, pos, end = _fenced(data)
    try:
        counters = blocks.new_counters()
        grams = bytearray(blocks.GRAM_BYTES)
        stop = summarize_lines(area, pos, end, end, counters, grams)
        found = c_scan_lines(area, pos, end, I64_MIN, I64_MAX, 7, 7, key)
    finally:
        area.close()
    alone = blocks.new_counters()
    alone_grams = bytearray(blocks.GRAM_BYTES)
    assert summarize_lines(data, 0, len(data), len(data), alone, alone_grams) == stop - pos
    assert (alone, alone_grams) == (counters, grams)
    assert found == [
        (s + pos, t) for s, t in c_scan_lines(data, 0, len(data), I64_MIN, I64_MAX, 7, 7, key)
    ]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses mprotect via ctypes")
def test_key_search_at_the_fence() -> None:
    for size in range(0, 40):
        message = "x" * size + "NEEDLE"
        for cut in range(1, 8):
            line = line_with(message=message[:-cut] if cut < 7 else message) + b"\n"
            area, pos, end = _fenced(line)
            try:
                found = c_scan_lines(area, pos, end, I64_MIN, I64_MAX, 7, 7, b"needle")
            finally:
                area.close()
            assert found == ([(pos, 1_795_700_675_123_456_000)] if cut == 7 else [])


Call = Callable[[], object]
N = blocks.N_COUNTERS
G = blocks.GRAM_BYTES


def _summarize(counters: Any, grams: Any, data: Any = b"", pos: Any = 0) -> Call:
    return lambda: summarize_lines(data, pos, 0, 0, counters, grams)


def _scan(*args: Any) -> Call:
    return lambda: c_scan_lines(*args)


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (_summarize(array("q", [0] * (N - 1)), bytearray(G)), ValueError),
        (_summarize(array("q", [0] * (N + 1)), bytearray(G)), ValueError),
        (_summarize(array("d", [0] * N), bytearray(G)), ValueError),
        (_summarize(array("Q", [0] * N), bytearray(G)), ValueError),
        (_summarize(array("i", [0] * 2 * N), bytearray(G)), ValueError),
        (_summarize(bytearray(8 * N), bytearray(G)), ValueError),
        (_summarize(bytes(8 * N), bytearray(G)), ValueError),
        (_summarize([0] * N, bytearray(G)), TypeError),
        (_summarize(blocks.new_counters(), bytearray(G - 1)), ValueError),
        (_summarize(blocks.new_counters(), bytearray(G + 1)), ValueError),
        (_summarize(blocks.new_counters(), bytes(G)), ValueError),
        (_summarize(blocks.new_counters(), None), TypeError),
        (_summarize(blocks.new_counters(), bytearray(G), "text"), TypeError),
        (_summarize(blocks.new_counters(), bytearray(G), b"", 1), ValueError),
        (_summarize(blocks.new_counters(), bytearray(G), b"", 0.0), TypeError),
        (lambda: summarize_lines(b"", 0, 0, 0, blocks.new_counters()), TypeError),  # type: ignore[call-arg]
        (_scan(b"", 0, 0, 0, 0, 7, 7), TypeError),
        (_scan(b"", 0, 1, 0, 0, 7, 7, b""), ValueError),
        (_scan(b"", -1, 0, 0, 0, 7, 7, b""), ValueError),
        (_scan(b"", 0, 0, 2**63, 0, 7, 7, b""), OverflowError),
        (_scan(b"", 0, 0, 0, -(2**63) - 1, 7, 7, b""), OverflowError),
        (_scan(b"", 0, 0, 0.0, 0, 7, 7, b""), TypeError),
        (_scan(b"", 0, 0, 0, 0, "7", 7, b""), TypeError),
        (_scan(b"", 0, 0, 0, 0, 7, None, b""), TypeError),
        (_scan(b"", 0, 0, 0, 0, 7, 7, "key"), TypeError),
    ],
)
def test_argument_errors(call: Call, error: type[Exception]) -> None:
    with pytest.raises(error):
        call()


def test_stop_after_is_clipped() -> None:
    data = line_with() + b"\n"
    counters = blocks.new_counters()
    grams = bytearray(G)
    assert summarize_lines(data, 0, len(data), 2**100, counters, grams) == len(data)
    assert summarize_lines(data, 0, len(data), -(2**100), counters, grams) == 0
    with pytest.raises(TypeError):
        summarize_lines(data, 0, len(data), "1", counters, grams)  # type: ignore[arg-type]


def test_buffers_are_released_after_errors() -> None:
    data = bytearray(line_with() + b"\n")
    counters = blocks.new_counters()
    grams = bytearray(blocks.GRAM_BYTES)
    with pytest.raises(ValueError):
        summarize_lines(data, 0, len(data), len(data), counters, bytearray(3))
    with pytest.raises(ValueError):
        summarize_lines(data, 0, len(data) + 1, len(data), counters, grams)
    with pytest.raises(ValueError):
        c_scan_lines(data, 0, len(data) + 1, 0, 0, 7, 7, b"")
    data.extend(b"x")
    grams.extend(b"x")
    counters.append(0)


def test_other_buffers() -> None:
    data = line_with() + b"\n"
    for buf in (data, bytearray(data), memoryview(data)):
        counters = blocks.new_counters()
        grams = bytearray(blocks.GRAM_BYTES)
        assert summarize_lines(buf, 0, len(data), len(data), counters, memoryview(grams)) == len(
            data
        )
        assert counters[blocks.RECORDS] == 1 and any(grams)
        assert c_scan_lines(buf, 0, len(data), I64_MIN, I64_MAX, 7, 7, memoryview(b"zero")) == [
            (0, 1_795_700_675_123_456_000)
        ]
    assert c_scan_lines(b"", 0, 0, 0, 0, 0, 0, b"") == []


# -- gram lists: how the index keeps a block's grams ---------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.sets(st.integers(0, blocks.GRAM_BITS - 1), max_size=4000), st.data())
def test_a_gram_list_holds_what_the_bitmap_holds(grams: set[int], data: st.DataObject) -> None:
    bits = bytearray(blocks.GRAM_BYTES)
    for gram in grams:
        bits[gram >> 3] |= 1 << (gram & 7)
    listed = blocks.gram_list(bits)
    assert listed == blocks.gram_list(bytes(bits)) and len(listed) == 2 * len(grams)
    assert array("H", listed).tolist() == sorted(grams)  # little-endian machine
    saved, blocks.gram_list_fast = blocks.gram_list_fast, None
    try:
        assert blocks.gram_list(bits) == listed  # the pure-Python reference
    finally:
        blocks.gram_list_fast = saved
    wanted = data.draw(st.lists(st.integers(0, blocks.GRAM_BITS - 1), max_size=12))
    wanted += data.draw(st.lists(st.sampled_from(sorted(grams) or [0]), max_size=6))
    expected = blocks.has_grams(bytes(bits), wanted)
    assert blocks.kept_holds(listed, wanted) == expected
    assert blocks.kept_holds(bytes(bits), wanted) == expected


def test_gram_list_refuses_a_bitmap_of_another_size() -> None:
    from umonitor._speedups import gram_list

    with pytest.raises(ValueError, match="bytes"):
        gram_list(bytes(10))
