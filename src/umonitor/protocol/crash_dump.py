"""The crash dumps unikernels print on their console: registers, fault, frame addresses.

How this works: ``crash_dump_untrusted`` reads the messages of console records (as
``console_lines.ConsoleDecoder`` cleaned them: timestamps and Unikraft headers gone,
leading white space kept) in order, and returns the first crash dump it finds, or
None. It knows:

* **Unikraft** (ukdebug's trace.c): ``RIP: … CS: …``, ``RSP: … SS: … EFLAGS: …``,
  then ``RAX: … RBX: … RCX: …`` and so on, each register 16 hex digits; then one
  ``base is 0x11e90 caller is 0x115e33`` per frame of its frame-pointer walk, ended by
  ``caller is 0``.
* **rumprun**: ``FATAL TRAP: page fault at 0x110cd2 (0x0)``: the faulting RIP and CR2.
* **Nanos**: ``*** signal 11 received by tid 2, errno 0, code 1``, ``fault address
  0x0``, the thread context (``lastvector: 000000000000000e (Page fault)``, ``error
  code: …``, ``   rip: …`` one register a line), and ``stack trace:`` followed by
  ``ADDRESS:   WORD`` lines (words from RSP up).
* **the C guest library** (docs/debugging.md): ``umon-crash: signal 11 code 1 addr 0x0
  pc 0x… sp 0x… fp 0x… text 0x… stack 0x… 0x…``.

Everything here comes from the guest: no input makes it raise, every number is bounded
to 64 bits and every list to ``MAX_FRAMES`` entries.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

MAX_FRAMES = 64
MAX_LINES = 400  # a dump's lines after its first; more is not the same dump
_HEX = r"(?:0x)?([0-9a-fA-F]{1,16})"

_UK_REG = re.compile(r"\b(R[A-Z0-9]{1,2}|CS|SS|EFLAGS): ([0-9a-fA-F]{4,16})\b")
_UK_FIRST = re.compile(r"^RIP: [0-9a-fA-F]{16} CS: [0-9a-fA-F]{1,16}$")
_UK_FRAME = re.compile(rf"^base is {_HEX} caller is {_HEX}$")
_RUMPRUN = re.compile(rf"^FATAL TRAP: ([a-z -]{{1,40}}) at {_HEX} \({_HEX}\)$")
_NANOS_SIGNAL = re.compile(r"^\*\*\* signal ([0-9]{1,3}) received by tid [0-9]{1,10}")
_NANOS_FAULT = re.compile(rf"^\s*fault address {_HEX}$")
_NANOS_REG = re.compile(r"^\s*([a-z][a-z0-9 ]{0,11}): ([0-9a-f]{16})(?: \((.{1,40})\))?$")
_NANOS_STACK = re.compile(r"^([0-9a-f]{16}):\s+([0-9a-f]{16})$")
_UMON = re.compile(r"^umon-crash: (.{1,4000})$")

# Register names as the report writes them (lower case, eflags), from each dump's.
_NANOS_NAMES = {
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "rip",
    "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rflags", "cs", "ss",
    "fsbase", "gsbase",
}  # fmt: skip
_RENAME = {"rflags": "eflags", "fsbase": "fs_base", "gsbase": "gs_base"}

# What the C library's fatal signals (Linux's numbers) are called in a crash's reason,
# as the console rules call them.
SIGNAL_REASONS = {
    11: "segmentation fault",
    7: "bus error",
    4: "illegal instruction",
    8: "floating point exception",
    6: "abort",
}


@dataclass(frozen=True, slots=True)
class CrashDump:
    """What a console crash dump says.

    ``frames`` are return addresses, innermost first, not counting ``pc``;
    ``stack`` is raw words from the stack pointer up (Nanos), for an unwinder.
    """

    system: str  # "unikraft", "rumprun", "nanos" or "library"
    pc: int | None = None
    registers: tuple[tuple[str, int], ...] = ()
    fault_address: int | None = None
    error_code: int | None = None
    trap: str | None = None  # "page fault", as the dump names it
    signal: int | None = None
    frames: tuple[int, ...] = ()
    stack: tuple[int, ...] = ()
    text: int | None = None  # the library's runtime address of umon_logx (load bias)


def _int(text: str) -> int:
    return int(text, 16) & 0xFFFFFFFFFFFFFFFF


def crash_dump_untrusted(messages: Iterable[str]) -> CrashDump | None:
    """The first crash dump among console messages, or None; never raises."""
    lines = list(messages)
    for n, line in enumerate(lines):
        if _UK_FIRST.match(line):
            return _unikraft(lines[n : n + MAX_LINES])
        if found := _RUMPRUN.match(line):
            trap, pc, cr2 = found.groups()
            return CrashDump("rumprun", _int(pc), (("rip", _int(pc)),), _int(cr2), None, trap)
        if _NANOS_SIGNAL.match(line):
            return _nanos(lines[n : n + MAX_LINES])
        if found := _UMON.match(line):
            dump = _library(found.group(1))
            if dump is not None:
                return dump
    return None


def _unikraft(lines: list[str]) -> CrashDump:
    registers: dict[str, int] = {}
    frames: list[int] = []
    for line in lines:
        if found := _UK_FRAME.match(line):
            caller = _int(found.group(2))
            if caller == 0:
                break
            if len(frames) < MAX_FRAMES:
                frames.append(caller)
            continue
        if frames or line in ("Crashing", "Unikraft halted"):
            break
        for name, value in _UK_REG.findall(line):
            name = re.sub(r"^r0([0-9])$", r"r\1", name.lower())  # Unikraft's R08, R09
            registers.setdefault(name, _int(value))
    pc = registers.get("rip")
    return CrashDump("unikraft", pc, tuple(registers.items()), frames=tuple(frames))


def _nanos(lines: list[str]) -> CrashDump:
    signal = fault = error = trap = None
    registers: dict[str, int] = {}
    stack: list[int] = []
    if found := _NANOS_SIGNAL.match(lines[0]):
        signal = int(found.group(1))
    in_stack = False
    for line in lines[1:]:
        if _NANOS_SIGNAL.match(line):
            break
        if line == "stack trace:":
            in_stack = True
            continue
        if in_stack:
            if found := _NANOS_STACK.match(line):
                if len(stack) < MAX_FRAMES:
                    stack.append(_int(found.group(2)))
                continue
            if stack:
                break
        if found := _NANOS_FAULT.match(line):
            fault = _int(found.group(1))
        elif found := _NANOS_REG.match(line):
            name, value, note = found.group(1).strip(), _int(found.group(2)), found.group(3)
            if name in _NANOS_NAMES:
                registers.setdefault(_RENAME.get(name, name), value)
            elif name == "error code":
                error = value
            elif name == "lastvector" and note:
                trap = note.lower()
    return CrashDump(
        "nanos",
        registers.get("rip"),
        tuple(registers.items()),
        fault,
        error,
        trap,
        signal,
        stack=tuple(stack),
    )


def _library(text: str) -> CrashDump | None:
    words = text.split()
    values: dict[str, int] = {}
    frames: list[int] = []
    n = 0
    while n + 1 < len(words):
        key, value = words[n], words[n + 1]
        if key == "stack":
            for word in words[n + 1 :][:MAX_FRAMES]:
                if not re.fullmatch(_HEX, word):
                    break
                frames.append(_int(word.removeprefix("0x")))
            break
        if key in ("signal", "code") and value.isdigit() and len(value) <= 4:
            values[key] = int(value)
        elif key in ("addr", "pc", "sp", "fp", "text") and (found := re.fullmatch(_HEX, value)):
            values[key] = _int(found.group(1))
        n += 2
    if "signal" not in values or "pc" not in values:
        return None
    registers = tuple(
        (name, values[key]) for key, name in (("pc", "rip"), ("sp", "rsp"), ("fp", "rbp"))
        if key in values
    )  # fmt: skip
    return CrashDump(
        "library",
        values["pc"],
        registers,
        values.get("addr"),
        signal=values["signal"],
        frames=tuple(frames),
        text=values.get("text"),
    )
