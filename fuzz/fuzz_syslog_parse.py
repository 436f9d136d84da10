"""Fuzz target: one syslog frame (docs/syslog.md), ``parse_syslog_untrusted``.

Input: one configuration byte (``max_frame`` and the receive time), then the frame.

Checks:

- it returns a SyslogMessage or raises ProtocolError, and the error only for the
  two documented cases: a frame larger than ``max_frame`` or a blank one;
- the values are in range: facility 0-23, severity 0-7, rfc 3164 or 5424, a time
  in years 1-9999 or none, and an RFC 3164 message has neither MSGID nor structured
  data;
- an RFC 5424 message written out again as RFC 5424 parses to the same message;
- the message stored the way the syslog listeners store it (``syslog_fields`` and
  ``LineFormatter``) reads back with ``parse_line`` as the same record, so what the
  parser accepts the log file can hold and the index can read.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris
import fuzzlib

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.syslog_frames
from tests.syslog_frames import write_5424

with atheris.instrument_imports(include=["umonitor"]):
    from umonitor.collector.syslog_listeners import syslog_fields
    from umonitor.errors import LineError, ProtocolError
    from umonitor.protocol.syslog import SyslogMessage, parse_syslog_untrusted
    from umonitor.records import Origin, Record, Severity
    from umonitor.store.logfile import LineFormatter, RecordLine, parse_line

MAX_FRAMES = (65536, 480, 64, 16)
NS = 1_000_000_000
NOWS = (
    1_767_225_600_123_456_789,  # 2026-01-01T00:00:00.123456789Z
    1_767_225_599 * NS,  # a second before, in 2025
    951_782_400 * NS,  # 2000-02-29T00:00:00Z
    0,
)
YEAR_1 = -62_135_596_800 * NS  # 0001-01-01T00:00:00Z
YEAR_10000 = 253_402_300_800 * NS  # 10000-01-01T00:00:00Z


def stored_line_reads_back(message: SyslogMessage, now_ns: int) -> None:
    record = Record(
        1,
        Severity(message.severity),
        message.message,
        fields=syslog_fields(message),
    )
    time_ns = now_ns if message.timestamp_ns is None else message.timestamp_ns
    line = LineFormatter().line(time_ns, Origin.SYSLOG, record)
    try:
        parsed = parse_line(line)
    except LineError as exc:
        raise fuzzlib.Finding(f"stored line {line!r} does not read back: {exc}") from exc
    expected = RecordLine(time_ns // 1000 * 1000, Origin.SYSLOG, record)
    fuzzlib.check(parsed == expected, f"stored line {line!r} reads back as {parsed!r}")


def test_one_input(data: bytes) -> None:
    if not data:
        return
    max_frame = MAX_FRAMES[data[0] & 3]
    now_ns = NOWS[(data[0] >> 2) & 3]
    frame = data[1:]
    try:
        message = parse_syslog_untrusted(frame, now_ns=now_ns, max_frame=max_frame)
    except ProtocolError:
        fuzzlib.check(
            len(frame) > max_frame or not frame.strip(b" \t\r\n\0"),
            "ProtocolError for a frame the docs say parses",
        )
        return
    fuzzlib.check(len(frame) <= max_frame, "a frame above max_frame parsed")
    fuzzlib.check(0 <= message.facility <= 23, f"facility {message.facility}")
    fuzzlib.check(0 <= message.severity <= 7, f"severity {message.severity}")
    fuzzlib.check(message.rfc in (3164, 5424), f"rfc {message.rfc}")
    if message.rfc == 3164:
        fuzzlib.check(not message.msgid and not message.structured_data, "3164 with 5424 parts")
    fuzzlib.check(
        message.timestamp_ns is None or YEAR_1 <= message.timestamp_ns < YEAR_10000,
        f"time {message.timestamp_ns} is outside years 1-9999",
    )
    stored_line_reads_back(message, now_ns)
    if message.rfc == 5424:
        again = parse_syslog_untrusted(write_5424(message), now_ns=now_ns, max_frame=1 << 30)
        fuzzlib.check(again == message, f"{message!r} written again parses as {again!r}")


def seeds() -> list[bytes]:
    frames = [
        b"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - "
        b"\xef\xbb\xbf'su root' failed for lonvick on /dev/pts/8",
        b'<165>1 2003-10-11T22:14:15.003000-07:00 host app 1234 ID1 [exampleSDID@32473 iut="3" '
        b'eventSource="App\\"x\\]y"][other a="\\\\"] hello',
        b"<13>1 - - - - - -",
        b"<13>1 2026-11-26t16:12:45z h a p m [x@1 a=b] broken sd",
        b"<13>1 2026-13-45T25:61:61+24:00 h a p m - impossible",
        b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed",
        b"<13>Feb 29 00:00:00.250 host app[12]: leap",
        b"<0>1990 Oct 22 10:52:01 TZ-6 scapegoat.dmz.example.org 10.1.2.3 sched[0]: x",
        b"<13>2026-11-26T16:12:45+01:00 host prog[7] rsyslog forward format",
        b"Use the BFG!",
        b"<999>app: too big a PRI\r\n\0",
        b"<191>1 9999-12-31T23:59:59.999999999-23:59 h a p m - last",
        b" \t\r\n",
    ]
    return [bytes([config]) + frame for config in range(16) for frame in frames[:3]] + [
        b"\x00" + frame for frame in frames
    ]


if __name__ == "__main__":
    fuzzlib.main(test_one_input, seeds)
