"""Function names for ``umonitor trace``: GLOBs to address ranges, addresses to names.

How this works. ``trace NAME on --function GLOB`` resolves each GLOB on the host,
with the instance's symbols (symbols_file.py's rule): every function symbol of the
file's ``.symtab`` (with a size) whose name matches — as linked, demangled
(``c++filt``, binutils), or demangled without return type and parameters, so that
``b*``, ``Counter::*`` and ``square<int>`` all work — gives one range [address, address +
size). Ranges that touch are merged; at most ``fc.MAX_TRACE_RANGES`` go to the guest.
They are link-time addresses: SET_TRACE carries, as its anchor, the link-time address
of ``umon_logx``, and the guest moves the ranges by the difference to where that
function is at run time (its load bias), so a position-independent program needs no
record from the guest first.

Showing a trace, ``FunctionNames`` turns each ``fn`` into a function name with
addr2line (symbolize.py, names demangled), the guest's ``umon.text`` giving the load
bias as for call stacks; without symbols the addresses are shown.
"""

from __future__ import annotations

import fnmatch
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

from umonitor.debug.symbols_file import LOGGING_SYMBOL, function_symbols, load_bias, symbol_value
from umonitor.errors import EnvironmentProblem, UsageError
from umonitor.protocol.frame_codec import MAX_TRACE_RANGES

CXXFILT = "c++filt"
_U64 = 0xFFFFFFFFFFFFFFFF
_NAME_MAX = 256  # characters of a function name shown


def demangle(names: Sequence[str]) -> list[str]:
    """Each name demangled (C++), or as it is; one ``c++filt`` run for all."""
    if not any(n.startswith("_Z") for n in names):
        return list(names)
    tool = shutil.which(CXXFILT)
    if tool is None:
        raise EnvironmentProblem(
            f"{CXXFILT} is not installed; install it (Debian: apt-get install binutils)"
        )
    done = subprocess.run(
        [tool], input="\n".join(names) + "\n", capture_output=True, text=True, timeout=60
    )
    out = done.stdout.splitlines()
    return out if done.returncode == 0 and len(out) == len(names) else list(names)


def bare_name(demangled: str) -> str:
    """A demangled name without its parameters and return type:
    ``int square<int>(int)`` -> ``square<int>``, ``Counter::bump(int)`` ->
    ``Counter::bump``."""
    depth = 0
    start = 0
    for i, c in enumerate(demangled):
        if c == "<":
            depth += 1
        elif c == ">":
            depth = max(0, depth - 1)
        elif depth == 0 and c == " ":
            start = i + 1
        elif depth == 0 and c == "(":
            return demangled[start:i]
    return demangled[start:]


def _matches(glob: str, names: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(n, glob) for n in names)


def trace_ranges(symbols: Path, globs: Sequence[str]) -> tuple[int, list[tuple[int, int]]]:
    """The anchor (link-time address of ``umon_logx``) and the merged [start, end)
    ranges of the functions the GLOBs match. UsageError when a GLOB matches
    nothing, when there are more ranges than a SET_TRACE carries, or when the file
    lacks the C library's ``umon_logx`` (it is not the guest's program)."""
    anchor = symbol_value(symbols, LOGGING_SYMBOL)
    if anchor is None:
        raise UsageError(
            f"{symbols} has no {LOGGING_SYMBOL} symbol: it is not a program built with "
            "the C guest library, so the functions' run-time addresses cannot be found"
        )
    functions = function_symbols(symbols)
    plain = demangle([name for name, _, _ in functions])
    spans: list[tuple[int, int]] = []
    for glob in globs:
        found = [
            (value, value + size)
            for (name, value, size), shown in zip(functions, plain, strict=True)
            if _matches(glob, (name, shown, bare_name(shown)))
        ]
        if not found:
            raise UsageError(f"no function in {symbols} matches {glob!r}")
        spans.extend(found)
    merged: list[tuple[int, int]] = []
    for start, end in sorted(set(spans)):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    if len(merged) > MAX_TRACE_RANGES:
        raise UsageError(
            f"the functions matched lie in {len(merged)} separate address ranges; a guest "
            f"takes at most {MAX_TRACE_RANGES}: name fewer functions"
        )
    return anchor, merged


class FunctionNames:
    """Names of a guest's function addresses and call sites, from its symbols file."""

    def __init__(self, symbols: Path | None, text: int | None) -> None:
        self._symbols = symbols
        self._bias = load_bias(symbols, text) if symbols is not None else 0
        self._names: dict[int, str] = {}

    def look_up(self, functions: Iterable[int], call_sites: Iterable[int]) -> None:
        """Find the names of these addresses at once (addr2line in batches).

        A function's address is its first instruction; a call site is a return
        address, looked up less one. Without symbols, or when addr2line fails, the
        addresses stay as they are.
        """
        if self._symbols is None:
            return
        wanted = {a: (a - self._bias) & _U64 for a in functions}
        wanted.update({-a: (a - self._bias - 1) & _U64 for a in call_sites if a})
        if not wanted:
            return
        # Imported here: only a trace with symbols needs the symbolizer.
        from umonitor.debug.symbolize import MAX_ADDRESSES, symbolizer_for

        keys = list(wanted)
        try:
            symbolizer = symbolizer_for(self._symbols)
            for at in range(0, len(keys), MAX_ADDRESSES):
                part = keys[at : at + MAX_ADDRESSES]
                found = symbolizer.locate(wanted[k] for k in part)
                for key in part:
                    chain = found.get(wanted[key], ())
                    if chain and chain[0].function:
                        self._names[key] = chain[0].function[:_NAME_MAX]
        except (UsageError, EnvironmentProblem):
            return

    def name(self, fn: int) -> str:
        return self._names.get(fn, f"{fn:#x}")

    def caller(self, address: int) -> str:
        return self._names.get(-address, f"{address:#x}")
