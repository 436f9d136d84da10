"""Run INSIDE gdb (``gdb -batch -nx ... -x gdb_capture.py``): a stopped guest's crash state.

How this works: gdb is attached to a stopped QEMU through its gdbstub (the caller says
``target remote``) with the guest's symbols loaded. Three cases:

* **gdb unwinds through the trap** (Unikraft: its ``asm_trap_*`` entries carry CFI for
  a signal frame): the frame above the first SIGTRAMP frame is the faulting one, and
  its registers, which gdb recovers from the trap's saved state, are the crash's.
* **rumprun's fatal trap**: ``x86_trap_N`` called ``cpu_fattrap``, which printed
  ``FATAL TRAP`` and halted. The CPU's trap frame (RIP, CS, RFLAGS, RSP, SS) lies
  right above a return address into ``x86_trap_*``, which has no CFI. It is found by
  looking up the stack for that return address, and the stopped CPU's RIP and RSP are
  set to the faulting ones so that gdb's own unwinder (DWARF CFI, inlined frames)
  walks the faulting thread. rbx, rbp and r12-r15 still hold the faulting function's
  values (the handler's C code saved and restored them); the others are lost.
  The moved registers are put back afterwards: gdb's detach lets a VM that QMP had
  stopped run again. The halted CPU stays halted even so (measured: one FATAL TRAP
  with or without putting them back), but whoever looks next sees the real state.
* **registers given by the caller** (``UMON_CRASH_REGISTERS``, a JSON object of
  register names to integers): Nanos prints the faulting thread's registers on its
  console and then powers off; with QEMU's ``-no-shutdown`` the VM, and the program's
  memory (one address space), is still there. The CPU's registers are set to the
  given ones and gdb unwinds from them (and they are put back, as above).
* otherwise, the registers and frames where the CPU stopped.

It prints one line ``UMON-CRASH-STATE {json}`` on stdout. It uses only gdb's Python
API and the standard library, since it runs in gdb's own interpreter.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

import gdb  # type: ignore[import-untyped, import-not-found, unused-ignore]

MARK = "UMON-CRASH-STATE "
REGS = (
    *("rip", "rsp", "rbp", "rax", "rbx", "rcx", "rdx", "rsi", "rdi"),
    *("r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "eflags", "cs", "ss"),
)
SYSTEM_REGS = ("cr2", "fs_base")
CALLEE_SAVED = ("rbx", "rbp", "r12", "r13", "r14", "r15")
RUMPRUN_FATTRAP = "cpu_fattrap"
TRAP_SCAN_WORDS = 16  # how far above the stopped RSP a trap frame may be
MAX_FRAMES = 64


def _u64(value: Any) -> int:
    return int(value) & 0xFFFFFFFFFFFFFFFF


def _registers(frame: Any, names: tuple[str, ...]) -> dict[str, int]:
    out: dict[str, int] = {}
    for name in names:
        with contextlib.suppress(gdb.error, ValueError):
            out[name] = _u64(frame.read_register(name))
    return out


def _read_u64(address: int) -> int:
    data = gdb.selected_inferior().read_memory(address, 8)
    return int.from_bytes(bytes(data), "little")


def _function_at(address: int) -> str | None:
    if address == 0:
        return None
    block = None
    with contextlib.suppress(RuntimeError, gdb.error):
        block = gdb.block_for_pc(address)
    if block is not None and block.function is not None:
        return str(block.function.name)
    text = gdb.execute(f"info symbol {address}", to_string=True)
    return None if not text or text.startswith("No symbol") else text.split()[0]


def rumprun_trap() -> dict[str, Any] | None:
    """The trap frame when the CPU is parked in rumprun's cpu_fattrap, else None."""
    frame = gdb.newest_frame()
    function = frame.function()
    if function is None or function.name != RUMPRUN_FATTRAP:
        return None
    rsp = _u64(frame.read_register("rsp"))
    cs = _u64(frame.read_register("cs"))
    for slot in range(TRAP_SCAN_WORDS):
        name = _function_at(_read_u64(rsp + 8 * slot))
        if name is None or not name.startswith("x86_trap_"):
            continue
        base = rsp + 8 * (slot + 1)
        rip, trap_cs, rflags, trap_rsp, ss = (_read_u64(base + 8 * i) for i in range(5))
        if trap_cs != cs:
            return None
        return {
            "handler": name,
            "vector": int(name.rsplit("_", 1)[1]),
            "rip": rip,
            "cs": trap_cs,
            "eflags": rflags,
            "rsp": trap_rsp,
            "ss": ss,
        }
    return None


