"""Addresses to function, file and line, from an ELF file with DWARF, on the host.

How this works: one ``addr2line`` process (GNU binutils) per symbols file stays open
and answers in batch mode: ``-a -f -i -C`` echoes each address as ``0x`` and 16 hex
digits, then a function line and a ``file:line`` line per frame, innermost inlined
frame first. The number of frames per address varies, so each batch ends with a
sentinel address that no code has; its echo marks the end of the answer. Answers are
kept per address (bounded), and ``symbolizer_for`` keeps one Symbolizer per symbols
file, made anew when the file changes.

Why addr2line (docs/debugging.md has the measurements): on the real Unikraft, rumprun
and Nanos ``.dbg`` files it answers 10 addresses in 2-105 ms from a cold start and
0.1 ms per address once open; it gives the source-level names gdb shows (rumprun's
``preempt``, not the linked ``rumpns_preempt``) and inlined frames with their call
lines. llvm-symbolizer (same speed, JSON) gives linkage names and needs LLVM;
pyelftools is 30-50 times slower and would leave inlined call lines to us.

A frame's address is a return address except for the innermost one (the faulting
instruction, or the pc the CPU stopped at): a return address points after its call,
often at the next line or into the next function, so it is looked up less one.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from umonitor.errors import EnvironmentProblem, UsageError

ADDR2LINE = "addr2line"
MAX_ADDRESSES = 1024  # per call: a guest's stack is bounded, a request is too
CACHE_ADDRESSES = 65536  # answers kept per symbols file
ANSWER_TIMEOUT = 30.0  # seconds for one batch (rumprun's 7.5 MB file: 0.26 s per 1000)
_SENTINEL = 0xFFFFFFFFFFFFFFFF  # above any code address: answered "??"
_ECHO = re.compile(r"^0x[0-9a-f]{16}$")
_DISCRIMINATOR = re.compile(r" \(discriminator \d+\)$")


@dataclass(frozen=True, slots=True)
class Location:
    """Where one address is: function, file and line; any may be unknown (None)."""

    function: str | None
    file: str | None
    line: int | None


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame of a backtrace, as a crash report holds it.

    ``address`` is the value from the guest (a return address as it is, not less
    one). ``inlined`` frames share the address of the next frame out: the compiler
    put their code inside that function.
    """

    address: int
    function: str | None
    file: str | None
    line: int | None
    inlined: bool = False

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "address": f"{self.address:#x}",
            "function": self.function,
            "file": self.file,
            "line": self.line,
        }
        if self.inlined:
            out["inlined"] = True
        return out


def parse_answer(lines: Sequence[str]) -> list[tuple[int, tuple[Location, ...]]]:
    """addr2line ``-a -f -i`` output: per echoed address, its frames, innermost first."""
    out: list[tuple[int, tuple[Location, ...]]] = []
    frames: list[Location] = []
    address: int | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if _ECHO.match(line):
            if address is not None:
                out.append((address, tuple(frames)))
            address, frames = int(line, 16), []
            i += 1
            continue
        if address is None or i + 1 >= len(lines):
            raise ValueError(f"unexpected addr2line output: {line!r}")
        frames.append(_location(line, lines[i + 1]))
        i += 2
    if address is not None:
        out.append((address, tuple(frames)))
    return out


def _location(function: str, where: str) -> Location:
    where = _DISCRIMINATOR.sub("", where)
    path, _, number = where.rpartition(":")
    return Location(
        None if function == "??" else function,
        None if path in ("", "??") else path,
        int(number) if number.isdigit() and number != "0" else None,
    )


