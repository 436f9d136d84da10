"""The crash report's state: from gdb_capture.py's line (as the real guests gave it),
from a console dump, and the gdb command line for symbols with or without code."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from umonitor.debug import symbolize
from umonitor.debug.crash_state import (
    CAPTURE_SCRIPT,
    MARK,
    CaptureRequest,
    CrashState,
    capture_crash,
    crash_summary,
    from_console,
    from_gdb_untrusted,
    gdb_command,
)
from umonitor.debug.symbolize import Frame
from umonitor.protocol.crash_dump import CrashDump

SRC = "/src/umonitor/guest/demo/crash_app.c"
BOOT = "/uk/lib/ukboot/boot.c"

# What gdb_capture.py printed for the Unikraft crash guest (held by -no-shutdown),
# shortened: the power-off path, the trap entry, then the faulting thread.
UNIKRAFT = {
    "stopped_at": {"rip": 0x102181, "rsp": 0x197ED8, "cr2": 0},
    "registers": {"rip": 0x115E14, "rsp": 0x11E80, "rbp": 0x11E90, "rdi": 42},
    "trap": {"handler": "asm_trap_page_fault"},
    "frames": [
        {"pc": 0x102181, "function": "halt", "file": "/uk/cpu_native.c", "line": 38},
        {"pc": 0x114545, "function": "cpu_halt", "file": "/uk/shutdown.c", "line": 82,
         "inlined": True},
        {"pc": 0x114545, "function": "ukplat_terminate", "file": "/uk/shutdown.c", "line": 77},
        {"pc": 0x10216C, "function": "do_page_fault", "file": "/uk/traps.c", "line": 113},
        {"pc": 0x10F1C5, "function": "asm_trap_page_fault", "file": "/uk/v.S", "line": 175,
         "trap": True},
        {"pc": 0x115E14, "function": "write_through_null", "file": SRC, "line": 56},
        {"pc": 0x115E33, "function": "crash", "file": SRC, "line": 62},
        {"pc": 0x15D92B, "function": "main", "file": SRC, "line": 104},
        {"pc": 0x12BDE1, "function": "do_main", "file": BOOT, "line": 543, "inlined": True},
        {"pc": 0x12BDE1, "function": "ukplat_entry", "file": BOOT, "line": 441},
    ],
}  # fmt: skip

# rumprun: the trap frame found, RIP and RSP moved to the fault, gdb unwound from there.
RUMPRUN = {
    "stopped_at": {"rip": 0x102A2C, "rsp": 0x5C0E58, "cr2": 0},
    "trap": {"handler": "x86_trap_14", "vector": 14, "rip": 0x110CD2, "cs": 8,
             "eflags": 0x202, "rsp": 0x5C0E98, "ss": 0x18},
    "registers": {"rbx": 0x5C0F10, "rip": 0x110CD2, "rsp": 0x5C0E98},
    "clobbered": ["rax", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11"],
    "frames": [
        {"pc": 0x110CD2, "function": "write_through_null", "file": SRC, "line": 56},
        {"pc": 0x110CF8, "function": "crash", "file": SRC, "line": 62},
        {"pc": 0x2ED661, "function": "main", "file": SRC, "line": 104},
        {"pc": 0x10DBAB, "function": "bmk_cpu_sched_bouncer"},
        {"pc": 0, "function": None},
    ],
}  # fmt: skip


def gdb_output(state: object) -> str:
    return f"warning: noise\n{MARK}{json.dumps(state)}\n[Inferior 1 (process 1) detached]\n"


def test_unikraft_handler_frames_apart() -> None:
    state = from_gdb_untrusted(gdb_output(UNIKRAFT))
    assert state.source == "gdbstub" and not state.errors
    assert [f.function for f in state.handler_frames] == [
        "halt", "cpu_halt", "ukplat_terminate", "do_page_fault", "asm_trap_page_fault",
    ]  # fmt: skip
    assert [(f.function, f.line, f.inlined) for f in state.backtrace] == [
        ("write_through_null", 56, False),
        ("crash", 62, False),
        ("main", 104, False),
        ("do_main", 543, True),
        ("ukplat_entry", 441, False),
    ]
    report = state.to_report()
    assert report["fault"] == {
        "handler": "asm_trap_page_fault", "address": "0x0", "pc": "0x115e14",
        "function": "write_through_null", "file": SRC, "line": 56,
    }  # fmt: skip
    assert report["registers"]["rdi"] == "0x2a"
    assert report["backtrace"][3] == {
        "address": "0x12bde1", "function": "do_main", "file": BOOT, "line": 543, "inlined": True,
    }  # fmt: skip
    assert report["backtrace_source"] == "gdbstub" and report["capture_errors"] == []
    json.dumps(report)  # all of it is JSON


def test_rumprun_trap_frame_and_lost_registers() -> None:
    state = from_gdb_untrusted(gdb_output(RUMPRUN))
    assert [f.function for f in state.backtrace] == [
        "write_through_null",
        "crash",
        "main",
        "bmk_cpu_sched_bouncer",
    ]  # fmt: skip  (the zero frame that ends the walk is dropped)
    assert state.handler_frames == ()
    assert "rax" in state.registers_lost and dict(state.registers)["rip"] == 0x110CD2
    assert dict(state.fault) == {"handler": "x86_trap_14", "vector": 14, "address": 0}


@pytest.mark.parametrize(
    "output",
    [
        "",
        "no mark here\n",
        f"{MARK}not json\n",
        f"{MARK}[1, 2]\n",
    ],
)
def test_no_state_is_an_error_not_an_exception(output: str) -> None:
    state = from_gdb_untrusted(output)
    assert state.errors and state.backtrace == () and state.registers == ()


def test_hostile_values_are_dropped() -> None:
    state = from_gdb_untrusted(
        gdb_output({
            "registers": {"rip": -1, "rsp": 1 << 64, "rbx": "0x10", "rbp": 16, "x" * 99: 1},
            "frames": [{"pc": True}, "frame", {"pc": 5, "line": -3, "function": 7},
                       {"pc": 6, "file": "f" * 10000}] + [{"pc": 1}] * 500,
            "clobbered": "rax",
            "trap": [],
        })
    )  # fmt: skip
    assert dict(state.registers) == {"rbp": 16, "x" * 16: 1}
    assert state.backtrace[0] == Frame(5, None, None, None)
    assert len(state.backtrace[1].file or "") == 4096
    assert len(state.backtrace) <= 64 and state.registers_lost == ()


def test_from_console_without_symbols() -> None:
    dump = CrashDump("rumprun", 0x110CD2, (("rip", 0x110CD2),), 0, trap="page fault")
    state = from_console(dump, None)
    assert state.source == "console" and state.errors == ("no symbols",)
    assert state.to_report()["fault"] == {
        "reason": "page fault", "address": "0x0", "pc": "0x110cd2",
        "function": None, "file": None, "line": None,
    }  # fmt: skip
    assert state.backtrace == (Frame(0x110CD2, None, None, None),)
    library = CrashDump("library", 0x10, (("rip", 0x10),), signal=11, frames=(0x20,))
    assert from_console(library, None).source == "guest-library"
    assert [f.address for f in from_console(library, None).backtrace] == [0x10, 0x20]
    assert CrashState("console").to_report()["backtrace"] == []


@pytest.fixture(scope="module")
def split_symbols(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A program and its --only-keep-debug symbols, as rumprun's build keeps them."""
    if shutil.which("gcc") is None or shutil.which("objcopy") is None:
        pytest.fail("gcc and binutils are needed (scripts/setup.sh installs them)")
    tmp = tmp_path_factory.mktemp("split")
    (tmp / "p.c").write_text("int main(void) { return 0; }\n")
    subprocess.run(["gcc", "-g", "-O2", "-o", str(tmp / "p"), str(tmp / "p.c")], check=True)
    subprocess.run(["objcopy", "--only-keep-debug", str(tmp / "p"), str(tmp / "p.dbg")],
                   check=True)  # fmt: skip
    return tmp / "p", tmp / "p.dbg"


