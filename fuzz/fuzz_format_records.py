"""Differential fuzz target: ``_speedups.format_records`` against the Python path.

The collector lets ``format_records`` (C) turn runs of RECORD frames straight into
log lines (``FrameDecoder.take_record_run``) and decodes the frame where it stops
with ``next_events(limit=1)``. The pure path decodes every frame and formats it
with ``LineFormatter``. Both must store the same lines and the same high mark.

Input: one configuration byte (``max_frame``, the starting high mark, the clock),
then a frame stream (no preface).

Checks:

- fed whole and in random chunks through the collector's loop, the lines, the high
  mark and whether the stream fails are those of the pure path;
- each call returns a position at a frame boundary within the span, text that is
  ASCII, and a count that matches; the same bytes at another offset, or ending
  right before an unreadable page, give the same answer;
- a complete RECORD frame it stops before is outside the common case its header
  comment describes (so the fast path is not silently skipped).
"""

from __future__ import annotations

import atheris
import fuzzlib

with atheris.instrument_imports(include=["umonitor"]):
    from umonitor._speedups import format_records
    from umonitor.errors import ProtocolError
    from umonitor.protocol import frame_codec as fc
    from umonitor.records import Kind, Origin, Record, Severity
    from umonitor.store.logfile import LineFormatter

NOW = 1_767_225_600_123_456_789  # 2026-01-01T00:00:00.123456789Z
LAST_NS = 253_402_300_799_999_999_999  # 9999-12-31T23:59:59.999999999Z
MAX_FRAMES = (65536, 64, 100, 512)
HIGHS = (0, 5, 2**64 - 1, -5, 2**70, 3, 1, 40)
NOWS = (NOW, 0, LAST_NS, LAST_NS + 1, -1, 2**64 + 3, 999, NOW)


def configure(byte: int) -> tuple[int, int, int]:
    return MAX_FRAMES[byte & 3], HIGHS[(byte >> 2) & 7], NOWS[(byte >> 5) & 7]


def _plain(text: str, refused: str = "") -> bool:
    return all(" " <= c <= "~" and c != "\\" and c not in refused for c in text)


def common_case(record: Record, now_ns: int) -> bool:
    """The records ``format_records`` promises to take (its header comment)."""
    time_ns = now_ns if record.wall_ns is None else record.wall_ns
    return (
        _plain(record.file, " :")
        and _plain(record.function, " :")
        and record.file != "-"
        and _plain(record.message)
        and all(_plain(k, ' ="') and _plain(v) for k, v in record.fields)
        and 0 <= time_ns <= LAST_NS
    )


