"""A crashed guest's state for its crash report: fault, registers, symbolized backtrace.

How this works: two sources, one result (``CrashState``, whose ``to_report`` gives the
keys a ``crashes/crash-*.json`` gains, docs/debugging.md "The report").

* **The gdbstub** (``capture``): gdb in batch mode, attached to the stopped VM with the
  instance's symbols, runs ``gdb_capture.py`` and prints one JSON line;
  ``from_gdb_untrusted`` turns it into frames (the kernel's own crash path, up to the
  trap, kept apart as handler frames) and registers. gdb symbolizes.
* **The console** (``from_console``): a ``protocol.crash_dump.CrashDump`` (registers,
  the faulting pc, frame addresses) symbolized here with ``symbolize.Symbolizer``. The
  C library's ``umon-crash:`` line is one (``backtrace_source: guest-library``), and
  the only source for a Linux guest, whose gdbstub shows the kernel, not the program.

``capture_crash`` is what the supervisor runs on a crash (``CaptureRequest`` in, the
report's keys out): the gdbstub first, when there are symbols, gdb and a VM still held
by ``-no-shutdown``; the console dump otherwise, or when gdb gives nothing; every
reason a better source was not used goes into ``capture_errors``. The console's fault
address and error code are kept over gdb's CR2 (Nanos' CR2 at power-off is the
kernel's own).

The gdb line comes from a process reading guest memory: it is parsed as untrusted,
and anything malformed becomes a capture error, not an exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from umonitor.debug.gdb import GDB, Target, attach_argv
from umonitor.debug.symbolize import Frame, Symbolizer, symbolizer_for
from umonitor.debug.symbols_file import load_bias
from umonitor.protocol.crash_dump import SIGNAL_REASONS, CrashDump, crash_dump_untrusted

CAPTURE_SCRIPT = Path(__file__).with_name("gdb_capture.py")
CAPTURE_TIMEOUT = 10.0
MARK = "UMON-CRASH-STATE "
MAX_FRAMES = 64
OUTPUT_MAX = 1 << 20


@dataclass(frozen=True, slots=True)
class CrashState:
    """What the report says about the crash itself."""

    source: str  # "gdbstub", "console" or "guest-library"
    pc: int | None = None
    registers: tuple[tuple[str, int], ...] = ()
    registers_lost: tuple[str, ...] = ()
    backtrace: tuple[Frame, ...] = ()
    handler_frames: tuple[Frame, ...] = ()
    fault: tuple[tuple[str, Any], ...] = ()  # reason, vector, handler, address, error_code
    errors: tuple[str, ...] = field(default=())

    def to_report(self) -> dict[str, Any]:
        """The crash report's keys: addresses as ``0x`` strings."""
        fault: dict[str, Any] = {k: _hex_if(k, v) for k, v in self.fault}
        if self.pc is not None:
            fault["pc"] = f"{self.pc:#x}"
        if self.backtrace and self.backtrace[0].address == self.pc:
            first = self.backtrace[0]
            fault.update(function=first.function, file=first.file, line=first.line)
        return {
            "fault": fault,
            "registers": {name: f"{value:#x}" for name, value in self.registers},
            "registers_lost": list(self.registers_lost),
            "backtrace": [f.to_json() for f in self.backtrace],
            "handler_frames": [f.to_json() for f in self.handler_frames],
            "backtrace_source": self.source,
            "capture_errors": list(self.errors),
        }


def _hex_if(key: str, value: Any) -> Any:
    return f"{value:#x}" if key in ("address", "error_code") and isinstance(value, int) else value


# -- from the gdbstub ------------------------------------------------------------------


