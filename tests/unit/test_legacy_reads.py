"""The legacy decoder with read boundaries: each write of a 2018 guest is one message.

The 2018 wire format has no delimiter; the 2018 host took each ``recv`` as one
message. ``LegacyDecoder.end_of_write`` is the caller saying "a read ended here".
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from umonitor.protocol.legacy import LEVEL_BYTES, LegacyDecoder
from umonitor.records import Kind, Record, Severity


def decode_reads(reads: list[bytes], *, max_line: int = 65536) -> list[Record]:
    """Feed ``reads`` one by one, with a write boundary after each, as a connection does."""
    decoder = LegacyDecoder(max_line=max_line)
    out: list[Record] = []
    for data in reads:
        decoder.receive_data(data)
        out += decoder.end_of_write()
        assert decoder.buffered == 0
    return out + decoder.end_of_stream()


def test_level_table_is_the_2018_one() -> None:
    table = {chr(byte): level for byte, level in LEVEL_BYTES.items()}
    assert table == {
        "m": (Severity.INFO, Kind.LOG),  # message
        "w": (Severity.WARNING, Kind.LOG),  # warning
        "f": (Severity.ERR, Kind.LOG),  # failure
        "r": (Severity.NOTICE, Kind.EXIT),  # return
    }


@pytest.mark.parametrize(
    ("reads", "expected"),
    [
        pytest.param(
            [b"mseed message 1", b"wseed message 2", b"fseed message 3", b"rseed message 4"],
            [
                (Severity.INFO, Kind.LOG, "seed message 1"),
                (Severity.WARNING, Kind.LOG, "seed message 2"),
                (Severity.ERR, Kind.LOG, "seed message 3"),
                (Severity.NOTICE, Kind.EXIT, "seed message 4"),
            ],
            id="2018 guest: one message per read",
        ),
        pytest.param(
            [b"mone\n", b"wtwo\n"],
            [(Severity.INFO, Kind.LOG, "one"), (Severity.WARNING, Kind.LOG, "two")],
            id="terminated messages: the boundary adds nothing",
        ),
        pytest.param(
            [b"mone\nwtw", b"fthree"],
            [
                (Severity.INFO, Kind.LOG, "one"),
                (Severity.WARNING, Kind.LOG, "tw"),
                (Severity.ERR, Kind.LOG, "three"),
            ],
            id="a read ends the unterminated rest",
        ),
        pytest.param(
            [b"mone\0wtwo"],
            [(Severity.INFO, Kind.LOG, "one"), (Severity.WARNING, Kind.LOG, "two")],
            id="NUL still ends a message",
        ),
        pytest.param(
            [b"mhello\r\n", b"rbye\r"],
            [(Severity.INFO, Kind.LOG, "hello"), (Severity.NOTICE, Kind.EXIT, "bye")],
            id="trailing CR dropped",
        ),
        pytest.param(
            [b"m", b"w"],
            [(Severity.INFO, Kind.LOG, ""), (Severity.WARNING, Kind.LOG, "")],
            id="a lone level byte is an empty message",
        ),
        pytest.param(
            [b"\n", b"\0\0", b"\r"],
            [],
            id="blank reads give nothing",
        ),
        pytest.param(
            [b"xno level", b"Mcapital"],
            [(Severity.INFO, Kind.LOG, "xno level"), (Severity.INFO, Kind.LOG, "Mcapital")],
            id="unknown first byte: all text, info",
        ),
        pytest.param(
            [b"mcaf\xc3", b"\xa9"],
            [(Severity.INFO, Kind.LOG, "caf\ufffd"), (Severity.INFO, Kind.LOG, "\ufffd")],
            id="a read cut inside a character: as the 2018 host, two messages",
        ),
        pytest.param(
            [b"mone" + b"wtwo"],
            [(Severity.INFO, Kind.LOG, "onewtwo")],
            id="two writes in one read stay joined (nothing on the wire separates them)",
        ),
    ],
)
def test_reads_are_message_boundaries(
    reads: list[bytes], expected: list[tuple[Severity, Kind, str]]
) -> None:
    records = decode_reads(reads)
    assert [(r.severity, r.kind, r.message) for r in records] == expected
    assert [r.seq for r in records] == list(range(1, len(records) + 1))


def test_a_long_read_is_cut_at_max_line() -> None:
    records = decode_reads([b"m" + b"x" * 249, b"wshort"], max_line=100)
    assert [len(r.message) for r in records] == [99, 100, 50, 5]
    assert records[-1].severity is Severity.WARNING


def test_end_of_write_with_nothing_buffered_is_a_no_op() -> None:
    decoder = LegacyDecoder()
    assert decoder.end_of_write() == []
    decoder.receive_data(b"mdone\n")
    assert [r.message for r in decoder.next_events()] == ["done"]
    assert decoder.end_of_write() == []


# A 2018 message: a level byte, then text without \n or NUL (NUL would end it early).
messages = st.tuples(
    st.sampled_from(sorted(LEVEL_BYTES)),
    st.binary(max_size=60).filter(lambda b: b"\n" not in b and b"\0" not in b),
).map(lambda lt: bytes([lt[0]]) + lt[1])


@given(st.lists(messages, max_size=30))
def test_one_record_per_write(chunks: list[bytes]) -> None:
    records = decode_reads(chunks)
    assert len(records) == len(chunks)
    for record, chunk in zip(records, chunks, strict=True):
        severity, kind = LEVEL_BYTES[chunk[0]]
        assert (record.severity, record.kind) == (severity, kind)
        assert record.message == chunk[1:].decode("utf-8", "replace").rstrip("\r")
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
