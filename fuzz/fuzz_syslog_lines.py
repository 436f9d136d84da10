"""Differential fuzz target: ``_speedups.syslog_lines`` against the Python path.

The syslog intake lets ``syslog_lines`` (C) turn runs of plain RFC 5424 frames from
the host of the frame before straight into log lines (``SyslogStreamDecoder.take_run``)
and parses the frame where it stops in Python, which also sets the host for the next
run. The pure path parses every frame with ``parse_syslog_untrusted`` and stores it
with ``syslog_fields`` and ``LineFormatter``. Both must store the same lines.

Input: one configuration byte (``max_frame``, the first host, the first sequence
number, the clock), then a TCP syslog stream.

Checks:

- fed whole and in random chunks through the intake's loop, the stored lines, their
  numbering and whether the stream fails are those of the pure path;
- each call stops at a frame boundary of the decoder's framing, counts the frames
  it took, writes for each exactly the pure path's line (only for RFC 5424 frames
  from the given host), and gives the same answer for the same bytes at another
  offset or ending right before an unreadable page.
"""

from __future__ import annotations

import atheris
import fuzzlib

with atheris.instrument_imports(include=["umonitor"]):
    from umonitor._speedups import syslog_lines
    from umonitor.collector.syslog_listeners import syslog_fields
    from umonitor.errors import ProtocolError
    from umonitor.protocol.syslog import SyslogStreamDecoder, parse_syslog_untrusted
    from umonitor.records import Origin, Record, Severity
    from umonitor.store.logfile import LineFormatter

NOW = 1_767_225_600_123_456_789  # 2026-01-01T00:00:00.123456789Z
MAX_FRAMES = (65536, 64, 9, 1000)
HOSTS = (None, b"localhost", b"-", b"h")
SEQS = (0, 41, 2**63, 2**64 - 3)
NOWS = (NOW, 0, -1, 253_402_300_799 * 10**9)  # the last: 9999-12-31T23:59:59Z


def configure(byte: int) -> tuple[int, bytes | None, int, int]:
    return (
        MAX_FRAMES[byte & 3],
        HOSTS[(byte >> 2) & 3],
        SEQS[(byte >> 4) & 3],
        NOWS[(byte >> 6) & 3],
    )


class Intake:
    """One syslog connection's worth of state, as ``SyslogStream`` keeps it."""

    def __init__(self, max_frame: int, host: bytes | None, seq: int, now_ns: int) -> None:
        self.decoder = SyslogStreamDecoder(max_frame=max_frame)
        self.max_frame = max_frame
        self.host = host
        self.seq = seq
        self.now_ns = now_ns
        self.formatter = LineFormatter()
        self.lines: list[str] = []

    def line(self, frame: bytes) -> tuple[str, bytes | None]:
        """The pure path's line for one frame, and the host it sets."""
        message = parse_syslog_untrusted(frame, now_ns=self.now_ns, max_frame=self.max_frame)
        record = Record(
            self.seq + 1,
            Severity(message.severity),
            message.message,
            wall_ns=message.timestamp_ns,
            fields=syslog_fields(message),
        )
        time_ns = self.now_ns if message.timestamp_ns is None else message.timestamp_ns
        line = self.formatter.line(time_ns, Origin.SYSLOG, record)
        host = None
        if message.rfc == 5424 and message.hostname:
            host = message.hostname.encode("utf-8", "surrogateescape")
        return line, host

    def take(self, buf: bytearray, end: int) -> int:
        assert self.host is not None
        data = bytes(buf[:end])
        args = (self.max_frame, self.host, self.seq, self.now_ns)
        result = syslog_lines(buf, 0, end, *args)
        stop, text, new_seq, count = result
        fuzzlib.check(0 <= stop <= end, f"stop {stop} outside 0..{end}")
        fuzzlib.check(text.isascii() and not text.endswith("\n"), "text is not plain ASCII lines")
        fuzzlib.check((count > 0) == (stop > 0), "count and stop disagree")
        fuzzlib.check(new_seq == self.seq + count, f"seq {new_seq} after {count} from {self.seq}")
        shifted = b"\0<" + data
        elsewhere = syslog_lines(shifted, 2, len(shifted), *args)
        fuzzlib.check(elsewhere == (stop + 2, text, new_seq, count), "answer depends on offset")
        with fuzzlib.Fenced(data) as fenced:
            at_fence = syslog_lines(fenced.buffer, fenced.start, fenced.end, *args)
        fuzzlib.check(at_fence[1:] == result[1:], "answer changes at a page end")
        # The frames it took are whole frames of the decoder's framing...
        reference = SyslogStreamDecoder(max_frame=self.max_frame)
        reference.receive_data(data[:stop])
        try:
            frames = reference.next_frames()
        except ProtocolError as exc:
            raise fuzzlib.Finding(f"took bytes the decoder rejects: {exc}") from exc
        fuzzlib.check(reference.buffered == 0, "stopped inside a frame")
        fuzzlib.check(len(frames) == count, f"{count} frames counted, {len(frames)} cut")
        # ...each an RFC 5424 message from this host, stored as the pure path does.
        lines = []
        for frame in frames:
            line, host = self.line(frame)
            fuzzlib.check(host == self.host, f"took a frame from {host!r}, not {self.host!r}")
            lines.append(line)
            self.seq += 1
        fuzzlib.check(text == "\n".join(lines), f"C wrote {text!r}, Python {lines!r}")
        if text:
            self.lines += text.split("\n")
        return stop

    def store(self, frame: bytes) -> None:
        line, self.host = self.line(frame)
        self.seq += 1
        self.lines.append(line)

    def feed(self, chunk: bytes, fast: bool) -> bool:
        """False once the stream broke."""
        decoder = self.decoder
        decoder.receive_data(chunk)
        try:
            while True:
                if fast and self.host is not None:
                    decoder.take_run(self.take)
                frames = decoder.next_frames(limit=1)
                if not frames:
                    return True
                self.store(frames[0])
        except ProtocolError:
            return False

    def end(self) -> None:
        try:
            for frame in self.decoder.end_of_stream():
                self.store(frame)
        except ProtocolError:
            pass