class Run:
    """One connection's worth of state: the decoder, the high mark, the lines."""

    def __init__(self, max_frame: int, high: int, now_ns: int, fast: bool) -> None:
        self.decoder = fc.FrameDecoder(fc.Peer.GUEST, max_frame=max_frame, expect_preface=False)
        self.high = high
        self.now_ns = now_ns
        self.fast = fast
        self.formatter = LineFormatter()
        self.lines: list[str] = []

    def consume(self, buf: bytearray, pos: int, end: int, max_body: int) -> int:
        data = bytes(buf[pos:end])
        result = format_records(buf, pos, end, max_body, self.high, self.now_ns)
        stop, text, new_high, count = result
        fuzzlib.check(pos <= stop <= end, f"stop {stop} outside {pos}..{end}")
        fuzzlib.check(text.isascii() and not text.endswith("\n"), "text is not plain ASCII lines")
        fuzzlib.check(count == (text.count("\n") + 1 if text else 0), "count is not the lines")
        if not text:
            fuzzlib.check(new_high == self.high, "high mark moved without a line")
        # The same bytes alone, and fenced by an unreadable page, give the same answer.
        alone = format_records(data, 0, len(data), max_body, self.high, self.now_ns)
        fuzzlib.check(alone == (stop - pos, text, new_high, count), "answer depends on offset")
        with fuzzlib.Fenced(data) as fenced:
            at_fence = format_records(
                fenced.buffer, fenced.start, fenced.end, max_body, self.high, self.now_ns
            )
        fuzzlib.check(at_fence[1:] == result[1:], "answer changes at a page end")
        # What it took, the pure path takes the same way.
        check = fc.FrameDecoder(fc.Peer.GUEST, max_frame=max_body + 5, expect_preface=False)
        check.receive_data(data[: stop - pos])
        taken = check.next_events()
        fuzzlib.check(check.buffered == 0, "stopped inside a frame")
        fuzzlib.check((len(taken) > 0) == (stop > pos), "took bytes but no frame")
        lines: list[str] = []
        high = self.high
        for event in taken:
            fuzzlib.check(type(event) is Record, f"took a {type(event).__name__}")
            assert isinstance(event, Record)
            fuzzlib.check(common_case(event, self.now_ns), f"took {event!r}")
            if event.seq > high:
                high = event.seq
                lines.append(self._line(event))
        fuzzlib.check(text == "\n".join(lines), f"C wrote {text!r}, Python {lines!r}")
        fuzzlib.check(new_high == high, f"high mark {new_high}, Python {high}")
        if text:
            self.lines += text.split("\n")
        self.high = new_high
        return stop

    def _line(self, record: Record) -> str:
        time_ns = self.now_ns if record.wall_ns is None else record.wall_ns
        return self.formatter.line(time_ns, Origin.APP, record)

    def feed(self, chunk: bytes) -> bool:
        """False once the stream broke."""
        decoder = self.decoder
        decoder.receive_data(chunk)
        while True:
            if self.fast:
                decoder.take_record_run(self.consume)
            try:
                events = decoder.next_events(limit=1)
            except ProtocolError:
                return False
            if not events:
                return True
            (event,) = events
            if type(event) is not Record:
                continue
            assert isinstance(event, Record)
            if self.fast:
                fuzzlib.check(
                    not common_case(event, self.now_ns), f"fast path left {event!r} to Python"
                )
            if event.seq > self.high:
                self.high = event.seq
                self.lines.append(self._line(event))


def run(
    chunks: list[bytes], max_frame: int, high: int, now_ns: int, fast: bool
) -> tuple[list[str], int, bool]:
    state = Run(max_frame, high, now_ns, fast)
    ok = all(state.feed(chunk) for chunk in chunks)
    return state.lines, state.high, ok


def test_one_input(data: bytes) -> None:
    if not data:
        return
    max_frame, high, now_ns = configure(data[0])
    stream = data[1:]
    expected = run([stream], max_frame, high, now_ns, fast=False)
    rng = fuzzlib.rng_for(data)
    for chunks in ([stream], fuzzlib.random_chunks(stream, rng)):
        got = run(chunks, max_frame, high, now_ns, fast=True)
        fuzzlib.check(got == expected, f"fast path {got!r}, pure path {expected!r}")


def seeds() -> list[bytes]:
    base = Record(
        7,
        Severity.WARNING,
        "disk almost full",
        Kind.LOG,
        1_234_567_890,
        None,
        "fs.c",
        120,
        "check",
        (("pct", "97"), ("dev", "/dev/vda 1"), ("empty", ""), ("q", 'say "hi"')),
    )
    records = [
        base,
        Record(8, Severity.INFO, "x", wall_ns=1_767_225_600_987_654_321),
        Record(9, Severity.DEBUG, "", kind=Kind.CRASH, line=9),
        Record(10, Severity.ERR, "tab\there", file="-"),
        Record(11, Severity.ERR, "caf\u00e9", function="a b"),
        Record(6, Severity.NOTICE, "replayed"),
        Record(12, Severity.EMERG, "before 1970", wall_ns=-1),
        Record(2**64 - 1, Severity.ALERT, "last"),
    ]
    stream = b"".join(fc.encode_record(r) for r in records)
    other = fc.encode(fc.Ping(1)) + fc.encode(fc.Hello("x", bytes(16)))
    return [bytes([config]) + stream for config in range(0, 256, 5)] + [
        b"\x00" + fc.encode_record(base) * 3 + other + fc.encode_record(base),
        b"\x00" + fc.encode_record(base)[:-1],
    ]


if __name__ == "__main__":
    fuzzlib.main(test_one_input, seeds)