def test_gdb_command_adds_the_kernel_only_when_symbols_lack_code(
    split_symbols: tuple[Path, Path], tmp_path: Path
) -> None:
    program, symbols = split_symbols
    sock = tmp_path / "gdb.sock"
    split = gdb_command(symbols, sock, program)
    assert f"symbol-file {symbols}" in split and f"add-symbol-file {program} -o 0" in split
    assert split[split.index("set auto-load off") - 1] == "-iex"  # before any file loads
    assert split[-4:] == ["-ex", f"target remote {sock}", "-x", str(CAPTURE_SCRIPT)]
    whole = gdb_command(program, sock, program)
    assert not any(a.startswith("add-symbol-file") for a in whole)
    assert gdb_command(tmp_path / "missing", sock, program)[:3] == ["gdb", "-q", "-batch"]
    assert CAPTURE_SCRIPT.is_file()


VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "crash"


def console_of(name: str) -> tuple[str, ...]:
    from umonitor.protocol.console_lines import ConsoleDecoder

    decoder = ConsoleDecoder()
    decoder.receive_data((VECTORS / name).read_bytes())
    return tuple(r.message for r in decoder.next_events() + decoder.end_of_stream())


def fake_gdb(tmp_path: Path, state: object, status: int = 0) -> Path:
    """A gdb that prints what gdb_capture.py would have, and says how it was called."""
    script = tmp_path / "gdb"
    script.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$@" > {tmp_path}/argv\n'
        f'echo "$UMON_CRASH_REGISTERS" > {tmp_path}/registers\n'
        f"cat <<'EOF'\n{gdb_output(state)}EOF\nexit {status}\n"
    )
    script.chmod(0o755)
    return script


