"""Block summaries and the line scan: the reference the C fast paths must equal.

How this works (docs/block-index.md): the index cuts each log file into **blocks**,
runs of whole lines ending after the line that takes a block to ``BLOCK_BYTES`` or
past it. A block's summary says how many lines and records it holds, their record
times' range, which severities (with counts), origins and kinds occur, and which
**grams** occur in its messages. A query skips every block whose summary says no
record in it can match, and scans the others line by line; a summary only ever saves
work, it never changes an answer.

Grams. Every byte of a message as the file holds it (escaped: ``logfile.escape``)
maps to a code: ASCII letters 1-26 (either case), digits 27-36, every other byte 0.
A gram is three consecutive codes, ``c1 * 37**2 + c2 * 37 + c3``; a block's gram
bitmap has the bit of every gram of every message in it (``GRAM_BITS`` bits, exact:
no hashing, no false positives per gram). ``--grep TEXT`` matches the messages that
contain TEXT ignoring ASCII case; the file holds ``escape(message)``, which contains
``escape(TEXT)`` whenever the message contains TEXT (escaping maps each character to
a fixed string, and commutes with ASCII case folding). So a block holding a match has
every gram of ``escape(TEXT)``'s ASCII runs: ``needle_grams``. (Only ASCII runs: a
message read from a damaged file may have had invalid UTF-8 replaced, which changes
non-ASCII bytes but never ASCII ones.)

The line scan (``scan_lines``) is what a query runs over a candidate block: it keeps
the lines that may match (time range, severity, origin, and ``search_key`` found
ignoring ASCII case in the message) with their times, every ``#`` context line, and
every line it cannot read quickly, whose time it leaves as None: the caller parses
those with ``parse_line`` and decides. Every line it keeps is checked exactly by the
caller, so the scan may keep too much, never too little.

``summarize`` and ``scan_lines`` here are pure Python; ``umonitor._speedups`` has the
same in C (``summarize_lines``, ``scan_lines``), which take the common lines and stop
at (or leave to the caller) the others. tests/unit/test_speedups_blocks.py holds the
two to each other.
"""

from __future__ import annotations

import bisect
import os
import re
import sys
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field

from umonitor.errors import LineError
from umonitor.records import Origin
from umonitor.store.logfile import BootLine, DroppedLine, RecordLine, escape, parse_line

BLOCK_BYTES = 256 << 10
GRAM_BITS = 37**3
GRAM_BYTES = (GRAM_BITS + 7) // 8
I64_MIN = -(1 << 63)
I64_MAX = (1 << 63) - 1

ORIGIN_BITS = {Origin.APP: 1, Origin.CONSOLE: 2, Origin.SYSLOG: 4}
IRREGULAR = 8  # origins bit 3: a message not written as ``escape`` writes it (below)
KIND_SHIFT = 4  # origins bits 4-7: kinds log, enter, exit, crash

# The counters a summary accumulates, in this order (C: an array('q') of N_COUNTERS).
LINES, RECORDS, MIN_NS, MAX_NS, SEVERITIES, ORIGINS, COUNTS = range(7)
N_COUNTERS = COUNTS + 8


def _code_table() -> bytes:
    table = bytearray(256)
    for i, c in enumerate(b"abcdefghijklmnopqrstuvwxyz"):
        table[c] = table[c - 32] = 1 + i
    for i in range(10):
        table[ord("0") + i] = 27 + i
    return bytes(table)


CODES = _code_table()
_FOLD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")
_FOLD_STR = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def fold(text: str) -> str:
    """``text`` with ASCII letters lowercased (and nothing else: ``--grep`` folds ASCII)."""
    return text.translate(_FOLD_STR)


def grams(data: bytes) -> list[int]:
    """The grams of ``data`` in order (see the module docstring)."""
    codes = data.translate(CODES)
    return [codes[i] * 1369 + codes[i + 1] * 37 + codes[i + 2] for i in range(len(codes) - 2)]


def add_grams(message: bytes, bits: bytearray) -> None:
    for gram in grams(message):
        bits[gram >> 3] |= 1 << (gram & 7)


def _ascii_runs(data: bytes) -> list[bytes]:
    runs: list[bytes] = []
    start = 0
    for i, byte in enumerate(data):
        if byte >= 0x80:
            if i > start:
                runs.append(data[start:i])
            start = i + 1
    if len(data) > start:
        runs.append(data[start:])
    return runs