def _u64(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 64:
        return value
    return None


def _text(value: object, limit: int = 4096) -> str | None:
    return value[:limit] if isinstance(value, str) else None


def _frame_untrusted(entry: object) -> tuple[Frame, bool] | None:
    if not isinstance(entry, dict):
        return None
    pc = _u64(entry.get("pc"))
    if pc is None:
        return None
    line = entry.get("line")
    frame = Frame(
        pc,
        _text(entry.get("function")),
        _text(entry.get("file")),
        line if isinstance(line, int) and 0 < line < 1 << 31 else None,
        entry.get("inlined") is True,
    )
    return frame, entry.get("trap") is True


def from_gdb_untrusted(output: str) -> CrashState:
    """The state in ``gdb_capture.py``'s output (its ``UMON-CRASH-STATE`` line)."""
    line = next((x for x in output.splitlines() if x.startswith(MARK)), None)
    if line is None:
        return CrashState("gdbstub", errors=("gdb printed no crash state",))
    try:
        state = json.loads(line[len(MARK) :])
    except ValueError:
        return CrashState("gdbstub", errors=("gdb printed a malformed crash state",))
    if not isinstance(state, dict):
        return CrashState("gdbstub", errors=("gdb printed a malformed crash state",))
    raw = state.get("registers")
    registers: list[tuple[str, int]] = []
    for name, value in raw.items() if isinstance(raw, dict) else ():
        number = _u64(value)
        if isinstance(name, str) and number is not None and len(registers) < 64:
            registers.append((name[:16], number))
    frames: list[tuple[Frame, bool]] = []
    entries = state.get("frames")
    for entry in entries[:MAX_FRAMES] if isinstance(entries, list) else ():
        parsed = _frame_untrusted(entry)
        if parsed is not None:
            frames.append(parsed)
    trap = state.get("trap") if isinstance(state.get("trap"), dict) else None
    pc = dict(registers).get("rip")
    # Frames up to and including the trap's entry are the kernel's crash path.
    cut = next((n + 1 for n, (_, is_trap) in enumerate(frames) if is_trap), None)
    if cut is None and pc is not None:  # rumprun: the frames start at the faulting pc
        cut = next((n for n, (f, _) in enumerate(frames) if f.address == pc), 0)
    handler = tuple(f for f, _ in frames[: cut or 0])
    backtrace = tuple(f for f, _ in frames[cut or 0 :] if f.address != 0)
    fault: list[tuple[str, Any]] = []
    if trap is not None:
        if isinstance(trap.get("handler"), str):
            fault.append(("handler", trap["handler"][:128]))
        if _u64(trap.get("vector")) is not None:
            fault.append(("vector", trap["vector"]))
    stopped = state.get("stopped_at")
    cr2 = _u64(stopped.get("cr2")) if isinstance(stopped, dict) else None
    if cr2 is not None:
        fault.append(("address", cr2))
    lost = state.get("clobbered")
    lost_names = tuple(x for x in lost if isinstance(x, str)) if isinstance(lost, list) else ()
    return CrashState(
        "gdbstub", pc, tuple(registers), lost_names[:32], backtrace, handler, tuple(fault)
    )


def gdb_command(symbols: Path, socket: Path, kernel: Path | None, *, gdb: str = GDB) -> list[str]:
    """gdb in batch mode with the symbols (and the kernel's code and CFI if the symbols
    lack them), attached to the gdbstub, running the capture script. No script beside a
    symbols file runs (the supervisor is root, the file is not necessarily root's)."""
    target = Target("", socket, symbols, kernel or symbols)
    return [*attach_argv(target, batch=True, gdb=gdb), "-x", str(CAPTURE_SCRIPT)]


async def capture(
    symbols: Path,
    socket: Path,
    kernel: Path | None = None,
    *,
    registers: dict[str, int] | None = None,
    timeout: float = CAPTURE_TIMEOUT,
    gdb: str = GDB,
) -> CrashState:
    """Run gdb against a stopped VM's gdbstub; errors become the state's ``errors``."""
    env = dict(os.environ, LC_ALL="C")
    if registers:
        env["UMON_CRASH_REGISTERS"] = json.dumps(registers)
    argv = gdb_command(symbols, socket, kernel, gdb=gdb)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
    except OSError as exc:
        return CrashState("gdbstub", errors=(f"cannot run {gdb}: {exc.strerror}",))
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return CrashState("gdbstub", errors=(f"gdb timed out after {timeout:g} s",))
    state = from_gdb_untrusted(out[:OUTPUT_MAX].decode("utf-8", "replace"))
    if state.errors:
        why = err.decode("utf-8", "replace").strip().splitlines()
        detail = why[-1] if why else f"exit status {proc.returncode}"
        state = CrashState("gdbstub", errors=(f"{state.errors[0]} ({detail[:300]})",))
    return state


# -- from the console ------------------------------------------------------------------


def from_console(dump: CrashDump, symbolizer: Symbolizer | None, bias: int = 0) -> CrashState:
    """A console crash dump, symbolized with the instance's symbols when there are some.

    ``bias``: how far the program was moved at load time (the C library's line says
    where it is, ``symbols_file.load_bias``); the frames keep the guest's addresses.
    """
    source = "guest-library" if dump.system == "library" else "console"
    addresses = [a for a in ([dump.pc] if dump.pc is not None else []) + list(dump.frames)]
    errors: list[str] = []
    if symbolizer is not None and addresses:
        try:
            moved = [(a - bias) & 0xFFFFFFFFFFFFFFFF for a in addresses]
            found = symbolizer.backtrace(moved, first_is_pc=dump.pc is not None)
            frames = tuple(
                dataclasses.replace(f, address=(f.address + bias) & 0xFFFFFFFFFFFFFFFF)
                for f in found
            )
        except Exception as exc:  # a symbolizer problem must not lose the report
            errors.append(f"symbolizing failed: {exc}")
            frames = tuple(Frame(a, None, None, None) for a in addresses)
    else:
        if symbolizer is None:
            errors.append("no symbols")
        frames = tuple(Frame(a, None, None, None) for a in addresses)
    fault: list[tuple[str, Any]] = []
    if dump.trap:
        fault.append(("reason", dump.trap))
    elif dump.system == "library" and dump.signal is not None:
        fault.append(("reason", SIGNAL_REASONS.get(dump.signal, f"signal {dump.signal}")))
    if dump.signal is not None:
        fault.append(("signal", dump.signal))
    if dump.fault_address is not None:
        fault.append(("address", dump.fault_address))
    if dump.error_code is not None:
        fault.append(("error_code", dump.error_code))
    return CrashState(source, dump.pc, dump.registers, (), frames, (), tuple(fault), tuple(errors))


# -- what the supervisor runs ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CaptureRequest:
    """One crashed instance, as the supervisor knows it when the guest has ended."""

    flavor: str
    kernel: Path  # gdb's code and CFI when the symbols lack them; Nanos: the program
    symbols: Path | None
    socket: Path | None  # the gdbstub of a VM still held; None when QEMU has ended
    console: tuple[str, ...]  # the console's last messages, crash dump included


def _sha256(path: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def _symbolize_console(dump: CrashDump, symbols: Path | None) -> CrashState:
    try:
        symbolizer = symbolizer_for(symbols) if symbols is not None else None
    except Exception as exc:  # an unreadable file: the addresses stay
        state = from_console(dump, None)
        return CrashState(state.source, state.pc, state.registers, (), state.backtrace, (),
                          state.fault, (f"symbols unusable: {exc}",))  # fmt: skip
    bias = load_bias(symbols, dump.text) if symbols is not None else 0
    return from_console(dump, symbolizer, bias)


async def capture_crash(
    request: CaptureRequest, *, timeout: float = CAPTURE_TIMEOUT, gdb: str = GDB
) -> dict[str, Any]:
    """The crash report's keys for ``request``; never raises for what it finds."""
    dump = crash_dump_untrusted(request.console)
    errors: list[str] = []
    state: CrashState | None = None
    if request.flavor == "linux":
        # The gdbstub shows the Linux kernel; the program that crashed is a process
        # already gone. The C library's umon-crash: line is the program's state.
        if dump is None or dump.system != "library":
            errors.append("no umon-crash: line from the program (a Linux guest's gdbstub"
                          " shows its kernel, not the program)")  # fmt: skip
    elif request.symbols is None:
        errors.append("no symbols")
    elif request.socket is None:
        errors.append("QEMU had ended: no gdbstub to read")
    elif shutil.which(gdb) is None:
        errors.append(f"no {gdb} (Debian: apt-get install gdb)")
    else:
        registers = None
        if request.flavor == "nanos" and dump is not None and dump.registers:
            # The power-off path is on the CPU; the faulting thread's context is here.
            registers = {k: v for k, v in dump.registers if k not in ("cs", "ss", "eflags")}
        got = await capture(
            request.symbols, request.socket, request.kernel,
            registers=registers, timeout=timeout, gdb=gdb,
        )  # fmt: skip
        if got.errors or not got.backtrace:
            errors.extend(got.errors or ("gdb found no frames",))
        else:
            state = got
    if state is None and dump is not None:
        state = await asyncio.to_thread(_symbolize_console, dump, request.symbols)
    if state is None:
        errors.append("no crash dump on the console")
        state = CrashState("console")
    elif dump is not None and state.source == "gdbstub":
        kept = [(k, v) for k, v in state.fault if k not in ("address", "error_code")]
        gdb_address = [(k, v) for k, v in state.fault if k == "address"]
        console = [
            (k, v)
            for k, v in (("address", dump.fault_address), ("error_code", dump.error_code))
            if v is not None
        ]
        reason = [("reason", dump.trap)] if dump.trap else []
        fault = (*reason, *kept, *(console or gdb_address))
        state = CrashState(state.source, state.pc, state.registers, state.registers_lost,
                           state.backtrace, state.handler_frames, fault, state.errors)  # fmt: skip
    report = state.to_report()
    report["capture_errors"] = list(dict.fromkeys([*errors, *state.errors]))
    symbols = None
    if request.symbols is not None:
        symbols = {"path": str(request.symbols),
                   "sha256": await asyncio.to_thread(_sha256, request.symbols)}  # fmt: skip
    report["symbols"] = symbols
    return report


def crash_summary(report: dict[str, Any], frames: int = 8) -> tuple[tuple[str, str], ...]:
    """The crash record's ``fault`` and ``backtrace`` fields from the report's keys:
    one line each, ``function file:line`` per frame (the file without its directory)."""

    def where(entry: dict[str, Any]) -> str:
        name = entry.get("function") or "??"
        file = Path(str(entry["file"])).name if entry.get("file") else "??"
        line = f":{entry['line']}" if entry.get("line") else ""
        return f"{name} {file}{line}{' (inlined)' if entry.get('inlined') else ''}"

    out: list[tuple[str, str]] = []
    fault = report.get("fault") or {}
    trace = report.get("backtrace") or []
    if fault.get("pc") or fault.get("reason"):
        # Unikraft's console names no trap: the handler gdb found says which it was.
        what = str(fault.get("reason") or fault.get("handler") or "fault")
        if fault.get("address") is not None:
            what += f" at {fault['address']}"
        if fault.get("pc"):
            what += f", pc {fault['pc']}"
        if trace and fault.get("function"):
            what += f" in {where(trace[0])}"
        out.append(("fault", what))
    if trace:
        shown = [where(f) for f in trace[:frames]]
        if len(trace) > frames:
            shown.append(f"... {len(trace) - frames} more")
        out.append(("backtrace", "; ".join(shown)))
    return tuple(out)
