"""A guest's serial console as records: cleaned as a terminal shows it, classified, sans-IO.

How this works
--------------
Everything a unikernel writes to its serial console arrives here as bytes meant for a
terminal: escape sequences, CR LF line ends, lines rewritten with a lone CR, NUL
padding, and whatever the firmware printed before the kernel took over. Three steps
turn that into records (docs/console.md has the details):

1. Framing (``ConsoleDecoder``, with protocol/delimited.py's ``LineSplitter``). A
   line ends at LF. A line longer than ``max_line`` bytes is cut into pieces of that
   size, so the decoder never holds more than ``max_line`` bytes. Every later step
   looks at one piece only and keeps no state between pieces, so the records never
   depend on how the stream was chunked.
2. Cleaning (``clean_untrusted``). Controls are dropped (TAB is kept), escape
   sequences are removed, a line rewritten with CR keeps its last segment with
   visible text, UTF-8 is decoded with replacement, and a line with a kernel
   timestamp glued to other text (``Booting from ROM..[    0.000000] Info: ...``) is
   split before the timestamp. One piece gives zero or more clean lines.
3. Classification (``console_record_untrusted``). A leading printk timestamp becomes
   ``mono_ns``; a ``<N>`` level or a Unikraft header sets the severity, and the
   Unikraft library, file and line are kept; the ``RULES`` table then recognises
   known kernel lines (panics, faults, warnings) and the lines that mean the guest
   crashed. A crash line gets ``Kind.CRASH`` and a ``crash`` field with a short
   reason, read back with ``crash_reason``.

Guest bytes never make anything here raise: any input only ever yields records.
"""

from __future__ import annotations

import itertools
import re
from typing import NamedTuple

from umonitor.protocol.crash_dump import SIGNAL_REASONS
from umonitor.protocol.delimited import LineSplitter
from umonitor.records import SEVERITY_ALIASES, Fields, Kind, Record, Severity

DEFAULT_MAX_LINE = 65536

# Keys of the fields a console record may carry.
CRASH_FIELD = "crash"  # short reason when the line means the guest crashed
LIB_FIELD = "lib"  # Unikraft library that printed the line (libukboot, …)
THREAD_FIELD = "thread"  # Unikraft thread name, when the kernel prints it
CALLER_FIELD = "caller"  # Linux caller id (T1, C0) or Unikraft {r:…,f:…} addresses
END_FIELD = "end"  # how the guest's program ended, when the console says it
HALT_FIELD = "halt"  # the guest has stopped for good but does not power off ("1")

# --- cleaning -------------------------------------------------------------------------

# Dropped before anything else, as a terminal acts on them rather than showing them:
# C0 controls and DEL, except TAB (kept), CR (rewrites the line), and ESC and BEL
# (they start and end escape sequences; a BEL left over is dropped afterwards).
_CONTROLS = bytes(b for b in (*range(0x20), 0x7F) if b not in b"\t\r\x1b\x07")

_ESCAPE = re.compile(
    rb"\x1b(?:"
    rb"\[[0-?]*[ -/]*[@-~]?"  # CSI: ESC [ parameters intermediates final
    rb"|[\]PX^_][^\x07\x1b]*\x07?"  # OSC, DCS, SOS, PM, APC: up to BEL or to ESC \
    rb"|[ -/]+[0-~]?"  # nF: charset selection ESC ( B, ESC # 8, ESC % G
    rb"|[0-~]"  # two bytes: ESC c, ESC 7, ESC =, ESC M, ESC \ (ST), …
    rb")?"
)

# C1 controls (U+0080-U+009F) that survive UTF-8 decoding.
_C1 = dict.fromkeys(range(0x80, 0xA0))

# A printk timestamp, "[%5lu.%06lu]", as Linux and Unikraft print it. Nine digits of
# seconds (31 years of uptime) keep mono_ns within a signed 64-bit integer.
_STAMP = r"\[ {0,12}(?P<sec>[0-9]{1,9})\.(?P<usec>[0-9]{6})\]"
_LEVEL_TAG = re.compile(r"<[0-7]>")  # a printk level before the timestamp is no other text
_GLUED = re.compile(r"(?:<[0-7]>)?" + _STAMP)


def clean_untrusted(piece: bytes | bytearray) -> list[str]:
    """The lines a terminal would show for one console line (without its LF).

    Usually one; none for a blank line, several when kernel lines were glued to
    other text.
    """
    data = _ESCAPE.sub(b"", piece.translate(None, _CONTROLS)).replace(b"\x07", b"")
    for segment in reversed(data.split(b"\r")):
        if segment.strip():
            break
    else:
        return []
    text = segment.decode("utf-8", "replace")
    if not text.isascii():
        text = text.translate(_C1)
    text = text.rstrip()
    tag = _LEVEL_TAG.match(text)
    cuts = [m.start() for m in _GLUED.finditer(text, 1 if tag is None else tag.end() + 1)]
    if not cuts:
        return [text]
    bounds = [0, *cuts, len(text)]
    parts = (text[a:b].rstrip() for a, b in itertools.pairwise(bounds))
    return [part for part in parts if part.strip()]


