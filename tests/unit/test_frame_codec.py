"""The native codec against the shared vectors, plus its invariants (Hypothesis)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from umonitor.errors import ProtocolError
from umonitor.protocol import frame_codec as fc
from umonitor.records import Kind, Record, Severity

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "native.json").read_text())
ERROR_CODES = {
    "malformed": fc.ErrorCode.MALFORMED,
    "too large": fc.ErrorCode.TOO_LARGE,
    "unexpected": fc.ErrorCode.UNEXPECTED,
    "bad version": fc.ErrorCode.BAD_VERSION,
}
HOST_TYPES = {"ACK", "SET_LEVEL", "SET_TRACE"}


def expected_event(frame: dict[str, Any]) -> fc.Event:
    kind = frame["type"]
    if kind == "HELLO":
        return fc.Hello(
            frame["name"],
            bytes.fromhex(frame["boot_id"]),
            frame["token"].encode(),
            frame["library"],
            frame["version"],
            Severity(frame["level"]) if "level" in frame else None,
            frame.get("tracing", False),
        )
    if kind == "RECORD":
        return Record(
            frame["seq"],
            Severity(frame["severity"]),
            frame["message"],
            Kind(frame["kind"]),
            frame["mono_ns"],
            frame["wall_ns"],
            frame["file"],
            frame["line"],
            frame["function"],
            tuple((k, v) for k, v in frame["fields"]),
        )
    simple: dict[str, Any] = {
        "DROPPED": lambda f: fc.Dropped(f["count"], f["through_seq"]),
        "BYE": lambda f: fc.Bye(),
        "LEVEL": lambda f: fc.Level(Severity(f["level"])),
        "PING": lambda f: fc.Ping(f["nonce"]),
        "PONG": lambda f: fc.Pong(f["nonce"]),
        "ACK": lambda f: fc.Ack(f["seq"]),
        "SET_LEVEL": lambda f: fc.SetLevel(Severity(f["level"])),
        "TRACE": lambda f: fc.Trace(f["on"], f["ranges"]),
        "SET_TRACE": lambda f: fc.SetTrace(
            f["on"], f["anchor"], tuple((s, e) for s, e in f["ranges"])
        ),
        "ERROR": lambda f: fc.ErrorFrame(f["code"], f["reason"]),
    }
    event: fc.Event = simple[kind](frame)
    return event


@pytest.mark.parametrize("case", VECTORS["valid"], ids=lambda c: c["name"])
def test_valid_vector_decodes_and_encodes_back(case: dict[str, Any]) -> None:
    data = bytes.fromhex(case["hex"])
    peer = fc.Peer.HOST if case["frame"]["type"] in HOST_TYPES else fc.Peer.GUEST
    decoder = fc.FrameDecoder(peer, expect_preface=False)
    decoder.receive_data(data)
    events = decoder.next_events()
    assert events == [expected_event(case["frame"])]
    assert decoder.buffered == 0
    assert fc.encode(events[0]) == data


@pytest.mark.parametrize("case", VECTORS["invalid"], ids=lambda c: c["name"])
def test_invalid_vector_raises_its_error(case: dict[str, Any]) -> None:
    decoder = fc.FrameDecoder(fc.Peer.GUEST, expect_preface=False, max_frame=VECTORS["max_frame"])
    decoder.receive_data(bytes.fromhex(case["hex"]))
    with pytest.raises(ProtocolError) as info:
        decoder.next_events()
    assert info.value.code == ERROR_CODES[case["error"]]
    with pytest.raises(ProtocolError):  # stays broken
        decoder.next_events()


@pytest.mark.parametrize("case", VECTORS["invalid_from_host"], ids=lambda c: c["name"])
def test_invalid_host_vector_raises_its_error(case: dict[str, Any]) -> None:
    decoder = fc.FrameDecoder(fc.Peer.HOST, expect_preface=False, max_frame=VECTORS["max_frame"])
    decoder.receive_data(bytes.fromhex(case["hex"]))
    with pytest.raises(ProtocolError) as info:
        decoder.next_events()
    assert info.value.code == ERROR_CODES[case["error"]]


def test_preface_is_required_and_checked_early() -> None:
    decoder = fc.FrameDecoder(fc.Peer.GUEST)
    decoder.receive_data(b"\x89U")
    assert decoder.next_events() == []
    decoder.receive_data(b"XX")
    with pytest.raises(ProtocolError):
        decoder.next_events()


def test_guest_frames_are_refused_from_the_host() -> None:
    decoder = fc.FrameDecoder(fc.Peer.HOST, expect_preface=False)
    decoder.receive_data(fc.encode(Record(1, Severity.INFO, "x")))
    with pytest.raises(ProtocolError) as info:
        decoder.next_events()
    assert info.value.code == fc.ErrorCode.UNEXPECTED


def test_hello_reserved_flags_are_ignored() -> None:
    frame = bytearray(fc.encode(fc.Hello("x", bytes(16), level=Severity.ERR)))
    frame[6] |= 0xE0  # flags: bits 5-7 are reserved (bit 4: the guest takes SET_TRACE)
    decoder = fc.FrameDecoder(fc.Peer.GUEST, expect_preface=False)
    decoder.receive_data(frame)
    assert decoder.next_events() == [fc.Hello("x", bytes(16), level=Severity.ERR)]


def test_hello_tracing_flag() -> None:
    hello = fc.Hello("x", bytes(16), tracing=True)
    frame = fc.encode(hello)
    assert frame[6] == 0x10
    decoder = fc.FrameDecoder(fc.Peer.GUEST, expect_preface=False)
    decoder.receive_data(frame)
    assert decoder.next_events() == [hello]


@pytest.mark.parametrize(
    "event",
    [
        fc.SetTrace(True, 0, ((5, 5),)),
        fc.SetTrace(True, 0, ((1, 2),) * 17),
        fc.SetTrace(True, -1),
        fc.Trace(True, 17),
    ],
)
def test_trace_frames_out_of_range_are_not_encoded(event: fc.Event) -> None:
    with pytest.raises(ValueError):
        fc.encode(event)


@pytest.mark.parametrize("ftype", [int(t) for t in fc.FrameType])
@given(body=st.binary(max_size=40), peer=st.sampled_from(list(fc.Peer)))
def test_every_frame_type_with_any_body_only_raises_protocol_error(
    ftype: int, body: bytes, peer: fc.Peer
) -> None:
    decoder = fc.FrameDecoder(peer, expect_preface=False)
    decoder.receive_data((len(body) + 1).to_bytes(4, "big") + bytes((ftype,)) + body)
    with contextlib.suppress(ProtocolError):
        decoder.next_events()


def test_datagram_round_trip_and_rejects() -> None:
    hello = fc.Hello("udp-guest", bytes(16))
    record = Record(3, Severity.ERR, "over udp", mono_ns=5)
    assert fc.decode_datagram_untrusted(fc.encode_datagram(hello, record)) == (hello, record)
    for bad in (
        b"",
        fc.PREFACE,
        fc.PREFACE + fc.encode_hello(hello),
        fc.encode_datagram(hello, record)[:-1],
        fc.PREFACE + fc.encode(record) + fc.encode_hello(hello),
    ):
        with pytest.raises(ProtocolError):
            fc.decode_datagram_untrusted(bad)


# -- properties ---------------------------------------------------------------------

texts = st.text(max_size=40)
records = st.builds(
    Record,
    seq=st.integers(1, 2**64 - 1),
    severity=st.sampled_from(list(Severity)),
    message=st.text(max_size=200),
    kind=st.sampled_from(list(Kind)),
    mono_ns=st.integers(0, 2**64 - 1),
    wall_ns=st.none() | st.integers(-(2**63), 2**63 - 1),
    file=texts,
    line=st.integers(0, 2**32 - 1),
    function=texts,
    fields=st.lists(
        st.tuples(st.text(min_size=1, max_size=10).filter(lambda k: len(k.encode()) < 256), texts),
        max_size=5,
    ).map(tuple),
)
hellos = st.builds(
    fc.Hello,
    name=st.text(min_size=1, max_size=30),
    boot_id=st.binary(min_size=16, max_size=16),
    token=st.binary(max_size=40),
    library=st.text(max_size=30),
    level=st.none() | st.sampled_from(list(Severity)),
    tracing=st.booleans(),
)
guest_events = st.one_of(
    records,
    hellos,
    st.builds(fc.Dropped, st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)),
    st.just(fc.Bye()),
    st.builds(fc.Level, st.sampled_from(list(Severity))),
    st.builds(fc.Trace, st.booleans(), st.integers(0, fc.MAX_TRACE_RANGES)),
    st.builds(fc.Ping, st.integers(0, 2**64 - 1)),
    st.builds(fc.Pong, st.integers(0, 2**64 - 1)),
    st.builds(fc.ErrorFrame, st.integers(0, 65535), st.text(max_size=50)),
)


@given(st.lists(guest_events, max_size=12))
def test_decode_of_encode_is_identity(events: list[fc.Event]) -> None:
    decoder = fc.FrameDecoder(fc.Peer.GUEST)
    decoder.receive_data(fc.PREFACE + b"".join(fc.encode(e) for e in events))
    assert decoder.next_events() == events
    assert decoder.buffered == 0


@given(st.lists(guest_events, max_size=8), st.data())
def test_whole_or_in_pieces_gives_the_same_events(
    events: list[fc.Event], data: st.DataObject
) -> None:
    stream = fc.PREFACE + b"".join(fc.encode(e) for e in events)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    decoder = fc.FrameDecoder(fc.Peer.GUEST)
    got: list[fc.Event] = []
    last = 0
    for cut in [*cuts, len(stream)]:
        decoder.receive_data(stream[last:cut])
        got += decoder.next_events()
        last = cut
    assert got == events


@given(st.lists(guest_events, max_size=4))
def test_byte_by_byte_gives_the_same_events(events: list[fc.Event]) -> None:
    stream = fc.PREFACE + b"".join(fc.encode(e) for e in events)
    decoder = fc.FrameDecoder(fc.Peer.GUEST)
    got: list[fc.Event] = []
    for i in range(len(stream)):
        decoder.receive_data(stream[i : i + 1])
        got += decoder.next_events()
    assert got == events


@settings(max_examples=500)
@given(st.binary(max_size=300), st.sampled_from(list(fc.Peer)), st.booleans())
def test_arbitrary_bytes_only_raise_protocol_error(
    data: bytes, peer: fc.Peer, preface: bool
) -> None:
    decoder = fc.FrameDecoder(peer, expect_preface=preface, max_frame=256)
    decoder.receive_data(data)
    with contextlib.suppress(ProtocolError):
        decoder.next_events()
    assert decoder.buffered <= 256


@given(st.binary(min_size=1, max_size=64))
def test_arbitrary_record_bodies_only_raise_protocol_error(body: bytes) -> None:
    frame = (len(body) + 1).to_bytes(4, "big") + b"\x02" + body
    decoder = fc.FrameDecoder(fc.Peer.GUEST, expect_preface=False)
    decoder.receive_data(frame)
    with contextlib.suppress(ProtocolError):
        decoder.next_events()


@given(st.integers(1, 2**32 - 1))
def test_partial_frame_never_buffers_past_max_frame(length: int) -> None:
    decoder = fc.FrameDecoder(fc.Peer.GUEST, expect_preface=False, max_frame=1024)
    decoder.receive_data(length.to_bytes(4, "big") + b"\x02")
    try:
        decoder.next_events()
        for _ in range(3):
            decoder.receive_data(b"\0" * 400)
            decoder.next_events()
    except ProtocolError:
        assert decoder.buffered == 0
    else:
        assert decoder.buffered <= 1024


def test_encoder_refuses_what_the_format_cannot_hold() -> None:
    with pytest.raises(ValueError):
        fc.encode(fc.Hello("x" * 256, bytes(16)))
    with pytest.raises(ValueError):
        fc.encode(fc.Hello("", bytes(16)))
    with pytest.raises(ValueError):
        fc.encode(Record(0, Severity.INFO, "seq 0"))
    with pytest.raises(ValueError):
        fc.encode(Record(1, Severity.INFO, "", fields=(("", "v"),)))