class Symbolizer:
    """One symbols file, one addr2line process; safe to call from several threads."""

    def __init__(self, symbols: Path, tool: str = ADDR2LINE) -> None:
        self.symbols = symbols
        self._tool = tool
        self._proc: subprocess.Popen[str] | None = None
        self._cache: OrderedDict[int, tuple[Location, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def locate(self, addresses: Iterable[int]) -> dict[int, tuple[Location, ...]]:
        """Each exact address's frames (innermost inlined first; empty if unknown)."""
        wanted = list(dict.fromkeys(a & _SENTINEL for a in addresses))
        if len(wanted) > MAX_ADDRESSES:
            raise UsageError(f"at most {MAX_ADDRESSES} addresses at once, not {len(wanted)}")
        with self._lock:
            missing = [a for a in wanted if a not in self._cache]
            if missing:
                for address, frames in self._ask(missing):
                    self._cache[address] = frames
                    if len(self._cache) > CACHE_ADDRESSES:
                        self._cache.popitem(last=False)
            return {a: self._cache.get(a, ()) for a in wanted}

    def backtrace(self, addresses: Sequence[int], *, first_is_pc: bool = True) -> list[Frame]:
        """Frames for a stack of addresses, innermost first, inlined frames expanded.

        ``addresses[0]`` is the pc where the CPU stopped (looked up as it is) when
        ``first_is_pc``; every other address is a return address (looked up less one).
        """
        lookups = [
            a if (n == 0 and first_is_pc) or a == 0 else a - 1 for n, a in enumerate(addresses)
        ]
        found = self.locate(lookups)
        out: list[Frame] = []
        for address, lookup in zip(addresses, lookups, strict=True):
            chain = found.get(lookup & _SENTINEL, ())
            if not chain:
                out.append(Frame(address, None, None, None))
                continue
            for n, where in enumerate(chain):
                inlined = n < len(chain) - 1
                out.append(Frame(address, where.function, where.file, where.line, inlined))
        return out

    def _ask(self, addresses: list[int]) -> list[tuple[int, tuple[Location, ...]]]:
        proc = self._process()
        assert proc.stdin is not None and proc.stdout is not None
        query = "".join(f"{a:#x}\n" for a in [*addresses, _SENTINEL])
        try:
            proc.stdin.write(query)
            proc.stdin.flush()
            lines: list[str] = []
            while True:
                line = proc.stdout.readline()
                if not line:
                    raise OSError("addr2line ended")
                line = line.rstrip("\n")
                if line == f"{_SENTINEL:#018x}":
                    proc.stdout.readline()
                    proc.stdout.readline()
                    break
                lines.append(line)
        except OSError as exc:
            self.close()
            raise EnvironmentProblem(f"addr2line failed on {self.symbols}: {exc}") from exc
        return parse_answer(lines)

    def _process(self) -> subprocess.Popen[str]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self.close()  # an addr2line that ended (a file it cannot read): its pipes too
        tool = shutil.which(self._tool)
        if tool is None:
            raise EnvironmentProblem(
                f"{self._tool} is not installed; install it (Debian: apt-get install binutils)"
            )
        if not self.symbols.is_file():
            raise UsageError(f"symbols file {self.symbols} does not exist")
        self._proc = subprocess.Popen(
            [tool, "-e", str(self.symbols), "-a", "-f", "-i", "-C"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            errors="replace",
            bufsize=1,
        )
        return self._proc

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            # A broken pipe: what was still buffered cannot be written; wait all the same.
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


_symbolizers: dict[Path, tuple[tuple[int, int], Symbolizer]] = {}
_symbolizers_lock = threading.Lock()


def symbolizer_for(symbols: Path) -> Symbolizer:
    """The Symbolizer of a symbols file, made anew when the file changed (a rebuild)."""
    path = symbols.resolve()
    try:
        stat = path.stat()
    except OSError as exc:
        raise UsageError(f"cannot read symbols file {symbols}: {exc.strerror}") from exc
    key = (stat.st_mtime_ns, stat.st_size)
    with _symbolizers_lock:
        held = _symbolizers.get(path)
        if held is not None and held[0] == key:
            return held[1]
        if held is not None:
            held[1].close()
        made = Symbolizer(path)
        _symbolizers[path] = (key, made)
        return made


def close_all() -> None:
    with _symbolizers_lock:
        for _, symbolizer in _symbolizers.values():
            symbolizer.close()
        _symbolizers.clear()