# --- classification -------------------------------------------------------------------


class Rule(NamedTuple):
    """One known console line: what it looks like, how bad it is, whether it is a crash."""

    pattern: re.Pattern[str]
    severity: Severity
    crash: str | None  # short reason when the line means the guest crashed
    system: str  # where the line comes from, for the docs and the tests


def _rule(system: str, pattern: str, severity: Severity, crash: str | None = None) -> Rule:
    return Rule(re.compile(pattern), severity, crash, system)


_S = Severity

# First match wins, so specific patterns come before general ones. Patterns are matched
# against the message: after the timestamp, the <N> level and the Unikraft header. Keep
# them anchored or distinctive; a console also carries the application's own text.
RULES: tuple[Rule, ...] = (
    # Linux: the panic line and its "---[ end Kernel panic" trailer.
    _rule("linux", r"Kernel panic - not syncing", _S.EMERG, "kernel panic"),
    _rule("linux", r"^BUG: kernel NULL pointer dereference", _S.ALERT, "null pointer dereference"),
    _rule(
        "linux",
        r"^BUG: unable to handle (?:page fault|kernel paging request|kernel NULL pointer)",
        _S.ALERT,
        "page fault",
    ),
    _rule("linux", r"^general protection fault\b", _S.ALERT, "general protection fault"),
    _rule("linux", r"^kernel BUG at ", _S.ALERT, "kernel bug"),
    _rule("linux", r"^(?:PANIC: )?double fault\b", _S.EMERG, "double fault"),
    _rule("linux", r"^(?:Internal error: )?Oops\b", _S.ALERT, "oops"),
    _rule("linux", r"segfault at [0-9a-f]+ ip ", _S.CRIT, "segmentation fault"),
    # Soft lockups, sleeping in atomic context, KASAN reports: the kernel carries on.
    _rule("linux", r"^BUG: ", _S.ALERT),
    # Parts of an oops or a warning dump; the dump's first line says which.
    _rule("linux", r"^(?:Call Trace:|RIP: )", _S.CRIT),
    _rule("linux", r"^WARNING: |^-+\[ cut here \]-+$", _S.WARNING),
    _rule("linux", r"^Out of memory: ", _S.ERR),
    # Unikraft (the CRIT: header already makes these crit).
    _rule("unikraft", r"^Unikraft Crash\b", _S.CRIT, "crash"),
    _rule(
        "unikraft",
        r"^Unhandled Trap [0-9]+ \(general protection\)",
        _S.CRIT,
        "general protection fault",
    ),
    _rule("unikraft", r"^Unhandled Trap [0-9]+ \(", _S.CRIT, "unhandled trap"),
    _rule("unikraft", r"^Crashing$", _S.CRIT, "crash"),
    # rumprun: NetBSD's "panic: …", the bare-metal kernel's "PANIC: …", then "halted";
    # a fault is "FATAL TRAP: page fault at 0x… (0x…)" and the CPU halts, silently.
    _rule("rumprun", r"^(?i:panic): ", _S.EMERG, "kernel panic"),
    _rule("rumprun", r"^FATAL TRAP: page fault at ", _S.CRIT, "page fault"),
    _rule(
        "rumprun",
        r"^FATAL TRAP: general protection at ",
        _S.CRIT,
        "general protection fault",
    ),
    _rule("rumprun", r"^FATAL TRAP: divide-by-zero at ", _S.CRIT, "divide error"),
    _rule("rumprun", r"^FATAL TRAP: invalid opcode at ", _S.CRIT, "invalid opcode"),
    _rule("rumprun", r"^FATAL TRAP: ", _S.CRIT, "fatal trap"),
    _rule("rumprun", r"^=== bootstrap failed$", _S.CRIT, "bootstrap failed"),
    _rule("rumprun", r"rump kernel halting", _S.NOTICE),
    _rule("rumprun", r"^halted$", _S.NOTICE),
    # OSv
    _rule("osv", r"^page fault outside application\b", _S.CRIT, "page fault"),
    _rule("osv", r"^Aborted\b", _S.CRIT, "abort"),
    # Nanos: a fault in the program is "*** signal 11 received by tid 2, errno 0, code 1",
    # "fault address 0x0", the thread context ("lastvector: … (Page fault)"), then
    # "core dump"; a fault in the kernel "no fault handler", " interrupt: <vector>
    # (<name>)", registers, trace.
    _rule("nanos", r"^\*\*\* signal 11 received by tid [0-9]+", _S.CRIT, "segmentation fault"),
    _rule("nanos", r"^\*\*\* signal [0-9]{1,3} received by tid [0-9]+", _S.CRIT, "fatal signal"),
    _rule("nanos", r"^lastvector: [0-9a-f]+ \(Page fault\)", _S.CRIT, "page fault"),
    _rule("nanos", r"^\s*interrupt: [0-9a-f]+ \(Page fault\)", _S.CRIT, "page fault"),
    _rule(
        "nanos",
        r"^\s*interrupt: [0-9a-f]+ \(General protection\)",
        _S.CRIT,
        "general protection fault",
    ),
    _rule("nanos", r"^\s*interrupt: [0-9a-f]+ \(", _S.CRIT, "unhandled trap"),
    _rule("nanos", r"^Page fault\b", _S.CRIT, "page fault"),
    _rule("nanos", r"^no fault handler\b|^\s*frame trace:", _S.CRIT),
    _rule("nanos", r"^[\W_]*(?i:kernel panic)\b", _S.EMERG, "kernel panic"),
    # Solo5 (MirageOS and other Solo5 guests)
    _rule("solo5", r"^Solo5: ABORT\b", _S.CRIT, "abort"),
    _rule("solo5", r"^Solo5: Halted\b", _S.NOTICE),
    # The C guest library's fatal-signal handler (docs/debugging.md): one line,
    # "umon-crash: signal N code C addr … pc … stack …", then the signal kills the
    # program. Linux's signal numbers on x86-64, named as the crash report names them.
    *(
        _rule("library", rf"^umon-crash: signal {number} ", _S.CRIT, reason)
        for number, reason in SIGNAL_REASONS.items()
    ),
    _rule("library", r"^umon-crash: signal [0-9]{1,3} ", _S.CRIT, "fatal signal"),
    # Any guest: C libraries, language runtimes, hypervisor messages.
    _rule("any", r"Segmentation fault", _S.CRIT, "segmentation fault"),
    _rule(
        "any",
        r"Assertion .{0,400}?\bfail(?:ed|ure)\b",
        _S.CRIT,
        "assertion failed",
    ),
    _rule("any", r"abort\(\) called", _S.CRIT, "abort"),
    _rule("any", r"[Tt]riple fault", _S.CRIT, "triple fault"),
)

