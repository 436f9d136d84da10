"""Runs of log lines the C accelerator formats straight from a receive buffer.

Two fast paths feed the store without a Record per line: ``format_records`` turns a
run of native RECORD frames into app.log lines, and ``syslog_lines`` a run of plain
RFC 5424 frames into syslog.log lines (umonitor/_speedups). Each stops before the first
frame it does not handle, which the pure path then takes, so both paths store the same
bytes. Each adds what it stored, per severity, to the caller's tally (store/tally.py).
Without the accelerator (or with ``UMONITOR_PURE_PYTHON`` set) nothing is taken
here and every frame goes the pure way.
"""

from __future__ import annotations

import os
import time
from array import array
from collections.abc import Callable

from umonitor.store.instance_log import InstanceLog

FormatRecords = Callable[
    [bytearray, int, int, int, int, int, "array[int]"], tuple[int, str, int, int]
]
SyslogLines = Callable[
    [bytearray, int, int, int, bytes, int, int, "array[int]"], tuple[int, str, int, int]
]
format_records: FormatRecords | None
syslog_lines: SyslogLines | None
try:
    from umonitor._speedups import format_records, syslog_lines
except ImportError:  # the C accelerator is optional; the pure path is the reference
    format_records = syslog_lines = None
if os.environ.get("UMONITOR_PURE_PYTHON"):
    format_records = syslog_lines = None


def _takes_tally() -> bool:
    """Whether the built accelerator counts into a tally; one built before it did
    would refuse the argument on every run, so then the pure path is taken."""
    if format_records is None or syslog_lines is None:
        return False
    tally = array("q", bytes(64))
    try:
        format_records(bytearray(), 0, 0, 0, 0, 0, tally)
        syslog_lines(bytearray(), 0, 0, 0, b"h", 0, 0, tally)
    except TypeError:
        return False
    return True


if not _takes_tally():
    format_records = syslog_lines = None


def queue_record_run(
    log: InstanceLog,
    boot: str,
    buf: bytearray,
    pos: int,
    end: int,
    max_body: int,
    tally: array[int],
) -> tuple[int, int]:
    """Queue the lines of a run of RECORD frames of ``boot`` at ``buf[pos:end]``.

    Returns (where the run stopped, the bytes of text queued); see
    ``FrameDecoder.take_record_run``.
    """
    if format_records is None:
        return pos, 0
    if log.context != boot:
        log.switch_to(boot)
    stop, text, high, written = format_records(
        buf, pos, end, max_body, log.high.get(boot, 0), time.time_ns(), tally
    )
    if text:
        log.pending.append(text)
        log.queued(written)
    log.high[boot] = high
    return int(stop), len(text)


def queue_syslog_run(
    log: InstanceLog,
    boot: str,
    buf: bytearray,
    end: int,
    max_frame: int,
    host: bytes,
    seq: int,
    tally: array[int],
) -> tuple[int, int, int]:
    """Queue the lines of the run of plain RFC 5424 frames from ``host`` at ``buf[:end]``.

    Records are numbered from ``seq + 1``. Returns (where the run stopped, the last
    seq, the bytes of text queued).
    """
    if syslog_lines is None:
        return 0, seq, 0
    if log.context != boot:
        log.switch_to(boot)
    stop, text, seq, count = syslog_lines(buf, 0, end, max_frame, host, seq, time.time_ns(), tally)
    if not count:
        return stop, seq, 0
    log.pending.append(text)
    log.queued(count)
    log.high[boot] = seq
    return stop, seq, len(text)
