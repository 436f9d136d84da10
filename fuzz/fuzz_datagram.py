"""Fuzz target: one UDP datagram (docs/protocol.md §3), ``decode_datagram_untrusted``.

Input: one configuration byte (``max_frame``), then the datagram.

Checks: it returns a (Hello, Record or Dropped) pair or raises ProtocolError, nothing
else; a pair it returns, encoded again (when the encoder can hold its values),
decodes to the same pair.
"""

from __future__ import annotations

import atheris
import fuzzlib

with atheris.instrument_imports(include=["umonitor"]):
    from umonitor.errors import ProtocolError
    from umonitor.protocol import frame_codec as fc
    from umonitor.records import Record, Severity

MAX_FRAMES = (64, 512, 4096, 65536)


def test_one_input(data: bytes) -> None:
    if not data:
        return
    max_frame = MAX_FRAMES[data[0] & 3]
    datagram = data[1:]
    try:
        hello, body = fc.decode_datagram_untrusted(datagram, max_frame)
    except ProtocolError:
        return
    fuzzlib.check(isinstance(hello, fc.Hello), "first event is not a HELLO")
    fuzzlib.check(isinstance(body, Record | fc.Dropped), "second event is not RECORD/DROPPED")
    try:
        again = fc.encode_datagram(hello, body)
    except ValueError:
        return  # text decoded with replacement can outgrow its length field
    if max(len(fc.encode(hello)), len(fc.encode(body))) > max_frame:
        return  # replacement characters made a frame longer than max_frame
    try:
        decoded = fc.decode_datagram_untrusted(again, max_frame)
    except ProtocolError as exc:
        raise fuzzlib.Finding(f"re-encoded datagram does not decode: {exc}") from exc
    fuzzlib.check(decoded == (hello, body), f"re-encoded datagram decodes as {decoded!r}")


def seeds() -> list[bytes]:
    hello = fc.Hello("web-1", bytes(range(16)), b"", "umonitor-c/1.0.0")
    out = []
    for config in range(4):
        for body in (
            Record(1, Severity.ERR, "boom", file="a.c", line=3, function="f"),
            Record(2, Severity.INFO, "k", fields=(("a", "1"),), wall_ns=10**18),
            fc.Dropped(3, 4),
        ):
            out.append(bytes([config]) + fc.encode_datagram(hello, body))
    out.append(b"\x03" + fc.PREFACE + fc.encode(hello))
    out.append(b"\x03" + fc.PREFACE + fc.encode(hello) + fc.encode(fc.Bye()))
    return out


if __name__ == "__main__":
    fuzzlib.main(test_one_input, seeds)
