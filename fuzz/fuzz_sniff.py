"""Fuzz target: dialect detection (docs/protocol.md §1), ``sniff_untrusted``.

Input: the first bytes of a connection.

Checks: nothing raises; with ``final`` there is always an answer; once an answer is
given for a head, every longer head gives the same one, and asking with ``final``
gives it too (so a decision never depends on how the bytes arrived); the stream then
goes to that dialect's decoder the way the collector sends it, which raises nothing
but ProtocolError.
"""

from __future__ import annotations

import contextlib

import atheris
import fuzzlib

with atheris.instrument_imports(include=["umonitor"]):
    from umonitor.errors import ProtocolError
    from umonitor.protocol import frame_codec as fc
    from umonitor.protocol.legacy import LegacyDecoder
    from umonitor.protocol.sniff import Dialect, sniff_untrusted
    from umonitor.protocol.text_lines import LineDecoder

# sniff_untrusted reads at most the first 12 bytes; a little more shows it does not
# look further.
HEAD = 40


def test_one_input(data: bytes) -> None:
    decided = None
    for size in range(min(len(data), HEAD) + 1):
        head = data[:size]
        final = sniff_untrusted(head, final=True)
        fuzzlib.check(final is not None, f"no dialect for {head!r} at the end")
        dialect = sniff_untrusted(head)
        if decided is not None:
            fuzzlib.check(dialect is decided, f"{head!r} gives {dialect}, a prefix {decided}")
        if dialect is not None:
            fuzzlib.check(final is dialect, f"{head!r}: {dialect}, at the end {final}")
            decided = dialect
    dialect = sniff_untrusted(data, final=True)
    if dialect is Dialect.NATIVE:
        decoder = fc.FrameDecoder(fc.Peer.GUEST, max_frame=4096)
        decoder.receive_data(data)
        with contextlib.suppress(ProtocolError):
            decoder.next_events()
    else:
        lines = (
            LegacyDecoder(max_line=64) if dialect is Dialect.LEGACY else LineDecoder(max_line=64)
        )
        lines.receive_data(data)
        lines.next_events()
        lines.end_of_stream()


def seeds() -> list[bytes]:
    return [
        fc.PREFACE + fc.encode(fc.Hello("x", bytes(16))),
        b"\x89UM",
        b"ERROR: something\n",
        b"emergency: x",
        b"Trace:\tdeep\n",
        b"mloaded\n",
        b"mLoaded\n",
        b"w1 warning\n",
        b"f\n",
        b"r",
        b"hello world\n",
        b"m\0",
        b"",
    ]


if __name__ == "__main__":
    fuzzlib.main(test_one_input, seeds)
