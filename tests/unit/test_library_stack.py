"""The C library's call stacks on the host: its crash line, read back and symbolized.

``tests/c/stack_guest.c`` is compiled here with the library (gcc, the library's warning
set, ``-fno-omit-frame-pointer``), as a position-independent program and as a fixed
one, and crashed: the fatal-signal handler's ``umon-crash:`` line must parse
(``protocol/crash_dump.py``), and symbolized with the program itself (its load bias
from ``text``) name ``write_through_null``, ``crash`` and ``main`` with lines inside
those functions. The same addresses as a record's ``umon.stack`` field go through
``debug/record_stack.py``. tests/integration/test_record_stack.py has the records the
library sends.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from umonitor.debug.crash_state import from_console
from umonitor.debug.record_stack import RecordStacks, stack_untrusted, where
from umonitor.debug.symbolize import Frame, Symbolizer
from umonitor.debug.symbols_file import load_bias, symbol_value
from umonitor.protocol.crash_dump import crash_dump_untrusted

ROOT = Path(__file__).resolve().parents[2]
C_SRC = ROOT / "src" / "umonitor" / "guest" / "c"
GUEST = ROOT / "tests" / "c" / "stack_guest.c"
FLAGS = ["-std=c99", "-O2", "-g", "-Wall", "-Wextra", "-Werror", "-pedantic"]


def compile_guest(out: Path, *flags: str) -> Path:
    if shutil.which("gcc") is None or shutil.which("addr2line") is None:
        pytest.fail("gcc and binutils are needed (scripts/setup.sh installs them)")
    subprocess.run(
        [
            "gcc",
            *FLAGS,
            *flags,
            f"-I{C_SRC}",
            "-o",
            str(out),
            str(GUEST),
            str(C_SRC / "umonitor.c"),
        ],
        check=True,
    )
    return out


def function_lines(name: str) -> range:
    """The source lines of a function of stack_guest.c: its head to its closing brace."""
    lines = GUEST.read_text().splitlines()
    start = next(n for n, t in enumerate(lines, 1) if re.search(rf"\b{name}\((void|int)", t))
    end = next(n for n, t in enumerate(lines, 1) if n > start and t == "}")
    return range(start, end + 1)


def crash(binary: Path) -> subprocess.CompletedProcess[str]:
    # No collector listens on port 1: umon_init() does not wait for one.
    return subprocess.run(
        [str(binary), "127.0.0.1", "1", "t", "crash"], capture_output=True, text=True, timeout=30
    )


@pytest.fixture(scope="module", params=["pie", "no-pie"])
def guest(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("stack") / f"stack_guest-{request.param}"
    pie = ["-fPIE", "-pie"] if request.param == "pie" else ["-fno-pie", "-no-pie"]
    return compile_guest(out, "-fno-omit-frame-pointer", *pie)


def test_crash_line_names_the_nested_functions(guest: Path) -> None:
    done = crash(guest)
    assert done.returncode == -signal.SIGSEGV  # the handler let the signal kill it
    lines = [x for x in done.stderr.splitlines() if x.startswith("umon-crash: ")]
    assert len(lines) == 1, done.stderr
    assert re.fullmatch(
        r"umon-crash: signal 11 code 1 addr 0x0 pc 0x[0-9a-f]+ sp 0x[0-9a-f]+ fp 0x[0-9a-f]+"
        r" text 0x[0-9a-f]+ stack( 0x[0-9a-f]+){3,16}",
        lines[0],
    ), lines[0]
    dump = crash_dump_untrusted(lines)
    assert dump is not None and dump.system == "library" and dump.signal == 11
    assert {name for name, _ in dump.registers} == {"rip", "rsp", "rbp"}
    bias = load_bias(guest, dump.text)
    assert dump.text == (symbol_value(guest, "umon_logx") or 0) + bias
    assert (bias != 0) is (guest.name == "stack_guest-pie")  # the kernel moves a PIE program
    sym = Symbolizer(guest)
    try:
        state = from_console(dump, sym, bias)
    finally:
        sym.close()
    report = state.to_report()
    assert report["backtrace_source"] == "guest-library"
    assert report["registers"]["rip"] == f"{dump.pc:#x}"
    assert report["fault"]["signal"] == 11 and report["fault"]["address"] == "0x0"
    first = state.backtrace[:3]
    assert [f.function for f in first] == ["write_through_null", "crash", "main"]
    for frame in first:
        assert Path(frame.file or "").name == "stack_guest.c"
        assert frame.line in function_lines(frame.function or ""), frame
    assert first[0].address == dump.pc  # the guest's own addresses are kept


def test_a_record_stack_of_those_addresses_symbolizes_alike(guest: Path) -> None:
    dump = crash_dump_untrusted(crash(guest).stderr.splitlines())
    assert dump is not None
    fields = (
        ("n", "1"),
        ("umon.stack", " ".join(f"{a:#x}" for a in dump.frames)),
        ("umon.text", f"{dump.text:#x}"),
    )
    stacks = RecordStacks(Path("/nonexistent"), guest)
    frames = stacks.frames("t", fields) or []
    assert [f.function for f in frames[:2]] == ["crash", "main"]
    assert [f.address for f in frames[:2]] == list(dump.frames[:2])
    text = stacks.text_lines("t", fields)
    assert re.fullmatch(r"  at crash \(stack_guest\.c:\d+\)", text[0]), text
    stack = stacks.json_stack("t", fields)
    assert stack is not None and stack[0]["function"] == "crash"
    assert stack[0]["address"] == f"{dump.frames[0]:#x}" and stack[0]["line"] in function_lines(
        "crash"
    )


def test_without_frame_pointers_the_first_frame_still_names_the_fault(tmp_path: Path) -> None:
    binary = compile_guest(tmp_path / "g", "-fomit-frame-pointer", "-fno-pie", "-no-pie")
    done = crash(binary)
    assert done.returncode == -signal.SIGSEGV
    dump = crash_dump_untrusted(done.stderr.splitlines())
    assert dump is not None
    sym = Symbolizer(binary)
    try:
        state = from_console(dump, sym)
    finally:
        sym.close()
    assert state.backtrace[0].function == "write_through_null"


def test_the_handler_can_be_left_out(tmp_path: Path) -> None:
    binary = compile_guest(tmp_path / "g", "-DUMON_CRASH_HANDLER=0")
    done = crash(binary)
    assert done.returncode == -signal.SIGSEGV
    assert "umon-crash:" not in done.stderr


STACKS = [
    ((("umon.stack", "0x401bc8 0x4018f4"), ("umon.text", "0x401a90")),
     ((0x401BC8, 0x4018F4), 0x401A90)),
    ((("umon.stack", "0x401bc8 junk 0x4018f4"),), ((0x401BC8,), None)),
    ((("umon.stack", "0x" + "f" * 17),), ((), None)),
    ((("umon.stack", ""), ("umon.text", "x")), ((), None)),
    ((("other", "0x1"),), ((), None)),
    ((("umon.stack", " ".join(["0x1"] * 200)),), ((1,) * 64, None)),
    ((("umon.stack", "0x1"), ("umon.text", "0x" + "1" * 40)), ((1,), None)),
]  # fmt: skip


@pytest.mark.parametrize(("fields", "expected"), STACKS)
def test_stack_fields_untrusted(fields: tuple[tuple[str, str], ...], expected: object) -> None:
    assert stack_untrusted(fields) == expected


def test_without_symbols_the_addresses_stay(tmp_path: Path) -> None:
    stacks = RecordStacks(tmp_path)  # no instance.json: no symbols
    fields = (("umon.stack", "0x401bc8 0x4018f4"),)
    assert stacks.frames("t", fields) == [
        Frame(0x401BC8, None, None, None),
        Frame(0x4018F4, None, None, None),
    ]
    assert stacks.text_lines("t", fields) == ["  at 0x401bc8", "  at 0x4018f4"]
    assert stacks.frames("t", (("n", "1"),)) is None
    assert stacks.json_stack("t", (("n", "1"),)) is None


def test_the_instance_symbols_noted_by_the_supervisor(tmp_path: Path, guest: Path) -> None:
    run = tmp_path / "run" / "t"
    run.mkdir(parents=True)
    (run / "instance.json").write_text(f'{{"name": "t", "symbols": "{guest}"}}')
    stacks = RecordStacks(tmp_path)
    assert stacks.symbols("t") == guest
    assert stacks.symbols("../t") is None and stacks.symbols("other") is None
    (tmp_path / "run" / "bad").mkdir()
    (tmp_path / "run" / "bad" / "instance.json").write_text("[1]")
    assert stacks.symbols("bad") is None


def test_where() -> None:
    assert where(Frame(0x10, None, None, None)) == "0x10"
    assert where(Frame(0x10, "f", None, None)) == "f (0x10)"
    assert where(Frame(0x10, "f", "/a/b.c", 3)) == "f (b.c:3)"
    assert where(Frame(0x10, "f", "/a/b.c", 3, True)) == "f (b.c:3, inlined)"
