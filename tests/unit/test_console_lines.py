"""Serial console capture: cleaning, classification, crash markers, real guest samples."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.samples import console_samples
from umonitor.protocol.console_lines import (
    CALLER_FIELD,
    CRASH_FIELD,
    LIB_FIELD,
    RULES,
    THREAD_FIELD,
    ConsoleDecoder,
    clean_untrusted,
    console_record_untrusted,
    crash_reason,
    guest_end,
    halted,
)
from umonitor.records import Kind, Record, Severity

SAMPLES = console_samples()
SAMPLE_NAMES = [
    "unikraft-0.17-hello.log",
    "unikraft-0.17-lwip-net.log",
    "linux-6.1-single-app-guest.log",
    "linux-6.1-panic.log",
]
# What no stored console text may hold: C0 controls but TAB, DEL, and C1 controls.
UNPRINTABLE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def decode_all(data: bytes, **kwargs: int) -> list[Record]:
    decoder = ConsoleDecoder(**kwargs)
    decoder.receive_data(data)
    return decoder.next_events() + decoder.end_of_stream()


def decode_chunked(data: bytes, cuts: list[int], **kwargs: int) -> list[Record]:
    decoder = ConsoleDecoder(**kwargs)
    out: list[Record] = []
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        decoder.receive_data(data[start:cut])
        out += decoder.next_events()
        start = max(start, cut)
    return out + decoder.end_of_stream()


def one(line: bytes) -> Record:
    [record] = decode_all(line)
    return record


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


# --- cleaning -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "lines"),
    [
        (b"plain", ["plain"]),
        (b"crlf\r", ["crlf"]),
        (b"\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16)\r", ["SeaBIOS (version 1.16)"]),
        (b"Press Ctrl-B...\r" + b" " * 79 + b"\r", ["Press Ctrl-B..."]),
        (b"10%\r20%\r30%", ["30%"]),
        (b"\rafter a lone CR", ["after a lone CR"]),
        (b"\x1b[1;31mred\x1b[0m text", ["red text"]),
        (b"\x1b]0;window title\x07shown", ["shown"]),
        (b"\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", ["link"]),
        (b"\x1bPdevice control\x1b\\after", ["after"]),
        (b"\x1b(Bcharset\x1b)0", ["charset"]),
        (b"\x1b7saved\x1b8 \x1b=\x1b>", ["saved"]),
        (b"a\x1b", ["a"]),
        (b"\x1b[12", []),
        (b"nul\x00s\x00 and \x07bell \x08bs \x7fdel", ["nuls and bell bs del"]),
        (b"tab\tkept\t", ["tab\tkept"]),
        (b"caf\xc3\xa9 \xff", ["caf\u00e9 \ufffd"]),
        (b"c1 \xc2\x9b[31m gone", ["c1 [31m gone"]),
        (b"   \t ", []),
        (b"\x1b[2J\x1b[H", []),
        (b"   indented  ", ["   indented"]),
        (
            b"Booting from ROM..[    0.000000] Info: [libukconsole] x",
            ["Booting from ROM..", "[    0.000000] Info: [libukconsole] x"],
        ),
        (
            b"o\x1bc\x1b[?7l\x1b[2J[    0.000000] Linux version 6.1",
            ["o", "[    0.000000] Linux version 6.1"],
        ),
        (b"  [    1.000000] only blanks before", ["[    1.000000] only blanks before"]),
        (b"a [    1.000000] b [    2.000000] c", ["a", "[    1.000000] b", "[    2.000000] c"]),
        (
            b"<3>[    1.000000] x <4>[    2.000000] y",
            ["<3>[    1.000000] x", "<4>[    2.000000] y"],
        ),
        (b"not a stamp [1.5] or [ 1.12345]", ["not a stamp [1.5] or [ 1.12345]"]),
    ],
)
def test_cleaning(raw: bytes, lines: list[str]) -> None:
    assert clean_untrusted(raw) == lines


# --- classification -------------------------------------------------------------------


# line, severity, crash reason, message (None: not checked)
CASES: list[tuple[bytes, int, str | None, str | None]] = [
    # Linux
    (b"[    2.166086] Kernel panic - not syncing: VFS: Unable to mount root fs", 0,
     "kernel panic", "Kernel panic - not syncing: VFS: Unable to mount root fs"),
    (b"[    9.100000] ---[ end Kernel panic - not syncing: Attempted to kill init! ]---", 0,
     "kernel panic", None),
    (b"[    3.000000] BUG: kernel NULL pointer dereference, address: 0000000000000000", 1,
     "null pointer dereference", None),
    (b"[    3.000000] BUG: unable to handle page fault for address: ffffffffff600000", 1,
     "page fault", None),
    (b"[    3.000000] BUG: unable to handle kernel paging request at 0000", 1,
     "page fault", None),
    (b"[    3.000000] general protection fault, probably for non-canonical address 0xdead:"
     b" 0000", 1, "general protection fault", None),
    (b"[    3.000000] general protection fault: 0000 [#1] SMP", 1, "general protection fault",
     None),
    (b"[    3.000000] kernel BUG at mm/slub.c:123!", 1, "kernel bug", None),
    (b"[    3.000000] Oops: 0002 [#1] PREEMPT SMP NOPTI", 1, "oops", None),
    (b"[    3.000000] Internal error: Oops: 96000004 [#1] SMP", 1, "oops", None),
    (b"[    3.000000] PANIC: double fault, error_code: 0x0", 0, "double fault", None),
    (b"[    5.000000] init[1]: segfault at 0 ip 0000000000401000 sp 00007ffc error 6", 2,
     "segmentation fault", None),
    (b"[   22.000000] BUG: soft lockup - CPU#0 stuck for 22s! [init:1]", 1, None, None),
    (b"[    3.000000] Call Trace:", 2, None, "Call Trace:"),
    (b"[    3.000000] RIP: 0010:do_one_initcall+0x41/0x200", 2, None, None),
    (b"[    3.000000] WARNING: CPU: 0 PID: 1 at kernel/fork.c:10 f+0x1/0x2", 4, None, None),
    (b"[    3.000000] ------------[ cut here ]------------", 4, None, None),
    (b"[    3.000000] Out of memory: Killed process 1 (init)", 3, None, None),
    (b"[    2.389554] AMD-Vi: This is not a bug.", 6, None, None),
    (b"[    2.000000] ata1: failed to resume link (SControl 0)", 6, None, None),
    (b"[    2.000000] pci 0000:00:02.0: error: not fatal", 6, None, None),
    (b"[    2.168964]  panic+0x118/0x2f4", 6, None, " panic+0x118/0x2f4"),
    (b"<3>[    1.000000] an error at level 3", 3, None, "an error at level 3"),
    (b"[    1.000000] <4>a warning at level 4", 4, None, "a warning at level 4"),
    (b"<0>[    1.000000] Kernel panic - not syncing: x", 0, "kernel panic", None),
    (b"<6>[    1.000000] Kernel panic - not syncing: x", 0, "kernel panic", None),
    (b"<7>[    1.000000] WARNING: explicit level wins", 7, None, None),
    # Unikraft
    (b"[    0.100000] Info: [libukboot] <boot.c @  503> main returned 0", 6, None,
     "main returned 0"),
    (b"[    0.100000] Warn: [libukbus] <bus.c @   98> slow", 4, None, "slow"),
    (b"[    0.100000] ERR:  [liblwip] <init.c @ 1241> no netdev", 3, None, "no netdev"),
    (b"[    0.100000] CRIT: [libkvmplat] <traps.c @  87> Unhandled Trap 13"
     b" (general protection), error code=0x0", 2, "general protection fault", None),
    (b"[    0.100000] CRIT: [libkvmplat] <traps.c @  87> Unhandled Trap 6 (invalid opcode),"
     b" error code=0x0", 2, "unhandled trap", None),
    (b"[    0.100000] CRIT: Unikraft Crash - Calypso (0.17.0~eaf6fda1)", 2, "crash",
     "Unikraft Crash - Calypso (0.17.0~eaf6fda1)"),
    (b"[    0.100000] CRIT: [libkvmplat] <traps.c @  99> Crashing", 2, "crash", "Crashing"),
    (b"[    0.100000] CRIT: [appx] <main.c @   12> Assertion failure: p != NULL", 2,
     "assertion failed", "Assertion failure: p != NULL"),
    (b"[    0.100000] dbg:  [libukalloc] <alloc.c @   42> malloc 16", 7, None, "malloc 16"),
    (b"Info: [libukboot] <boot.c @  503> without timestamp", 6, None, "without timestamp"),
    (b"[    0.100000] Info: Unikraft halted", 6, None, "Unikraft halted"),
    (b"[    0.100000] CRIT:  rip: 0008:0000000000104c6a", 2, None,
     " rip: 0008:0000000000104c6a"),
    (b"[    0.100000] ERR:   indented", 3, None, " indented"),
    # rumprun
    (b"panic: kernel diagnostic assertion \"x\" failed: file \"a.c\", line 1", 0,
     "kernel panic", None),
    (b'PANIC: assert "current_lwp == NULL" FAILED', 0, "kernel panic", None),
    (b"rumprun: rump kernel halting...", 5, None, None),
    (b"halted", 5, None, None),
    (b"FATAL TRAP: page fault at 0x200e4c (0x0)", 2, "page fault", None),
    (b"FATAL TRAP: general protection at 0x1 (0x0)", 2, "general protection fault", None),
    (b"FATAL TRAP: divide-by-zero at 0x200e4c (0x0)", 2, "divide error", None),
    (b"FATAL TRAP: invalid opcode at 0x200e4c (0x0)", 2, "invalid opcode", None),
    (b"FATAL TRAP: something new at 0x200e4c (0x0)", 2, "fatal trap", None),
    (b"=== bootstrap failed", 2, "bootstrap failed", None),
    # OSv
    (b"page fault outside application, addr: 0x0000000000000000", 2, "page fault", None),
    (b"Aborted", 2, "abort", None),
    (b"Assertion failed: x (core/mmu.cc: f: 12)", 2, "assertion failed", None),
    # Nanos (the first three: a program's NULL write, as a real Nanos prints it)
    (b"*** signal 11 received by tid 2, errno 0, code 1", 2, "segmentation fault", None),
    (b"*** signal 8 received by tid 2, errno 0, code 1", 2, "fatal signal", None),
    (b"lastvector: 000000000000000e (Page fault)", 2, "page fault", None),
    (b"no fault handler", 2, None, None),
    (b" interrupt: 000000000000000e (Page fault)", 2, "page fault", None),
    (b" interrupt: 000000000000000d (General protection)", 2, "general protection fault",
     None),
    (b" interrupt: 0000000000000000 (Divide by zero)", 2, "unhandled trap", None),
    (b"Page fault", 2, "page fault", None),
    (b"frame trace:", 2, None, None),
    (b"kernel panic: out of memory", 0, "kernel panic", None),
    # Solo5
    (b"Solo5: ABORT: bindings/mem.c:10: out of memory", 2, "abort", None),
    (b"Solo5: Halted", 5, None, None),
    # The C guest library's fatal-signal handler
    (b"umon-crash: signal 11 code 1 addr 0x0 pc 0x401b9e sp 0x7ffd6c0f1bd8 fp 0x7ffd6c0f1be0"
     b" text 0x401a90 stack 0x401bc8 0x4018f4", 2, "segmentation fault", None),
    (b"umon-crash: signal 7 code 2 addr 0x7f0000 pc 0x401b9e stack", 2, "bus error", None),
    (b"umon-crash: signal 4 code 2 addr 0x401b9e pc 0x401b9e stack", 2,
     "illegal instruction", None),
    (b"umon-crash: signal 8 code 1 addr 0x401b9e pc 0x401b9e stack", 2,
     "floating point exception", None),
    (b"umon-crash: signal 6 code -6 addr 0x0 pc 0x4052d4 stack", 2, "abort", None),
    (b"umon-crash: signal 31 code 0 addr 0x0 pc 0x4052d4 stack", 2, "fatal signal", None),
    (b"umon-crash: signals are fine", 6, None, None),
    # Any guest
    (b"Segmentation fault (core dumped)", 2, "segmentation fault", None),
    (b"app: main.c:5: main: Assertion `n > 0' failed.", 2, "assertion failed", None),
    (b"abort() called from app", 2, "abort", None),
    (b"KVM: entry failed, triple fault", 2, "triple fault", None),
    (b"error: could not open /data", 3, None, "error: could not open /data"),
    (b"Warning: low memory", 4, None, None),
    (b"request failed: connection refused", 6, None, None),
    (b"aborting the upload", 6, None, None),
    (b"AssertionError: x", 6, None, None),
    (b"all 12 assertions failed to run", 6, None, None),
    (b"Hello from Unikraft!", 6, None, "Hello from Unikraft!"),
]  # fmt: skip


@pytest.mark.parametrize(("line", "severity", "crash", "message"), CASES)
def test_classification(line: bytes, severity: int, crash: str | None, message: str | None) -> None:
    record = one(line + b"\r\n")
    assert record.severity == Severity(severity)
    assert crash_reason(record) == crash
    assert record.kind is (Kind.CRASH if crash else Kind.LOG)
    if message is not None:
        assert record.message == message


def test_every_rule_is_exercised_by_the_table() -> None:
    messages = [one(line).message for line, *_ in CASES]
    for rule in RULES:
        assert any(rule.pattern.search(m) for m in messages), rule.pattern.pattern


def test_unikraft_fields() -> None:
    record = one(b"[    0.104746] Info: [libukboot] <boot.c @  123> text\r\n")
    assert record == Record(
        1, Severity.INFO, "text", Kind.LOG, 104_746_000, None, "boot.c", 123, "",
        ((LIB_FIELD, "libukboot"),),
    )  # fmt: skip
    record = one(b"[    0.100000] Warn: <main> {r:0x1,f:0x2} [appx] <a.c @ 7> hi\r\n")
    assert dict(record.fields) == {
        LIB_FIELD: "appx",
        THREAD_FIELD: "main",
        CALLER_FIELD: "r:0x1,f:0x2",
    }
    assert (record.severity, record.file, record.line, record.message) == (
        Severity.WARNING, "a.c", 7, "hi",
    )  # fmt: skip


def test_linux_caller_and_timestamp() -> None:
    record = one(b"[   12.345678][    T1] Run /init as init process\n")
    assert record.mono_ns == 12_345_678_000
    assert record.fields == ((CALLER_FIELD, "T1"),)
    assert record.message == "Run /init as init process"


def test_lines_with_nothing_but_a_prefix_are_skipped() -> None:
    data = b"[    1.000000]\r\n[    1.000000] \r\n<3>\nInfo: [libx] <a.c @  1>  \nx\n"
    records = decode_all(data)
    assert [(r.seq, r.message) for r in records] == [(1, "x")]


def test_record_for_a_clean_line() -> None:
    record = console_record_untrusted(7, "[    1.500000] Kernel panic - not syncing: x")
    assert record is not None
    assert (record.seq, record.mono_ns, record.kind) == (7, 1_500_000_000, Kind.CRASH)
    assert record.fields == ((CRASH_FIELD, "kernel panic"),)
    assert console_record_untrusted(1, "[    1.500000]  ") is None


def test_numbering_and_unended_last_line() -> None:
    decoder = ConsoleDecoder()
    decoder.receive_data(b"one\r\n\r\n\x1b[0m\r\ntwo\r\nthr")
    assert [(r.seq, r.message) for r in decoder.next_events()] == [(1, "one"), (2, "two")]
    decoder.receive_data(b"ee")
    assert decoder.next_events() == []
    assert [(r.seq, r.message) for r in decoder.end_of_stream()] == [(3, "three")]
    assert decoder.buffered == 0


def test_long_line_is_cut_not_buffered() -> None:
    decoder = ConsoleDecoder(max_line=100)
    decoder.receive_data(b"x" * 250 + b"\n")
    assert [len(r.message) for r in decoder.next_events()] == [100, 100, 50]
    decoder.receive_data(b"y" * 1000)
    decoder.next_events()
    assert decoder.buffered < 100


def test_max_line_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_line"):
        ConsoleDecoder(max_line=0)


# --- real guest samples ---------------------------------------------------------------


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_samples_come_out_clean(name: str) -> None:
    data = sample(name)
    records = decode_all(data)
    assert records
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    for record in records:
        assert not UNPRINTABLE.search(record.message), record
        assert record.message.strip()
    # The firmware's banner and iPXE's rewritten prompt, as a terminal showed them.
    messages = [r.message for r in records]
    assert messages[0] == "SeaBIOS (version 1.16.2-debian-1.16.2-1)"
    assert "Press Ctrl-B to configure iPXE (PCI 00:02.0)..." in messages


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_samples_fed_byte_by_byte(name: str) -> None:
    data = sample(name)
    decoder = ConsoleDecoder()
    records: list[Record] = []
    for i in range(len(data)):
        decoder.receive_data(data[i : i + 1])
        records += decoder.next_events()
    assert records + decoder.end_of_stream() == decode_all(data)


@pytest.mark.parametrize("name", ["unikraft-0.17-hello.log", "unikraft-0.17-lwip-net.log"])
def test_unikraft_samples(name: str) -> None:
    data = sample(name)
    records = decode_all(data)
    raw_info = re.findall(rb"Info: \[(\w+)\] <([\w.]+) @ +(\d+)> ([^\r\n]*)", data)
    parsed = [r for r in records if r.file]
    assert len(parsed) == len(raw_info) >= 20
    for record, (lib, file, line, text) in zip(parsed, raw_info, strict=True):
        assert record.severity is Severity.INFO
        assert record.fields == ((LIB_FIELD, lib.decode()),)
        assert (record.file, record.line, record.message) == (
            file.decode(),
            int(line),
            text.decode(),
        )
        assert record.mono_ns is not None
    # The first kernel line was glued to the BIOS banner.
    banner = next(i for i, r in enumerate(records) if r.message == "Booting from ROM..")
    first = records[banner + 1]
    assert (first.mono_ns, first.file, first.line) == (0, "console.c", 176)
    assert first.message == "Registered con0: COM1, flags: IO"
    assert records[-1].message == "Unikraft halted"
    assert records[-1].mono_ns is not None and records[-1].mono_ns > 100_000_000
    assert not any(crash_reason(r) for r in records)
    assert all(r.severity is Severity.INFO for r in records)


def test_unikraft_hello_application_output() -> None:
    messages = [r.message for r in decode_all(sample("unikraft-0.17-hello.log"))]
    assert "Hello from Unikraft!" in messages
    assert "                Calypso 0.17.0~eaf6fda1" in messages


def test_lwip_sample_application_lines() -> None:
    records = decode_all(sample("unikraft-0.17-lwip-net.log"))
    app = [r for r in records if r.message.startswith("uk-nettest: ")]
    assert [r.message for r in app][:2] == [
        "uk-nettest: start count=5 interval_ms=500 dst=10.88.0.1 udp=5514 tcp=2333",
        "uk-nettest: tcp connected to 10.88.0.1:2333",
    ]
    assert len(app) == 13
    assert app[-1].message == "uk-nettest: done"
    assert all((r.severity, r.fields, r.mono_ns) == (Severity.INFO, (), None) for r in app)
    # lwIP's line came after two NUL bytes.
    assert "1: Set IPv4 address 10.88.0.2 mask 255.255.255.0 gw 10.88.0.1" in [
        r.message for r in records
    ]


def test_linux_boot_sample() -> None:
    data = sample("linux-6.1-single-app-guest.log")
    records = decode_all(data)
    stamped = [r for r in records if r.mono_ns is not None]
    assert len(stamped) == len(re.findall(rb"\[ *\d+\.\d{6}\]", data)) > 300
    times = [r.mono_ns or 0 for r in stamped]
    assert times == sorted(times)
    assert stamped[0].message.startswith("Linux version 6.1.0-56-amd64")
    assert stamped[0].mono_ns == 0
    assert stamped[-1].message == "reboot: Power down"
    assert stamped[-1].mono_ns == 8_725_634_000
    assert "Probing EDD (edd=off to disable)... o" in [r.message for r in records]
    assert not any(crash_reason(r) for r in records)
    assert all(r.kind is Kind.LOG and r.severity is Severity.INFO for r in records)


def test_linux_panic_sample() -> None:
    records = decode_all(sample("linux-6.1-panic.log"))
    crashes = [r for r in records if crash_reason(r) is not None]
    assert len(crashes) == 1
    [panic] = crashes
    assert (panic.severity, panic.kind, crash_reason(panic)) == (
        Severity.EMERG, Kind.CRASH, "kernel panic",
    )  # fmt: skip
    assert panic.mono_ns == 2_166_086_000
    assert panic.message.startswith("Kernel panic - not syncing: VFS: Unable to mount root fs")
    before = records[: records.index(panic)]
    assert before and all(r.kind is Kind.LOG and r.severity is Severity.INFO for r in before)
    after = records[records.index(panic) + 1 :]
    assert [r.message for r in after if r.severity < Severity.INFO] == ["Call Trace:"]


# --- properties -----------------------------------------------------------------------

# Pieces that reach the tricky paths: escapes, CR rewrites, glued timestamps, levels.
TOKENS = st.sampled_from(
    [
        b"\n", b"\r", b"\r\n", b"\x00", b"\t", b" ", b"\x1b", b"\x1b[", b"\x1b[0m", b"\x1b]",
        b"\x07", b"\x1b\\", b"\x1bc", b"[    0.104746] ", b"[ 12.000001]", b"[    T1] ",
        b"<3>", b"Info: ", b"ERR:  ", b"[libukboot] ", b"<boot.c @  123> ", b"text",
        b"Kernel panic - not syncing: x", b"panic: ", b"\xc3\xa9", b"\xc3", b"\xc2\x9b", b"\xff",
    ]
)  # fmt: skip
CONSOLE_BYTES = st.lists(TOKENS | st.binary(max_size=8), max_size=60).map(b"".join)
ANY_BYTES = st.one_of(st.binary(max_size=400), CONSOLE_BYTES)


@given(ANY_BYTES, st.integers(1, 64))
@settings(max_examples=300)
def test_any_bytes_give_clean_records(data: bytes, max_line: int) -> None:
    records = decode_all(data, max_line=max_line)
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    for record in records:
        assert not UNPRINTABLE.search(record.message)
        assert record.message.strip()
        assert record.mono_ns is None or 0 <= record.mono_ns < 2**63
        assert (record.kind is Kind.CRASH) == (crash_reason(record) is not None)


@given(ANY_BYTES, st.lists(st.integers(0, 400), max_size=12), st.sampled_from([7, 16, 65536]))
@settings(max_examples=300)
def test_chunking_does_not_change_records(data: bytes, cuts: list[int], max_line: int) -> None:
    cuts = [min(cut, len(data)) for cut in cuts]
    whole = decode_all(data, max_line=max_line)
    assert decode_chunked(data, cuts, max_line=max_line) == whole


@given(st.lists(ANY_BYTES, max_size=10), st.integers(1, 64))
def test_buffer_stays_under_max_line(chunks: list[bytes], max_line: int) -> None:
    decoder = ConsoleDecoder(max_line=max_line)
    for chunk in chunks:
        decoder.receive_data(chunk)
        decoder.next_events()
        assert decoder.buffered < max_line
    decoder.end_of_stream()
    assert decoder.buffered == 0


@pytest.mark.parametrize(
    ("line", "end", "halt"),
    [
        ('=== main() of "app" returned 3 ===', 'main() of "app" returned 3', False),
        ("=== _exit(0) called ===", "_exit(0) called", False),
        ("=== ERROR: _exit(2) called ===", "ERROR: _exit(2) called", False),
        ("halted", None, True),
        ("Unikraft halted", None, False),
        ("FATAL TRAP: page fault at 0x200e4c (0x0)", None, True),
        ("FATAL TRAP: page fault at 0x200e4c (0x0) and more", None, False),
        ('app says === main() of "app" returned 3 ===', None, False),
        ('=== main() of "a" returned 99999999999 ===', None, False),
    ],
)
def test_how_a_guest_says_it_ended(line: str, end: str | None, halt: bool) -> None:
    record = console_record_untrusted(1, line)
    assert record is not None
    assert guest_end(record) == end
    assert halted(record) is halt
