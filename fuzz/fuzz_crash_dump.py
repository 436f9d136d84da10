"""Fuzz target: a console's crash dump (docs/debugging.md), ``crash_dump_untrusted``.

Input: one configuration byte (``max_line`` of the console decoder), then console bytes.

The bytes go through ``ConsoleDecoder`` (as the supervisor reads a console), whole and in
random chunks, and the records' messages into ``crash_dump_untrusted``. Checks: nothing
raises; the chunking changes no dump; a dump's system is one of the four, every number
fits 64 bits (a signal four digits), frames and stack words are at most ``MAX_FRAMES``,
registers named once each; the report made from it without symbols
(``crash_state.from_console``) serializes as JSON and gives the crash record's one-line
fields. Each message read as a record's ``umon.stack`` and ``umon.text`` fields
(``record_stack.stack_untrusted``) gives at most 64 addresses of 64 bits.
"""

from __future__ import annotations

import json

import atheris
import fuzzlib

with atheris.instrument_imports(include=["umonitor"]):
    from umonitor.debug.crash_state import crash_summary, from_console
    from umonitor.debug.record_stack import MAX_FRAMES as STACK_MAX
    from umonitor.debug.record_stack import stack_untrusted
    from umonitor.protocol.console_lines import ConsoleDecoder
    from umonitor.protocol.crash_dump import MAX_FRAMES, CrashDump, crash_dump_untrusted

MAX_LINES = (64, 1500, 65536)
SYSTEMS = {"unikraft", "rumprun", "nanos", "library"}
U64 = 1 << 64


def dump_of(chunks: list[bytes], max_line: int) -> tuple[CrashDump | None, list[str]]:
    decoder = ConsoleDecoder(max_line=max_line)
    records = []
    for chunk in chunks:
        decoder.receive_data(chunk)
        records += decoder.next_events()
    records += decoder.end_of_stream()
    messages = [r.message for r in records]
    return crash_dump_untrusted(messages), messages


def check_dump(dump: CrashDump) -> None:
    fuzzlib.check(dump.system in SYSTEMS, f"system {dump.system!r}")
    numbers = [dump.pc, dump.fault_address, dump.error_code, dump.text]
    numbers += [v for _, v in dump.registers] + list(dump.frames) + list(dump.stack)
    for n in numbers:
        fuzzlib.check(n is None or 0 <= n < U64, f"{n} out of 64 bits")
    fuzzlib.check(dump.signal is None or 0 <= dump.signal < 10000, f"signal {dump.signal}")
    fuzzlib.check(len(dump.frames) <= MAX_FRAMES, f"{len(dump.frames)} frames")
    fuzzlib.check(len(dump.stack) <= MAX_FRAMES, f"{len(dump.stack)} stack words")
    names = [name for name, _ in dump.registers]
    fuzzlib.check(len(names) == len(set(names)), f"registers named twice: {names}")
    report = from_console(dump, None).to_report()
    json.dumps(report)
    for key, value in crash_summary(report):
        fuzzlib.check("\n" not in value, f"{key} is more than one line")


def test_one_input(data: bytes) -> None:
    if not data:
        return
    max_line = MAX_LINES[data[0] % len(MAX_LINES)]
    stream = data[1:]
    dump, messages = dump_of([stream], max_line)
    chunked, _ = dump_of(fuzzlib.random_chunks(stream, fuzzlib.rng_for(data)), max_line)
    fuzzlib.check(chunked == dump, f"chunking changed the dump: {dump} / {chunked}")
    if dump is not None:
        check_dump(dump)
    for message in messages:
        addresses, text = stack_untrusted((("umon.stack", message), ("umon.text", message)))
        fuzzlib.check(len(addresses) <= STACK_MAX, f"{len(addresses)} stack addresses")
        fuzzlib.check(all(0 <= a < U64 for a in addresses), "a stack address over 64 bits")
        fuzzlib.check(text is None or 0 <= text < U64, "umon.text over 64 bits")


def seeds() -> list[bytes]:
    unikraft = (
        b"[    0.529000] CRIT: [libkvmplat] <trace.c @  102> RIP: 0000000000115e14 CS: 0008\n"
        b"[    0.529000] CRIT: [libkvmplat] <trace.c @  103> RSP: 0000000000011e80 SS: 0010"
        b" EFLAGS: 00010246\n"
        b"[    0.529000] CRIT: [libkvmplat] <trace.c @  104> RAX: 0000000000000000"
        b" RBX: 0000000000000000 RCX: 0000000000000001\n"
        b"[    0.529000] CRIT: [libkvmplat] <trace.c @  130> base is 0x11e90 caller is 0x115e33\n"
        b"[    0.529000] CRIT: [libkvmplat] <trace.c @  130> base is 0x11ea0 caller is 0x15d92b\n"
        b"[    0.529000] CRIT: [libkvmplat] <trace.c @  130> base is 0x0 caller is 0\n"
        b"[    0.530000] CRIT: [libkvmplat] <traps.c @   99> Crashing\n"
    )
    rumprun = b"FATAL TRAP: page fault at 0x110cd2 (0x0)\r\n"
    nanos = (
        b"*** signal 11 received by tid 2, errno 0, code 1\n"
        b"   fault address 0x0\n"
        b"lastvector: 000000000000000e (Page fault)\n"
        b"error code: 0000000000000006\n"
        b"   rip: 0000000000401b9e\n"
        b"   rsp: 00000000ffe10bd8\n"
        b"stack trace:\n"
        b"00000000ffe10bd8:   0000000000401bc8\n"
        b"00000000ffe10be0:   00000000004018f4\n"
        b"core dump\n"
    )
    library = (
        b"crash_app: crashing now\r\n"
        b"umon-crash: signal 11 code 1 addr 0x0 pc 0x401b9e sp 0x7ffd6c0f1bd8"
        b" fp 0x7ffd6c0f1be0 text 0x401a90 stack 0x401bc8 0x4018f4 0x4052d4\r\n"
        b"umon-init: app killed by signal 11 (Segmentation fault)\r\n"
    )
    odd = (
        b"umon-crash: signal 99999 code -6 addr 0x pc zz stack 0x1 0x2\n"
        b"umon-crash: signal 6 pc 0xffffffffffffffff stack " + b"0x1 " * 70 + b"\n"
    )
    dumps = [unikraft, rumprun, nanos, library, odd]
    return [bytes([n % len(MAX_LINES)]) + d for n, d in enumerate(dumps)] + [
        b"\x01" + b"".join(dumps)
    ]


if __name__ == "__main__":
    fuzzlib.main(test_one_input, seeds)