def test_capture_crash_uses_the_gdbstub_and_keeps_the_consoles_fault(tmp_path: Path) -> None:
    symbols = tmp_path / "crash.dbg"
    symbols.write_bytes(b"\x7fELF symbols")
    request = CaptureRequest(
        "rumprun", tmp_path / "crash.bin", symbols, tmp_path / "gdb.sock",
        console_of("rumprun-crash.console"),
    )  # fmt: skip
    report = asyncio.run(capture_crash(request, gdb=str(fake_gdb(tmp_path, RUMPRUN))))
    assert report["backtrace_source"] == "gdbstub" and report["capture_errors"] == []
    assert [f["function"] for f in report["backtrace"]][:3] == [
        "write_through_null", "crash", "main"
    ]  # fmt: skip
    assert report["fault"]["reason"] == "page fault" and report["fault"]["address"] == "0x0"
    assert report["fault"]["handler"] == "x86_trap_14"
    assert report["symbols"]["path"] == str(symbols) and len(report["symbols"]["sha256"]) == 64
    argv = (tmp_path / "argv").read_text().splitlines()
    assert f"target remote {tmp_path / 'gdb.sock'}" in argv
    assert (tmp_path / "registers").read_text().strip() == ""  # not Nanos: none handed


def test_capture_crash_hands_nanos_the_consoles_registers(tmp_path: Path) -> None:
    symbols = tmp_path / "crash.dbg"
    symbols.write_bytes(b"\x7fELF")
    request = CaptureRequest(
        "nanos", tmp_path / "crash", symbols, tmp_path / "gdb.sock",
        console_of("nanos-crash.console"),
    )  # fmt: skip
    asyncio.run(capture_crash(request, gdb=str(fake_gdb(tmp_path, RUMPRUN))))
    registers = json.loads((tmp_path / "registers").read_text())
    assert "rip" in registers and "rsp" in registers and "cs" not in registers