def run(chunks: list[bytes], config: int, fast: bool) -> tuple[list[str], bool]:
    intake = Intake(*configure(config))
    ok = all(intake.feed(chunk, fast) for chunk in chunks)
    if ok:
        intake.end()
    return intake.lines, ok


def test_one_input(data: bytes) -> None:
    if not data:
        return
    stream = data[1:]
    expected = run([stream], data[0], fast=False)
    rng = fuzzlib.rng_for(data)
    for chunks in ([stream], fuzzlib.random_chunks(stream, rng)):
        got = run(chunks, data[0], fast=True)
        fuzzlib.check(got == expected, f"fast path {got!r}, pure path {expected!r}")


def seeds() -> list[bytes]:
    loggen = (
        b"<38>1 2026-11-26T16:12:45+00:00 localhost prg00000 1234 - - \xef\xbb\xbfseq: "
        b"0000000000, thread: 0000, runid: 1795709565, stamp: 2026-11-26T16:12:45 PADDPAD"
    )
    others = [
        b"<38>1 2026-11-26T16:12:45Z otherhost app 1 - hello",
        b'<38>1 2026-11-26T16:12:45.5Z localhost app 1 - [x@1 a="b"] sd',
        b"<38>1 2026-11-26T16:12:45Z localhost app 1 - - caf\xc3\xa9",
        b"<191>1 - localhost - - - - nil time",
        b"<999>1 2026-11-26t16:12:45.123456789-05:30 localhost a b c - x",
        b"<38>Nov 26 16:12:45 localhost app: RFC 3164",
        b"<38>1 9999-12-31T23:59:59-01:00 localhost a b c - after 9999",
        b"<38>1 2026-11-26T16:12:45Z localhost a=b 1 - - quote-worthy app",
        b"no pri at all",
    ]
    octet = b"%d %s" % (len(loggen), loggen)
    streams = [
        octet * 3 + loggen + b"\n" + loggen + b"\0",
        b"".join(b"%d %s" % (len(o), o) + octet for o in others),
        b"".join(o + b"\n" + loggen + b"\n" for o in others),
    ]
    return [bytes([config]) + s for config in range(0, 256, 3) for s in streams[:1]] + [
        bytes([config]) + s for config in (0, 4, 5) for s in streams
    ]


if __name__ == "__main__":
    fuzzlib.main(test_one_input, seeds)