def frames() -> list[dict[str, Any]]:
    """Every frame from the newest out, with gdb's function, file and line."""
    out: list[dict[str, Any]] = []
    frame = gdb.newest_frame()
    while frame is not None and len(out) < MAX_FRAMES:
        entry: dict[str, Any] = {"pc": _u64(frame.pc()), "function": frame.name()}
        sal = frame.find_sal()
        if sal.symtab is not None:
            entry["file"] = sal.symtab.fullname()
            entry["line"] = sal.line
        if frame.type() == gdb.INLINE_FRAME:
            entry["inlined"] = True
        elif frame.type() == gdb.SIGTRAMP_FRAME:
            entry["trap"] = True
        out.append(entry)
        try:
            frame = frame.older()
        except gdb.error:
            break
    return out


def faulting_frame() -> Any:
    """The frame above the first one gdb took for a trap's (signal) frame, or None."""
    frame = gdb.newest_frame()
    while frame is not None:
        if frame.type() == gdb.SIGTRAMP_FRAME:
            return frame.older()
        try:
            frame = frame.older()
        except gdb.error:
            return None
    return None


def _moved(registers: dict[str, int]) -> dict[str, int]:
    """Set the stopped CPU's ``registers``; returns their former values."""
    frame = gdb.newest_frame()
    before = {name: _u64(frame.read_register(name)) for name in registers}
    for name, value in registers.items():
        gdb.execute(f"set ${name} = {int(value)}")
    return before


def _put_back(before: dict[str, int]) -> None:
    for name, value in before.items():
        with contextlib.suppress(gdb.error):
            gdb.execute(f"set ${name} = {value}")


def capture() -> dict[str, Any]:
    gdb.execute("set backtrace past-main on")
    gdb.execute(f"set backtrace limit {MAX_FRAMES}")
    newest = gdb.newest_frame()
    state: dict[str, Any] = {"stopped_at": _registers(newest, REGS + SYSTEM_REGS)}
    given = json.loads(os.environ.get("UMON_CRASH_REGISTERS") or "{}")
    if given:
        wanted = {k: int(v) for k, v in given.items() if k in REGS and k not in ("cs", "ss")}
        before = _moved(wanted)
        try:
            state.update(registers=_registers(gdb.newest_frame(), REGS), frames=frames())
        finally:
            _put_back(before)
        return state
    trap = rumprun_trap()
    if trap is not None:
        before = _moved({"rip": trap["rip"], "rsp": trap["rsp"]})
        try:
            registers = {k: v for k, v in state["stopped_at"].items() if k in CALLEE_SAVED}
            registers.update({k: trap[k] for k in ("rip", "rsp", "eflags", "cs", "ss")})
            state.update(trap=trap, registers=registers, frames=frames())
            state["clobbered"] = [r for r in REGS if r not in registers]
        finally:
            _put_back(before)
        return state
    state["frames"] = frames()
    faulting = faulting_frame()
    if faulting is None:
        state["registers"] = state["stopped_at"]
        return state
    state["registers"] = _registers(faulting, REGS)
    handler = next((f["function"] for f in state["frames"] if f.get("trap")), None)
    state["trap"] = {"handler": handler}
    return state


print(MARK + json.dumps(capture()))
