"""Console crash dumps: the real guests' consoles, the library's line, arbitrary text."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from umonitor.protocol.console_lines import ConsoleDecoder
from umonitor.protocol.crash_dump import MAX_FRAMES, CrashDump, crash_dump_untrusted

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "crash"


def messages(name: str) -> list[str]:
    decoder = ConsoleDecoder()
    decoder.receive_data((VECTORS / name).read_bytes())
    return [r.message for r in decoder.next_events() + decoder.end_of_stream()]


def test_unikraft() -> None:
    dump = crash_dump_untrusted(messages("unikraft-0.17-crash.console"))
    assert dump is not None and dump.system == "unikraft"
    regs = dict(dump.registers)
    assert dump.pc == regs["rip"] == 0x115E14
    assert (regs["rsp"], regs["rbp"], regs["rdi"], regs["eflags"]) == (0x11E80, 0x11E90, 42, 0x202)
    assert {"rax", "r8", "r9", "r15", "cs", "ss"} <= set(regs)
    assert dump.frames == (0x115E33, 0x15D92B, 0x12BDE1, 0x12BFB7, 0x1137C9)


def test_rumprun() -> None:
    dump = crash_dump_untrusted(messages("rumprun-crash.console"))
    assert dump == CrashDump(
        "rumprun", 0x110CD2, (("rip", 0x110CD2),), fault_address=0, trap="page fault"
    )


def test_nanos() -> None:
    dump = crash_dump_untrusted(messages("nanos-crash.console"))
    assert dump is not None and dump.system == "nanos"
    regs = dict(dump.registers)
    assert (dump.pc, regs["rsp"], regs["rdi"], regs["fs_base"]) == (
        0x401B9E, 0xFFF12BD8, 42, 0x8A7380
    )  # fmt: skip
    assert (dump.signal, dump.fault_address, dump.error_code, dump.trap) == (11, 0, 6, "page fault")
    assert len(dump.stack) == 32 and dump.stack[:3] == (0x401BC8, 0x28CD2658, 0x4018F4)


LIBRARY = (
    "umon-crash: signal 11 code 1 addr 0x0 pc 0x401b9e sp 0x7ffd6c0f1bd8 fp 0x7ffd6c0f1be0 "
    "text 0x401a90 stack 0x401bc8 0x4018f4 0x4052d4"
)


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            [LIBRARY],
            CrashDump("library", 0x401B9E,
                      (("rip", 0x401B9E), ("rsp", 0x7FFD6C0F1BD8), ("rbp", 0x7FFD6C0F1BE0)),
                      0, signal=11, frames=(0x401BC8, 0x4018F4, 0x4052D4), text=0x401A90),
        ),
        (["umon-crash: signal 6 pc 0x10 stack"], CrashDump("library", 0x10, (("rip", 0x10),),
                                                            signal=6)),
        (["umon-crash: pc 0x10"], None),  # no signal: not a crash line of ours
        (["umon-crash: signal 11 pc zz"], None),
        (["FATAL TRAP: general protection at 0x1234 (0xdead)"],
         CrashDump("rumprun", 0x1234, (("rip", 0x1234),), 0xDEAD, trap="general protection")),
        (["hello", "base is 0x1 caller is 0x2"], None),  # frames without registers
        ([], None),
    ],
)  # fmt: skip
def test_lines(lines: list[str], expected: CrashDump | None) -> None:
    assert crash_dump_untrusted(lines) == expected


def test_the_first_dump_wins_and_frames_are_bounded() -> None:
    head = ["RIP: 0000000000000001 CS: 0008"]
    frames = [f"base is 0x{n:x} caller is 0x{n + 1:x}" for n in range(1, 200)]
    second = ["RIP: 0000000000000002 CS: 0008"]
    dump = crash_dump_untrusted(head + frames + second)
    assert dump is not None and dump.pc == 1 and len(dump.frames) == MAX_FRAMES


@given(st.lists(st.text(max_size=200), max_size=50))
def test_any_text_parses_or_is_none(lines: list[str]) -> None:
    dump = crash_dump_untrusted(lines)
    assert dump is None or isinstance(dump, CrashDump)


@given(st.lists(st.sampled_from([
    "RIP: 0000000000115e14 CS: 0008", "RAX: ffffffffffffffffff RBX: 1", "base is 0x caller is 0x1",
    "base is 0xffffffffffffffffff caller is 0x1", "*** signal 999 received by tid 1",
    "   rip: 0000000000401b9e", "stack trace:", "0000000000000000:   0000000000000001",
    "lastvector: 000000000000000e (Page fault)", "FATAL TRAP: x at 0x1 (0x2)", LIBRARY,
    "umon-crash: signal 1 pc 0x1 stack 0x1 nothex", "Crashing",
]), max_size=40))  # fmt: skip
def test_dump_shaped_lines_never_raise(lines: list[str]) -> None:
    dump = crash_dump_untrusted(lines)
    if dump is not None:
        assert all(0 <= v < 1 << 64 for _, v in dump.registers)
        assert len(dump.frames) <= MAX_FRAMES and len(dump.stack) <= MAX_FRAMES