def needle(text: str) -> bytes:
    """``escape(text)`` folded, in UTF-8: what a matching message's line contains."""
    return escape(fold(text)).encode("utf-8", "surrogatepass")


def needle_grams(text: str) -> list[int]:
    """The grams every block holding a ``--grep text`` match has (distinct, sorted)."""
    found: set[int] = set()
    for run in _ascii_runs(needle(text)):
        found.update(grams(run))
    return sorted(found)


def search_key(text: str) -> bytes:
    """The longest ASCII run of ``needle(text)``: every matching line's message holds
    it, ignoring ASCII case (b"" when there is none: no line is left out for text)."""
    return max(_ascii_runs(needle(text)), key=len, default=b"")


_ESCAPE_OR_ODD = re.compile(
    rb"(\\(?:[\\tnr]|x(?:0[0-8bcef]|1[0-9a-f]|7f)|u00[89][0-9a-f]))"
    rb"|(\\|[\x00-\x1f\x7f]|\xc2[\x80-\x9f])"
)


def irregular(message: bytes) -> bool:
    """Whether a message's bytes are not what ``escape`` writes: a raw control byte
    (C0, DEL, C1 in UTF-8), or a backslash that starts none of its sequences. Only a
    file written by something else holds one; its text may hide from the grams and
    the key search (``\\x41`` reads as "A"), so its block is always read for ``--grep``
    and the line parsed."""
    return any(m.group(2) for m in _ESCAPE_OR_ODD.finditer(message))


def has_grams(bits: bytes, wanted: list[int]) -> bool:
    return all(bits[g >> 3] & (1 << (g & 7)) for g in wanted)


def gram_list(bits: bytes | bytearray) -> bytes:
    """The set grams of a bitmap, ascending, as little-endian u16 (C: ``gram_list``)."""
    if gram_list_fast is not None:
        return gram_list_fast(bits)
    value = int.from_bytes(bits, "little")
    out = array("H")
    while value:
        low = value & -value
        out.append(low.bit_length() - 1)
        value ^= low
    if sys.byteorder == "big":
        out.byteswap()
    return out.tobytes()


def kept_holds(kept: bytes, wanted: list[int]) -> bool:
    """``has_grams`` for grams as the index keeps them: a bitmap of ``GRAM_BYTES``, or
    (when shorter) the ascending list ``gram_list`` gives."""
    if len(kept) == GRAM_BYTES:
        return has_grams(kept, wanted)
    grams = array("H")
    grams.frombytes(kept)
    if sys.byteorder == "big":
        grams.byteswap()
    for gram in wanted:
        at = bisect.bisect_left(grams, gram)
        if at == len(grams) or grams[at] != gram:
            return False
    return True


def clamp64(value: int) -> int:
    return max(I64_MIN, min(I64_MAX, value))


def message_span(raw: bytes) -> tuple[int, int]:
    """Where a record line's MESSAGE is: after six spaces, up to the first TAB."""
    at = 0
    for _ in range(6):
        at = raw.index(b" ", at) + 1
    tab = raw.find(b"\t", at)
    return at, len(raw) if tab < 0 else tab


def new_counters() -> array[int]:
    counters = array("q", [0] * N_COUNTERS)
    counters[MIN_NS] = I64_MAX
    counters[MAX_NS] = I64_MIN
    return counters


def add_line(raw: bytes, counters: array[int], bits: bytearray) -> BootLine | DroppedLine | None:
    """Count one line (without its newline) into a block's counters and grams.

    Returns the context it sets (a boot or drop notice); a line ``parse_line`` refuses
    counts as a line and nothing else (``LineError`` is raised after counting it, so the
    caller can count it as bad).
    """
    counters[LINES] += 1
    parsed = parse_line(raw.decode("utf-8", "replace"))  # LineError: counted as a line
    if isinstance(parsed, BootLine | DroppedLine):
        return parsed
    if not isinstance(parsed, RecordLine):
        return None
    severity = int(parsed.record.severity)
    time_ns = clamp64(parsed.time_ns)
    counters[RECORDS] += 1
    counters[COUNTS + severity] += 1
    counters[SEVERITIES] |= 1 << severity
    counters[ORIGINS] |= ORIGIN_BITS[parsed.origin] | (1 << (KIND_SHIFT + int(parsed.record.kind)))
    counters[MIN_NS] = min(counters[MIN_NS], time_ns)
    counters[MAX_NS] = max(counters[MAX_NS], time_ns)
    start, end = message_span(raw)
    add_grams(raw[start:end], bits)
    if irregular(raw[start:end]):
        counters[ORIGINS] |= IRREGULAR
    return None


