"""Fuzz target: the native frame decoder (docs/protocol.md §2), both directions.

Input: one configuration byte, then the stream. The byte picks the peer (guest ->
host or host -> guest), whether the stream starts with the preface, ``max_frame``
and the ``limit`` the stream is drained with.

Checks, for every input:

- decoding raises nothing but ProtocolError, and after one it raises again;
- whole, in random chunks, in small chunks and byte by byte, the stream gives the
  same events and fails (or not) alike; with an error, each way gives a prefix of
  the events that come before it, and the same error code;
- ``next_events(limit=n)`` drained until empty gives what one ``next_events()`` does;
- after ``next_events()`` the decoder holds less than ``max_frame`` bytes;
- every decoded event encodes to a frame that decodes to that event again.
"""

from __future__ import annotations

import atheris
import fuzzlib

with atheris.instrument_imports(include=["umonitor"]):
    from umonitor.errors import ProtocolError
    from umonitor.protocol import frame_codec as fc
    from umonitor.records import Kind, Record, Severity

MAX_FRAMES = (64, 100, 4096, 65536)
LIMITS = (None, 1, 2, 3)


def configure(byte: int) -> tuple[fc.Peer, bool, int, int | None]:
    peer = fc.Peer.GUEST if byte & 1 == 0 else fc.Peer.HOST
    preface = bool(byte & 2)
    max_frame = MAX_FRAMES[(byte >> 2) & 3]
    limit = LIMITS[(byte >> 4) & 3]
    return peer, preface, max_frame, limit


def drain(
    decoder: fc.FrameDecoder, limit: int | None, max_frame: int
) -> tuple[list[fc.Event], ProtocolError | None]:
    """Everything ``next_events`` gives now, called with ``limit`` until it is empty."""
    events: list[fc.Event] = []
    try:
        while True:
            got = decoder.next_events(limit)
            fuzzlib.check(limit is None or len(got) <= limit, "next_events exceeded its limit")
            events += got
            if limit is None or not got:
                break
    except ProtocolError as exc:
        fuzzlib.check(decoder.buffered == 0, "a broken decoder still holds bytes")
        try:
            decoder.next_events(limit)
        except ProtocolError:
            pass
        else:
            raise fuzzlib.Finding("a broken decoder decoded again") from exc
        return events, exc
    fuzzlib.check(
        decoder.buffered < max_frame,
        f"decoder holds {decoder.buffered} bytes, max_frame is {max_frame}",
    )
    return events, None


def feed(
    chunks: list[bytes], peer: fc.Peer, preface: bool, max_frame: int, limit: int | None
) -> tuple[list[fc.Event], int | None]:
    decoder = fc.FrameDecoder(peer, max_frame=max_frame, expect_preface=preface)
    events: list[fc.Event] = []
    for chunk in chunks:
        decoder.receive_data(chunk)
        got, error = drain(decoder, limit, max_frame)
        events += got
        if error is not None:
            return events, error.code
    return events, None


def re_encoded(event: fc.Event, peer: fc.Peer, max_frame: int) -> None:
    """The frame for a decoded event decodes to the same event."""
    try:
        frame = fc.encode(event)
    except ValueError:
        return  # text decoded with replacement can outgrow a length byte
    if len(frame) > max_frame:
        return
    decoder = fc.FrameDecoder(peer, max_frame=max_frame, expect_preface=False)
    decoder.receive_data(frame)
    again = decoder.next_events()
    fuzzlib.check(again == [event], f"{event!r} re-encoded decodes as {again!r}")


def test_one_input(data: bytes) -> None:
    if not data:
        return
    peer, preface, max_frame, limit = configure(data[0])
    stream = data[1:]
    rng = fuzzlib.rng_for(data)
    results = [feed(c, peer, preface, max_frame, limit) for c in fuzzlib.chunkings(stream, rng)]
    whole_events, whole_error = results[0]
    # Drained one frame at a time: the events that come before any error.
    reference = fc.FrameDecoder(peer, max_frame=max_frame, expect_preface=preface)
    reference.receive_data(stream)
    one_by_one, error = drain(reference, 1, max_frame)
    reference_code = None if error is None else error.code
    for events, code in results:
        fuzzlib.check(
            (code is None) == (whole_error is None),
            f"whole stream error {whole_error}, in pieces {code}",
        )
        if code is None:
            fuzzlib.check(events == whole_events, "chunking changed the events")
        else:
            fuzzlib.check(events == one_by_one[: len(events)], "chunking changed the events")
            fuzzlib.check(code == reference_code, f"error code {code}, one by one {error}")
    fuzzlib.check((reference_code is None) == (whole_error is None), "limit=1 changed the outcome")
    if whole_error is None:
        fuzzlib.check(one_by_one == whole_events, "limit=1 changed the events")
    for event in one_by_one:
        re_encoded(event, peer, max_frame)


def seeds() -> list[bytes]:
    hello = fc.Hello("web-1", bytes(range(16)), b"secret", "umonitor-c/1.0.0")
    record = Record(
        7,
        Severity.WARNING,
        "disk almost full",
        Kind.EXIT,
        1_234_567_890,
        1_767_225_600_987_654_321,
        "fs.c",
        120,
        "check",
        (("pct", "97"), ("dev", "/dev/vda")),
    )
    guest = [
        hello,
        record,
        Record(8, Severity.INFO, "x"),
        fc.Dropped(17, 99),
        fc.Level(Severity.WARNING),
        fc.Hello("web-2", bytes(16), level=Severity.ERR),
        fc.Ping(5),
        fc.Pong(5),
        fc.ErrorFrame(2, "bad"),
        fc.Bye(),
    ]
    host: list[fc.Event] = [
        fc.Ack(3),
        fc.SetLevel(Severity.DEBUG),
        fc.Ping(9),
        fc.ErrorFrame(6, ""),
    ]
    out = []
    for config in range(64):
        peer, preface, _max_frame, _limit = configure(config)
        events = guest if peer is fc.Peer.GUEST else host
        body = b"".join(fc.encode(e) for e in events)
        out.append(bytes([config]) + (fc.PREFACE if preface else b"") + body)
    out.append(b"\x00" + fc.encode(record)[:-3])
    out.append(b"\x00" + (70000).to_bytes(4, "big") + b"\x02")
    out.append(b"\x01" + fc.encode(record) + fc.encode(fc.Ack(1)))
    return out


if __name__ == "__main__":
    fuzzlib.main(test_one_input, seeds)
