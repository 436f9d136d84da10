"""Plain text lines, the legacy format, and dialect sniffing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from umonitor.protocol.frame_codec import PREFACE
from umonitor.protocol.legacy import LegacyDecoder
from umonitor.protocol.sniff import Dialect, sniff_untrusted
from umonitor.protocol.text_lines import LineDecoder
from umonitor.records import Kind, Severity


@pytest.mark.parametrize(
    ("line", "severity", "message"),
    [
        (b"hello world\n", Severity.INFO, "hello world"),
        (b"warning: disk almost full\n", Severity.WARNING, "disk almost full"),
        (b"WARN: loud\r\n", Severity.WARNING, "loud"),
        (b"error: it broke\n", Severity.ERR, "it broke"),
        (b"Err:\tTabbed\n", Severity.ERR, "Tabbed"),
        (b"debug: x\n", Severity.DEBUG, "x"),
        (b"trace: y\n", Severity.DEBUG, "y"),
        (b"emerg: z\n", Severity.EMERG, "z"),
        (b"panic: kernel\n", Severity.EMERG, "kernel"),
        (b"critical: c\n", Severity.CRIT, "c"),
        (b"notice: n\n", Severity.NOTICE, "n"),
        (b"warning:no space\n", Severity.INFO, "warning:no space"),
        (b"information: not a level\n", Severity.INFO, "information: not a level"),
        (b"caf\xc3\xa9 \xff\n", Severity.INFO, "caf\u00e9 \ufffd"),
    ],
)
def test_text_lines(line: bytes, severity: Severity, message: str) -> None:
    decoder = LineDecoder()
    decoder.receive_data(line)
    [record] = decoder.next_events()
    assert (record.severity, record.message, record.seq) == (severity, message, 1)


def test_text_numbers_lines_and_skips_blank_ones() -> None:
    decoder = LineDecoder()
    decoder.receive_data(b"a\n\n\r\nb\nc")
    assert [(r.seq, r.message) for r in decoder.next_events()] == [(1, "a"), (2, "b")]
    assert [(r.seq, r.message) for r in decoder.end_of_stream()] == [(3, "c")]


def test_long_text_line_is_cut_not_buffered() -> None:
    decoder = LineDecoder(max_line=100)
    decoder.receive_data(b"x" * 250 + b"\n")
    sizes = [len(r.message) for r in decoder.next_events()]
    assert sizes == [100, 100, 50]
    assert decoder.buffered == 0
    decoder.receive_data(b"y" * 1000)
    decoder.next_events()
    assert decoder.buffered < 100


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"mFunction main called\n", [(Severity.INFO, Kind.LOG, "Function main called")]),
        (
            b"wNULL pointer\0fDivision by zero\n",
            [
                (Severity.WARNING, Kind.LOG, "NULL pointer"),
                (Severity.ERR, Kind.LOG, "Division by zero"),
            ],
        ),
        (b"rReturn 42\n", [(Severity.NOTICE, Kind.EXIT, "Return 42")]),
        (b"xunknown level\n", [(Severity.INFO, Kind.LOG, "xunknown level")]),
    ],
)
def test_legacy_messages(data: bytes, expected: list[tuple[Severity, Kind, str]]) -> None:
    decoder = LegacyDecoder()
    decoder.receive_data(data)
    got = [(r.severity, r.kind, r.message) for r in decoder.next_events()]
    assert got == expected


def test_legacy_unterminated_message_ends_when_quiet() -> None:
    decoder = LegacyDecoder()
    decoder.receive_data(b"mno newline")
    assert decoder.next_events() == []
    [record] = decoder.end_of_stream()
    assert record.message == "no newline"


@pytest.mark.parametrize(
    ("head", "final", "dialect"),
    [
        (PREFACE, False, Dialect.NATIVE),
        (b"\x89", False, Dialect.NATIVE),
        (b"warning: x\n", False, Dialect.TEXT),
        (b"warning: something long", False, Dialect.TEXT),
        (b"mFunction main called", False, Dialect.LEGACY),
        (b"w", True, Dialect.LEGACY),
        (b"main started at boot\n", False, Dialect.TEXT),
        (b"hello\n", False, Dialect.TEXT),
        (b"m", False, None),
        (b"", False, None),
        (b"", True, Dialect.TEXT),
        (b"f0 failed\n", False, Dialect.LEGACY),
    ],
)
def test_sniff(head: bytes, final: bool, dialect: Dialect | None) -> None:
    assert sniff_untrusted(head, final=final) is dialect


@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=10))
def test_text_and_legacy_any_bytes_any_chunking(data: bytes, cuts: list[int]) -> None:
    for make in (lambda: LineDecoder(max_line=64), lambda: LegacyDecoder(max_line=64)):
        whole = make()
        whole.receive_data(data)
        expected = whole.next_events() + whole.end_of_stream()
        pieces = make()
        got = []
        last = 0
        for cut in [*sorted(c for c in cuts if c <= len(data)), len(data)]:
            pieces.receive_data(data[last:cut])
            got += pieces.next_events()
            assert pieces.buffered <= 64 + 1
            last = cut
        got += pieces.end_of_stream()
        assert [r.message for r in got] == [r.message for r in expected]
        assert [r.seq for r in got] == list(range(1, len(got) + 1))


@given(st.binary(max_size=40), st.booleans())
def test_sniff_never_raises(head: bytes, final: bool) -> None:
    result = sniff_untrusted(head, final=final)
    assert result is not None or not final