SummarizeLines = Callable[[bytes, int, int, int, "array[int]", bytearray], int]
ScanLines = Callable[[bytes, int, int, int, int, int, int, bytes], list[tuple[int, int | None]]]
gram_list_fast: Callable[[bytes | bytearray], bytes] | None = None
summarize_lines: SummarizeLines | None = None
scan_lines_fast: ScanLines | None = None
if not os.environ.get("UMONITOR_PURE_PYTHON"):
    try:
        from umonitor._speedups import gram_list as _c_gram_list
        from umonitor._speedups import scan_lines as _c_scan_lines
        from umonitor._speedups import summarize_lines as _c_summarize_lines
    except ImportError:  # optional C accelerator; the functions here are the reference
        pass
    else:
        summarize_lines = _c_summarize_lines
        scan_lines_fast = _c_scan_lines
        gram_list_fast = _c_gram_list


@dataclass(slots=True)
class Block:
    """One block's summary (``counters`` as ``new_counters`` lays them out)."""

    offset: int
    length: int
    boot: str  # the boot in force at the block's start ("" before any)
    counters: array[int]
    grams: bytearray
    bad: int = 0

    @property
    def records(self) -> int:
        return self.counters[RECORDS]

    @property
    def time_range(self) -> tuple[int, int]:
        if not self.counters[RECORDS]:
            return 0, 0
        return self.counters[MIN_NS], self.counters[MAX_NS]


@dataclass(slots=True)
class Summarized:
    """What ``summarize`` found: the blocks, the context lines in order, the boot after."""

    blocks: list[Block] = field(default_factory=list)
    context: list[BootLine | DroppedLine] = field(default_factory=list)
    boot: str = ""


def summarize(
    data: bytes,
    pos: int,
    end: int,
    boot: str,
    block_bytes: int = BLOCK_BYTES,
    *,
    fast: bool = True,
) -> Summarized:
    """The blocks of ``data[pos:end]`` (whole lines, ``pos`` where a block starts, with
    ``boot`` in force there). The last block may be short: it is where ``end`` was."""
    out = Summarized(boot=boot)
    c_path = summarize_lines if fast else None
    while pos < end:
        block = Block(pos, 0, out.boot, new_counters(), bytearray(GRAM_BYTES))
        stop_after = pos + block_bytes
        while pos < end and pos < stop_after:
            if c_path is not None:
                pos = c_path(data, pos, end, stop_after, block.counters, block.grams)
                if pos >= end or pos >= stop_after:
                    break
            newline = data.index(b"\n", pos, end)
            try:
                context = add_line(data[pos:newline], block.counters, block.grams)
            except LineError:
                block.bad += 1
                context = None
            pos = newline + 1
            if context is not None:
                out.context.append(context)
                if isinstance(context, BootLine):
                    out.boot = context.boot
        block.length = pos - block.offset
        out.blocks.append(block)
    return out


def scan_lines(
    data: bytes,
    pos: int,
    end: int,
    since_ns: int,
    until_ns: int,
    max_severity: int,
    origin_mask: int,
    key: bytes,
    *,
    fast: bool = True,
) -> list[tuple[int, int | None]]:
    """The lines of ``data[pos:end]`` that may match, as (line start, record time).

    Time None: a ``#`` line or one the caller must parse itself. With the C fast path
    when it is built (and ``fast``); this reference keeps every record line that
    matches exactly.
    """
    if fast and scan_lines_fast is not None:
        return scan_lines_fast(data, pos, end, since_ns, until_ns, max_severity, origin_mask, key)
    out: list[tuple[int, int | None]] = []
    while pos < end:
        newline = data.index(b"\n", pos, end)
        raw = data[pos:newline]
        if raw.startswith(b"#"):
            out.append((pos, None))
        else:
            try:
                parsed = parse_line(raw.decode("utf-8", "replace"))
            except LineError:
                parsed = None
            if isinstance(parsed, RecordLine):
                time_ns = clamp64(parsed.time_ns)
                start, stop = message_span(raw)
                if key and irregular(raw[start:stop]):
                    out.append((pos, None))  # the key search cannot tell
                elif (
                    since_ns <= time_ns <= until_ns
                    and parsed.record.severity <= max_severity
                    and ORIGIN_BITS[parsed.origin] & origin_mask
                    and (not key or key in raw[start:stop].translate(_FOLD))
                ):
                    out.append((pos, time_ns))
        pos = newline + 1
    return out
