"""The host symbolizer: addr2line's batch answers parsed, and a real program symbolized.

A small C program with a chain of calls and an inlined function is compiled with
``-g`` here (gcc, as the C library's tests do), so that function, file, line and
inlined frames are checked against its source without any built guest;
tests/integration/test_symbolize_guests.py does the same on the real guests' symbols.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from umonitor.debug import symbolize
from umonitor.debug.symbolize import Frame, Location, Symbolizer, parse_answer
from umonitor.errors import EnvironmentProblem, UsageError

E = "0x" + "0" * 10  # an echoed address's first 12 characters

ANSWERS = [
    (  # one frame
        [f"{E}115e14", "write_through_null", "/src/crash_app.c:56"],
        [(0x115E14, (Location("write_through_null", "/src/crash_app.c", 56),))],
    ),
    (  # inlined: innermost first, then the function it is inlined into
        [f"{E}12bde0", "do_main", "/u/boot.c:543", "ukplat_entry", "/u/boot.c:441"],
        [(0x12BDE0, (Location("do_main", "/u/boot.c", 543),
                     Location("ukplat_entry", "/u/boot.c", 441)))],
    ),
    (  # unknown address, a function without line information, a discriminator
        [f"{E}000001", "??", "??:0", f"{E}10dbab", "bmk_cpu_sched_bouncer", "??:?",
         f"{E}2c6726", "mainbouncer", "/r/rumprun.c:195 (discriminator 3)"],
        [
            (0x1, (Location(None, None, None),)),
            (0x10DBAB, (Location("bmk_cpu_sched_bouncer", None, None),)),
            (0x2C6726, (Location("mainbouncer", "/r/rumprun.c", 195),)),
        ],
    ),
    (  # a file name with a colon in it; line unknown
        [f"{E}000010", "f", "/a:b/c.c:?"],
        [(0x10, (Location("f", "/a:b/c.c", None),))],
    ),
]  # fmt: skip


@pytest.mark.parametrize(("lines", "expected"), ANSWERS)
def test_parse_answer(lines: list[str], expected: object) -> None:
    assert parse_answer(lines) == expected


def test_parse_answer_refuses_a_lone_line() -> None:
    with pytest.raises(ValueError):
        parse_answer(["write_through_null"])


PROGRAM = r"""
static volatile int counter;
__attribute__((noinline)) void leaf(int v) { counter += v; }
static inline __attribute__((always_inline)) void middle(int v) { leaf(v + 1); }
__attribute__((noinline)) void outer(int v) { middle(v); counter++; }
int main(void) { outer(1); return counter; }
"""


def _line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


def _symbol(binary: Path, name: str) -> int:
    out = subprocess.run(["nm", str(binary)], capture_output=True, text=True, check=True)
    return next(int(f.split()[0], 16) for f in out.stdout.splitlines() if f.endswith(f" {name}"))


def _return_address_after_call(binary: Path, caller: str, callee: str) -> int:
    """The address after ``caller``'s call to ``callee``: what a stack would hold."""
    out = subprocess.run(
        ["objdump", "-d", f"--disassemble={caller}", str(binary)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    for line in out.stdout.splitlines():  # "  401136:\te8 05 00 00 00 \tcall 401140 <leaf>"
        parts = line.split("\t")
        if len(parts) >= 3 and parts[2].startswith("call") and f"<{callee}>" in parts[2]:
            return int(parts[0].strip().rstrip(":"), 16) + len(parts[1].split())
    raise AssertionError(f"no call to {callee} in {caller}")


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    if shutil.which("gcc") is None or shutil.which("addr2line") is None:
        pytest.fail("gcc and binutils are needed (scripts/setup.sh installs them)")
    tmp = tmp_path_factory.mktemp("sym")
    source = tmp / "chain.c"
    source.write_text(PROGRAM)
    binary = tmp / "chain"
    subprocess.run(
        ["gcc", "-O2", "-g", "-fno-omit-frame-pointer", "-no-pie", "-o", str(binary), str(source)],
        check=True,
    )
    return binary, PROGRAM


def test_backtrace_names_each_frame_with_file_and_line(program: tuple[Path, str]) -> None:
    binary, text = program
    pc = _symbol(binary, "leaf")
    after_outer_call = _return_address_after_call(binary, "outer", "leaf")
    after_main_call = _return_address_after_call(binary, "main", "outer")
    sym = Symbolizer(binary)
    try:
        frames = sym.backtrace([pc, after_outer_call, after_main_call])
    finally:
        sym.close()
    named = [(f.function, Path(f.file or "").name, f.line, f.inlined) for f in frames]
    assert named == [
        ("leaf", "chain.c", _line_of(text, "void leaf"), False),
        ("middle", "chain.c", _line_of(text, "void middle"), True),
        ("outer", "chain.c", _line_of(text, "void outer"), False),
        ("main", "chain.c", _line_of(text, "int main"), False),
    ]
    assert frames[1].address == frames[2].address == after_outer_call  # as the guest gave it
    assert frames[0].to_json() == {
        "address": f"{pc:#x}", "function": "leaf", "file": frames[0].file,
        "line": _line_of(text, "void leaf"),
    }  # fmt: skip
    assert frames[1].to_json()["inlined"] is True


def test_unknown_addresses_and_answers_kept(program: tuple[Path, str]) -> None:
    binary, _ = program
    sym = Symbolizer(binary)
    try:
        unknown = [Frame(0x10, None, None, None), Frame(0, None, None, None)]
        assert sym.backtrace([0x10, 0]) == unknown
        first = sym.locate([_symbol(binary, "outer")])
        sym.close()  # a kept answer needs no process
        assert sym.locate([_symbol(binary, "outer")]) == first
        assert sym._proc is None
        with pytest.raises(UsageError):
            sym.locate(range(symbolize.MAX_ADDRESSES + 1))
    finally:
        sym.close()


def test_symbolizer_for_is_kept_per_file_and_renewed_on_change(
    program: tuple[Path, str], tmp_path: Path
) -> None:
    binary, _ = program
    copy = tmp_path / "copy"
    shutil.copy2(binary, copy)
    try:
        first = symbolize.symbolizer_for(copy)
        assert symbolize.symbolizer_for(copy) is first
        copy.write_bytes(binary.read_bytes() + b"\0")  # a rebuild: another size and time
        assert symbolize.symbolizer_for(copy) is not first
    finally:
        symbolize.close_all()


def test_missing_file_and_missing_tool(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        symbolize.symbolizer_for(tmp_path / "nothing.dbg")
    with pytest.raises(EnvironmentProblem, match="binutils"):
        Symbolizer(tmp_path, tool="no-such-addr2line").locate([1])