# How a guest's program ended, said on the console by the unikernel itself: rumprun
# prints this when main() returns or _exit() is called, then "halted", and spins.
_ENDS = (
    re.compile(r'^=== main\(\) of "[^"\n]{0,256}" returned (-?[0-9]{1,10}) ===$'),
    re.compile(r"^=== (?:ERROR: )?_exit\((-?[0-9]{1,10})\) called ===$"),
)
# After these lines the guest does nothing, forever (rumprun's hw platform halts the
# CPU but never powers off): the supervisor stops QEMU on them.
_HALTED = re.compile(
    r"^(?:halted|FATAL TRAP: [a-z -]{1,40} at 0x[0-9a-f]{1,16} \(0x[0-9a-f]{1,16}\))$"
)

# Rules look at the start of a message only, which bounds the work a long line costs;
# every line they recognise says what it is in its first words.
RULE_SCOPE = 1024

# A leading "<N>" printk level, a printk timestamp (with the caller id of
# CONFIG_PRINTK_CALLER), and a "<N>" after it: all optional.
_HEAD = re.compile(
    r"(?:<(?P<pre>[0-7])>)?"
    r"(?:" + _STAMP + r"(?:\[ {0,12}(?P<caller>[TC][0-9]{1,9})\])? ?"
    r"(?:<(?P<post>[0-7])>)?)?"
)

_UNIKRAFT_LEVELS: dict[str, Severity] = {
    "CRIT": Severity.CRIT,
    "ERR": Severity.ERR,
    "Warn": Severity.WARNING,
    "Info": Severity.INFO,
    "dbg": Severity.DEBUG,
}

# Header (two spaces follow ERR: and dbg:, so that messages line up), then what
# ukprint/ukdebug may add: "<thread> ", "{r:…,f:…} ", "[libname] ",
# "<file.c @ line> ".
_UNIKRAFT = re.compile(
    r"(?:(?P<level>CRIT|Warn|Info): |(?P<level2>ERR|dbg):  ?)"
    r"(?:<(?P<thread><n/a>|[^<>@]{1,64})> )?"
    r"(?:\{(?P<caller>r:[^{}]{1,64})\} )?"
    r"(?:\[(?P<lib>[^\[\]\s]{1,64})\] )?"
    r"(?:<(?P<file>[^<>@ ]{1,256}) @ +(?P<line>[0-9]{1,9})> ?)?"
)

