"""Fuzz target: RFC 6587 stream framing (docs/syslog.md), ``SyslogStreamDecoder``.

Input: one configuration byte (``max_frame`` and the ``limit`` frames are taken
with), then the stream.

Checks:

- nothing raises but ProtocolError, which comes after the frames before the bad
  length and then again on every call;
- whole, in random chunks, in small chunks and byte by byte, and drained with
  ``next_frames(limit)``, the stream gives the same frames and fails alike;
- after ``next_frames`` has nothing more to give, the decoder holds at most
  ``max_frame`` bytes plus a length prefix;
- every frame is at most ``max_frame`` bytes, not blank, and parses;
- ``take_run`` with a fast path that takes some whole frames (by the framing rules
  of docs/syslog.md, written out independently here) and the ordinary decoder for
  the rest, as the collector alternates them, gives the same frames again.
"""

from __future__ import annotations

import random

import atheris
import fuzzlib

with atheris.instrument_imports(include=["umonitor"]):
    from umonitor.errors import ProtocolError
    from umonitor.protocol.syslog import SyslogStreamDecoder, parse_syslog_untrusted

MAX_FRAMES = (1, 5, 9, 10, 64, 100, 999, 65536)
LIMITS = (0, 1, 2, 0)
BLANK = b" \t\r\n\0"


def configure(byte: int) -> tuple[int, int]:
    return MAX_FRAMES[byte & 7], LIMITS[(byte >> 3) & 3]


def drain(decoder: SyslogStreamDecoder, limit: int, max_frame: int, frames: list[bytes]) -> None:
    """``next_frames(limit)`` into ``frames`` until it gives nothing; checks the bound."""
    while True:
        got = decoder.next_frames(limit)
        fuzzlib.check(not limit or len(got) <= limit, "next_frames exceeded its limit")
        frames += got
        if not got or not limit:
            break
    bound = max_frame + len(str(max_frame)) + 1
    fuzzlib.check(decoder.buffered <= bound, f"holds {decoder.buffered} bytes, bound {bound}")


def feed(chunks: list[bytes], max_frame: int, limit: int) -> tuple[list[bytes], bool]:
    decoder = SyslogStreamDecoder(max_frame=max_frame)
    frames: list[bytes] = []
    try:
        for chunk in chunks:
            decoder.receive_data(chunk)
            drain(decoder, limit, max_frame, frames)
        frames += decoder.end_of_stream()
    except ProtocolError:
        try:
            decoder.next_frames()
        except ProtocolError:
            return frames, True
        raise fuzzlib.Finding("a broken decoder cut frames again") from None
    return frames, False


class WholeFrames:
    """A stand-in fast path: takes up to ``count`` whole frames per call, by the docs.

    Octet counting when the frame starts with 1-9 (``LEN SP``, at most as many digits
    as ``max_frame`` has, LEN <= max_frame); a frame starting with '<' ends at LF or
    NUL within ``max_frame`` bytes. Stops at anything else.
    """

    def __init__(self, max_frame: int, rng: random.Random) -> None:
        self.max_frame = max_frame
        self.digits = len(str(max_frame))
        self.rng = rng
        self.frames: list[bytes] = []

    def _one(self, buf: bytearray, pos: int, end: int) -> tuple[bytes, int] | None:
        first = buf[pos]
        if 0x31 <= first <= 0x39:
            at = pos
            while at < end and at - pos < self.digits and 0x30 <= buf[at] <= 0x39:
                at += 1
            if at == end or buf[at] != 0x20:
                return None
            length = int(buf[pos:at])
            if length > self.max_frame or end - at - 1 < length:
                return None
            return bytes(buf[at + 1 : at + 1 + length]), at + 1 + length
        if first == 0x3C:
            window = bytes(buf[pos : min(end, pos + self.max_frame + 1)])
            ends = [i for i in (window.find(b"\n"), window.find(b"\0")) if i >= 0]
            if not ends:
                return None
            return window[: min(ends)], pos + min(ends) + 1
        return None

    def __call__(self, buf: bytearray, end: int) -> int:
        pos = 0
        for _ in range(self.rng.randint(0, 3)):
            if pos >= end:
                break
            found = self._one(buf, pos, end)
            if found is None:
                break
            frame, pos = found
            if frame.strip(BLANK):
                self.frames.append(frame)
        return pos


def feed_with_fast_path(
    chunks: list[bytes], max_frame: int, rng: random.Random
) -> tuple[list[bytes], bool]:
    """The collector's loop: the fast path, then one frame by the decoder, and again."""
    decoder = SyslogStreamDecoder(max_frame=max_frame)
    fast = WholeFrames(max_frame, rng)
    frames = fast.frames
    try:
        for chunk in chunks:
            decoder.receive_data(chunk)
            while True:
                decoder.take_run(fast)
                got = decoder.next_frames(limit=1)
                frames += got
                if not got:
                    break
        frames += decoder.end_of_stream()
    except ProtocolError:
        return frames, True
    return frames, False


def test_one_input(data: bytes) -> None:
    if not data:
        return
    max_frame, limit = configure(data[0])
    stream = data[1:]
    rng = fuzzlib.rng_for(data)
    whole = None
    for chunks in fuzzlib.chunkings(stream, rng):
        result = feed(chunks, max_frame, limit)
        if whole is None:
            whole = result
            for frame in result[0]:
                fuzzlib.check(len(frame) <= max_frame, "a frame above max_frame")
                fuzzlib.check(frame.strip(BLANK), "a blank frame")
                parse_syslog_untrusted(frame, max_frame=max_frame, now_ns=0)
        else:
            fuzzlib.check(result == whole, "chunking changed the frames")
        fast = feed_with_fast_path(chunks, max_frame, rng)
        fuzzlib.check(fast == whole, "take_run changed the frames")


def seeds() -> list[bytes]:
    frame = b"<34>1 2003-10-11T22:14:15.003Z host su - ID47 - hi there"
    streams = [
        b"%d %s" % (len(frame), frame) * 2,
        frame + b"\n" + frame + b"\0" + frame + b"\r\n",
        b"12 <13>two\nlines" + b"<13>lf frame\n" + b"5 \n\n\n\n\n" + b"2024-03-05 a line\n",
        b"1a not a length\n",
        b"70000 " + frame,
        b"123456789",
        b"<13>" + b"x" * 120 + b"\n",
        b"9 <13>short",
    ]
    return [bytes([config]) + s for config in range(32) for s in streams[:2]] + [
        bytes([config]) + s for config in (4, 7) for s in streams
    ]


if __name__ == "__main__":
    fuzzlib.main(test_one_input, seeds)
