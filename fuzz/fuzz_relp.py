"""Fuzz target: RELP (docs/syslog.md, "RELP"), ``RelpDecoder`` and the ``relp_*`` parsers.

Input: one configuration byte (``max_data``), then the stream.

Checks:

- nothing raises but ProtocolError, which comes after the frames before the bad
  one and then again on every call;
- whole, in random chunks, in small chunks and byte by byte the stream gives the
  same frames and fails alike;
- after ``next_frames`` the decoder holds at most one header (53 bytes) and
  ``max_data`` bytes (read from its buffer: the class has no public size);
- every frame has a TXNR of at most 9 digits, a 1-32 letter command and at most
  ``max_data`` bytes of data, and encodes to bytes that decode to it again;
- ``relp_status_untrusted`` and ``relp_offers_untrusted``, given each frame's data
  and the raw input, return or raise ProtocolError; a status is three digits.
"""

from __future__ import annotations

import atheris
import fuzzlib

with atheris.instrument_imports(include=["umonitor"]):
    from umonitor.errors import ProtocolError
    from umonitor.protocol.relp import (
        MAX_TXNR,
        RelpDecoder,
        RelpFrame,
        encode_relp,
        relp_offers_untrusted,
        relp_status_untrusted,
    )

MAX_DATAS = (1, 8, 100, 65536)
HEADER = 9 + 1 + 32 + 1 + 9 + 1  # TXNR SP COMMAND SP DATALEN SP


def feed(chunks: list[bytes], max_data: int) -> tuple[list[RelpFrame], bool]:
    decoder = RelpDecoder(max_data=max_data)
    frames: list[RelpFrame] = []
    try:
        for chunk in chunks:
            decoder.receive_data(chunk)
            frames += decoder.next_frames()
            held = len(decoder._buf)
            fuzzlib.check(held <= HEADER + max_data, f"holds {held} bytes, max_data {max_data}")
        # A bad frame after good ones raises on the next call: make that call.
        frames += decoder.next_frames()
    except ProtocolError:
        try:
            decoder.next_frames()
        except ProtocolError:
            return frames, True
        raise fuzzlib.Finding("a broken decoder decoded again") from None
    return frames, False


def parse_answer(data: bytes) -> None:
    try:
        code, text = relp_status_untrusted(data)
    except ProtocolError:
        pass
    else:
        fuzzlib.check(0 <= code <= 999, f"status {code}")
        fuzzlib.check(len(text) <= 200, "status text not cut")
    relp_offers_untrusted(data)


def test_one_input(data: bytes) -> None:
    if not data:
        return
    max_data = MAX_DATAS[data[0] & 3]
    stream = data[1:]
    rng = fuzzlib.rng_for(data)
    whole = None
    for chunks in fuzzlib.chunkings(stream, rng):
        result = feed(chunks, max_data)
        if whole is None:
            whole = result
        else:
            fuzzlib.check(result == whole, "chunking changed the frames")
    assert whole is not None
    for frame in whole[0]:
        fuzzlib.check(0 <= frame.txnr <= MAX_TXNR, f"txnr {frame.txnr}")
        fuzzlib.check(
            1 <= len(frame.command) <= 32 and frame.command.isascii() and frame.command.isalpha(),
            f"command {frame.command!r}",
        )
        fuzzlib.check(len(frame.data) <= max_data, "data above max_data")
        again = RelpDecoder(max_data=max_data)
        again.receive_data(encode_relp(frame))
        fuzzlib.check(again.next_frames() == [frame], f"{frame!r} does not round-trip")
        parse_answer(frame.data)
    parse_answer(stream)


def seeds() -> list[bytes]:
    offers = b"relp_version=0\nrelp_software=librelp,1.11.0,http://x\ncommands=syslog"
    frames = [
        RelpFrame(1, "open", offers),
        RelpFrame(2, "syslog", b"<13>1 - host app - - - hello over relp"),
        RelpFrame(3, "close"),
        RelpFrame(1, "rsp", b"200 OK\n" + offers),
        RelpFrame(4, "rsp", b"500 command disabled"),
        RelpFrame(0, "serverclose"),
    ]
    stream = b"".join(encode_relp(f) for f in frames)
    broken = [b"5 syslog 3 abc", b"12345 syslog 99999999 ", b"x syslog 1 a\n", b"7 syslog 2 a\n"]
    return (
        [bytes([config]) + stream for config in range(4)]
        + [b"\x03" + encode_relp(f) for f in frames]
        + [b"\x02" + b for b in broken]
    )


if __name__ == "__main__":
    fuzzlib.main(test_one_input, seeds)