# The plain text prefix of docs/protocol.md §5 ("error: ", "Warning: "…).
_PREFIX = re.compile(
    "(?i:(" + "|".join(sorted(SEVERITY_ALIASES, key=len, reverse=True)) + r")):[ \t]"
)


def console_record_untrusted(seq: int, text: str) -> Record | None:
    """The record for one clean console line, or None if it carries no text."""
    head = _HEAD.match(text)
    assert head is not None  # every part is optional
    body = text[head.end() :]
    if not body.strip():
        return None
    fields: Fields = ()
    mono_ns = None
    if head["sec"] is not None:
        mono_ns = int(head["sec"]) * 1_000_000_000 + int(head["usec"]) * 1000
        if head["caller"] is not None:
            fields = ((CALLER_FIELD, head["caller"]),)
    level_digit = head["pre"] or head["post"]
    level = None if level_digit is None else Severity(int(level_digit))
    file, line = "", 0
    unikraft = _UNIKRAFT.match(body)
    if unikraft is not None:
        level = _UNIKRAFT_LEVELS[unikraft["level"] or unikraft["level2"]]
        body = body[unikraft.end() :]
        if not body.strip():
            return None
        for key, group in (
            (LIB_FIELD, "lib"),
            (THREAD_FIELD, "thread"),
            (CALLER_FIELD, "caller"),
        ):
            if unikraft[group] is not None:
                fields += ((key, unikraft[group]),)
        if unikraft["file"] is not None:
            file, line = unikraft["file"], int(unikraft["line"])
    severity, crash = classify(body, level)
    fields += _ending(body)
    if crash is None:
        return Record(seq, severity, body, Kind.LOG, mono_ns, None, file, line, "", fields)
    fields += ((CRASH_FIELD, crash),)
    return Record(seq, severity, body, Kind.CRASH, mono_ns, None, file, line, "", fields)


def classify(message: str, level: Severity | None = None) -> tuple[Severity, str | None]:
    """Severity and crash reason of a message whose explicit level (if any) is ``level``.

    The first matching rule decides; an explicit level wins over it, except that a
    crash is never milder than its rule. Without a rule or a level, a §5 prefix
    ("error: ") decides, else the line is info.
    """
    scope = message[:RULE_SCOPE]
    for rule in RULES:
        if rule.pattern.search(scope):
            if rule.crash is None:
                return (rule.severity if level is None else level), None
            worst = rule.severity if level is None else min(level, rule.severity)
            return worst, rule.crash
    if level is not None:
        return level, None
    prefix = _PREFIX.match(message)
    if prefix is not None:
        return SEVERITY_ALIASES[prefix[1].lower()], None
    return Severity.INFO, None


def _ending(message: str) -> Fields:
    """The END_FIELD or HALT_FIELD a line about the guest's end gets, if any."""
    if len(message) > 300:
        return ()
    for pattern in _ENDS:
        found = pattern.match(message)
        if found is not None:
            return ((END_FIELD, message.strip("= ")),)
    if _HALTED.match(message):
        return ((HALT_FIELD, "1"),)
    return ()


def guest_end(record: Record) -> str | None:
    """How the guest's program ended ('main() of "app" returned 0'), if this line says."""
    return next((value for key, value in record.fields if key == END_FIELD), None)


def halted(record: Record) -> bool:
    """Whether this line says the guest stopped for good without powering off."""
    return any(key == HALT_FIELD for key, _ in record.fields)


def crash_reason(record: Record) -> str | None:
    """Why the guest crashed, if this console record says it did ("kernel panic", …)."""
    for key, value in record.fields:
        if key == CRASH_FIELD:
            return value
    return None


# --- framing --------------------------------------------------------------------------


class ConsoleDecoder:
    """Turns a serial console byte stream into records, numbered from 1.

    Not a ``DelimitedDecoder``: one console line may give no record (blank once
    cleaned) or several (kernel lines glued to other text).
    """

    def __init__(self, *, max_line: int = DEFAULT_MAX_LINE) -> None:
        self._lines = LineSplitter(max_line=max_line)
        self._seq = 0

    @property
    def buffered(self) -> int:
        return self._lines.buffered

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        self._lines.receive_data(data)

    def next_events(self) -> list[Record]:
        out: list[Record] = []
        for piece in self._lines.pieces():
            self._line(out, piece)
        return out

    def end_of_stream(self) -> list[Record]:
        """Whatever is left when the console closes: a last, unended line."""
        out = self.next_events()
        self._line(out, self._lines.rest())
        return out

    def _line(self, out: list[Record], piece: bytes | bytearray) -> None:
        for text in clean_untrusted(piece):
            record = console_record_untrusted(self._seq + 1, text)
            if record is not None:
                self._seq += 1
                out.append(record)
