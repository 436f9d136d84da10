"""The host symbolizer on the real guests' symbols: Unikraft, rumprun and Nanos crash apps.

The guests come from the build cache (tests/unikernels.py ``built``). The crash app's
frames (write_through_null <- crash <- main, docs/debugging.md) are looked up the way a
crash report does: the faulting function by an address inside it, the callers by the
return address after each call, which objdump finds in the guest's own code.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.unikernels import built, crash_app_lines
from umonitor.debug.symbolize import Symbolizer

ROOT = Path(__file__).resolve().parents[2]

# kind -> (symbols file, file with the code: rumprun's .dbg keeps no .text)
FILES = {
    "unikraft": ("crash.dbg", "crash.dbg"),
    "rumprun": ("crash.dbg", "crash.bin"),
    "nanos": ("crash.dbg", "crash"),
}
# rumprun-bake links main() as rumprun_main1; its DWARF (and so a backtrace) says main.
MAIN_SYMBOL = {"rumprun": "rumprun_main1"}


def _symbols(elf: Path) -> dict[str, tuple[int, int]]:
    """Function name -> (address, size), from the symbols file's table."""
    out = subprocess.run(["nm", "-S", str(elf)], capture_output=True, text=True, check=True)
    table: dict[str, tuple[int, int]] = {}
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2] in "tT":
            table[parts[3]] = (int(parts[0], 16), int(parts[1], 16))
    return table


def _after_call(code: Path, table: dict[str, tuple[int, int]], caller: str, callee: str) -> int:
    """The return address of ``caller``'s call to ``callee`` (a jmp for a tail call)."""
    start, size = table[caller]
    target = table[callee][0]
    out = subprocess.run(
        ["objdump", "-d", f"--start-address={start:#x}", f"--stop-address={start + size:#x}",
         str(code)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    for line in out.stdout.splitlines():  # "  110cf3:\te8 c8 ff ff ff \tcall   110cc0 <...>"
        parts = line.split("\t")
        if len(parts) >= 3 and re.match(rf"call\s+(0x)?{target:x}\b", parts[2]):
            return int(parts[0].strip().rstrip(":"), 16) + len(parts[1].split())
    raise AssertionError(f"{caller} calls no {callee} in {code}")


@pytest.mark.parametrize("kind", sorted(FILES))
def test_crash_app_frames(kind: str) -> None:
    out = built(kind)
    symbols, code = (out / name for name in FILES[kind])
    table = _symbols(symbols)
    pc = table["write_through_null"][0] + 4  # an instruction inside it
    from_crash = _after_call(code, table, "crash", "write_through_null")
    from_main = _after_call(code, table, MAIN_SYMBOL.get(kind, "main"), "crash")
    sym = Symbolizer(symbols)
    try:
        frames = sym.backtrace([pc, from_crash, from_main])
    finally:
        sym.close()
    assert [f.function for f in frames] == ["write_through_null", "crash", "main"]
    for frame in frames:
        assert frame.file is not None and Path(frame.file).name == "crash_app.c"
        assert frame.line in crash_app_lines(frame.function or ""), frame
        assert not frame.inlined


def test_unikraft_inlined_frame() -> None:
    """Unikraft's boot calls main() from do_main(), inlined into ukplat_entry()."""
    dbg = built("unikraft") / "crash.dbg"
    sym = Symbolizer(dbg)
    try:
        after = _after_call(dbg, _symbols(dbg), "ukplat_entry", "main")
        frames = sym.backtrace([after], first_is_pc=False)
    finally:
        sym.close()
    assert [(f.function, f.inlined) for f in frames] == [("do_main", True), ("ukplat_entry", False)]
    assert all(f.file and f.file.endswith("lib/ukboot/boot.c") for f in frames)
