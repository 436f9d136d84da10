"""Lines as the C block paths read them: which they take, and reading them back.

Shared by tests/unit/test_speedups_blocks.py and fuzz/fuzz_block_lines.py: the
contract of ``_speedups.summarize_lines`` and ``scan_lines`` (their docstrings)
written independently of the C code.
"""

from __future__ import annotations

import datetime
import re

from umonitor.store import blocks
from umonitor.store.logfile import BootLine, DroppedLine, LineError, RecordLine, parse_line

U64 = 2**64 - 1
FOLD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")

_RECORD = re.compile(
    rb"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\.\d{6}Z"
    rb" (?:emerg|alert|crit|err|warning|notice|info|debug)"
    rb" (?:app|console|syslog)(?:/(?:enter|exit|crash))?"
    rb" (0|[1-9]\d*)"
    rb" (?:-|\+(0|[1-9]\d*)\.(\d{9}))"
    rb" ([!-~]*)"
    rb" [^\n]*",
    re.S,
)


def in_fast_case(raw: bytes) -> bool:
    """Whether the C paths take this line (without its newline) as a record."""
    match = _RECORD.fullmatch(raw)
    if match is None:
        return False
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    try:
        datetime.date(year, month, day)
    except ValueError:
        return False
    if hour > 23 or minute > 59 or second > 61:
        return False
    seq, whole, fraction, source = match.groups()[6:]
    if int(seq) > U64:
        return False
    if whole is not None and int(whole) * 1_000_000_000 + int(fraction) > U64:
        return False
    if source != b"-":
        line_text = source.partition(b":")[2].partition(b":")[0]
        if line_text and not (line_text.isdigit() and int(line_text) <= U64):
            return False
    return True


def python_parse(raw: bytes) -> BootLine | DroppedLine | RecordLine | None:
    try:
        return parse_line(raw.decode("utf-8", "replace"))
    except LineError:
        return None


def split_lines(data: bytes, pos: int, end: int) -> list[tuple[int, bytes]]:
    """(start, line without newline) of every complete line of data[pos:end]."""
    out = []
    while True:
        newline = data.find(b"\n", pos, end)
        if newline < 0:
            return out
        out.append((pos, data[pos:newline]))
        pos = newline + 1


def message_bytes(raw: bytes) -> bytes:
    """A record line's MESSAGE bytes, as the file holds them."""
    start, stop = blocks.message_span(raw)
    return raw[start:stop]