def test_capture_crash_falls_back_to_the_console(tmp_path: Path) -> None:
    symbols = tmp_path / "crash.dbg"
    symbols.write_bytes(b"\x7fELF")
    console = console_of("unikraft-0.17-crash.console")
    broken = fake_gdb(tmp_path, "not a state", status=1)
    request = CaptureRequest("unikraft", tmp_path / "k", symbols, tmp_path / "gdb.sock", console)
    report = asyncio.run(capture_crash(request, gdb=str(broken)))
    assert report["backtrace_source"] == "console"
    assert report["capture_errors"][0].startswith("gdb printed a malformed crash state")
    assert [f["address"] for f in report["backtrace"]][:3] == ["0x115e14", "0x115e33", "0x15d92b"]
    gone = asyncio.run(capture_crash(CaptureRequest("unikraft", tmp_path / "k", None, None,
                                                    console)))  # fmt: skip
    assert gone["capture_errors"] == ["no symbols"] and gone["symbols"] is None
    assert gone["registers"]["rip"] == "0x115e14"
    ended = CaptureRequest("unikraft", tmp_path / "k", symbols, None, ())
    nothing = asyncio.run(capture_crash(ended))
    assert nothing["capture_errors"] == [
        "QEMU had ended: no gdbstub to read",
        "no crash dump on the console",
    ]
    assert nothing["backtrace"] == []
    missing = CaptureRequest("unikraft", tmp_path / "k", symbols, tmp_path / "s", console)
    without_gdb = asyncio.run(capture_crash(missing, gdb=str(tmp_path / "no-gdb")))
    assert without_gdb["capture_errors"][0].startswith("no ")
    symbolize.close_all()  # the addr2line kept for this file


def test_a_linux_guest_uses_the_librarys_line_never_its_gdbstub(tmp_path: Path) -> None:
    line = ("umon-crash: signal 11 code 1 addr 0x0 pc 0x401b9e sp 0x7ffd6c0f1bd8"
            " fp 0x7ffd6c0f1be0 text 0x401a90 stack 0x401bc8 0x4018f4")  # fmt: skip
    console = ("crash_app: crashing now", line, "umon-init: app killed by signal 11")
    gdb = fake_gdb(tmp_path, UNIKRAFT)  # the kernel's state: must not be asked
    request = CaptureRequest("linux", tmp_path / "vmlinux", None, tmp_path / "gdb.sock", console)
    report = asyncio.run(capture_crash(request, gdb=str(gdb)))
    assert not (tmp_path / "argv").exists()
    assert report["backtrace_source"] == "guest-library"
    assert report["capture_errors"] == ["no symbols"]
    assert report["registers"] == {"rip": "0x401b9e", "rsp": "0x7ffd6c0f1bd8",
                                   "rbp": "0x7ffd6c0f1be0"}  # fmt: skip
    assert [f["address"] for f in report["backtrace"]] == ["0x401b9e", "0x401bc8", "0x4018f4"]
    assert report["fault"] == {
        "reason": "segmentation fault",
        "signal": 11,
        "address": "0x0",
        "pc": "0x401b9e",
        "function": None,
        "file": None,
        "line": None,
    }
    assert dict(crash_summary(report))["fault"] == "segmentation fault at 0x0, pc 0x401b9e"
    panic = CaptureRequest("linux", tmp_path / "vmlinux", None, tmp_path / "gdb.sock",
                           ("Kernel panic - not syncing: x",))  # fmt: skip
    nothing = asyncio.run(capture_crash(panic, gdb=str(gdb)))
    assert not (tmp_path / "argv").exists()
    assert nothing["capture_errors"][0].startswith("no umon-crash: line from the program")


def test_crash_summary_is_one_line_each() -> None:
    report = from_gdb_untrusted(gdb_output(UNIKRAFT)).to_report()
    report["fault"]["reason"] = "page fault"
    fields = dict(crash_summary(report, frames=3))
    assert fields["fault"] == (
        "page fault at 0x0, pc 0x115e14 in write_through_null crash_app.c:56"
    )
    assert fields["backtrace"] == (
        "write_through_null crash_app.c:56; crash crash_app.c:62; main crash_app.c:104; ... 2 more"
    )
    assert crash_summary({}) == () and crash_summary({"capture_errors": ["x"]}) == ()
    del report["fault"]["reason"]  # Unikraft: the trap entry gdb stopped in names it
    assert dict(crash_summary(report))["fault"].startswith("asm_trap_page_fault at 0x0, pc ")
