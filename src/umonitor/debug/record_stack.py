"""The call stack a record of the C library carries, symbolized for `logs`.

How this works: a record logged at ``err`` or worse by the C guest library carries two
fields (docs/debugging.md, "Call stacks in the C library's records"): ``umon.stack``,
return addresses innermost first (``"0x401bc8 0x4018f4"``), and ``umon.text``, the
run-time address of ``umon_logx``, from which the load bias of a position-independent
program follows (``symbols_file.load_bias``). The record is stored as sent; this module
turns the fields into ``symbolize.Frame`` s when the record is shown, with the
instance's symbols: the file given to ``logs --symbols``, else the one the supervisor
noted in the instance's ``instance.json`` (``symbols_file.symbols_for``'s rule).

Both fields come from the guest: at most ``MAX_FRAMES`` addresses are read, each a
``0x`` number of at most 16 hex digits, the first word that is not one ends the stack,
and nothing here raises for what a field holds or what the symbolizer does; without
symbols the frames are the addresses alone.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from umonitor.store.logfile import escape

if TYPE_CHECKING:
    from umonitor.debug.symbolize import Frame

STACK_FIELD = "umon.stack"
TEXT_FIELD = "umon.text"
MAX_FRAMES = 64  # the library sends at most UMON_STACK_DEPTH (64 at most) addresses
_SCAN = MAX_FRAMES * 20  # characters of the field read: 64 words of "0x" + 16 digits + " "
_ADDRESS = re.compile(r"0x([0-9a-fA-F]{1,16})")
_U64 = 0xFFFFFFFFFFFFFFFF
_NAME_MAX = 256  # characters of a function or file name shown


def stack_untrusted(fields: Sequence[tuple[str, str]]) -> tuple[tuple[int, ...], int | None]:
    """The return addresses of ``umon.stack`` and the address of ``umon.text`` (or
    None) in a record's fields; ``()`` when the record carries no stack."""
    stack = next((v for k, v in fields if k == STACK_FIELD), None)
    if not isinstance(stack, str):
        return (), None
    addresses: list[int] = []
    for word in stack[:_SCAN].split(" ")[:MAX_FRAMES]:
        found = _ADDRESS.fullmatch(word)
        if found is None:
            break
        addresses.append(int(found.group(1), 16))
    text_value = next((v for k, v in fields if k == TEXT_FIELD), None)
    text = None
    if isinstance(text_value, str) and (found := _ADDRESS.fullmatch(text_value[:24])):
        text = int(found.group(1), 16)
    return tuple(addresses), text


def _short(text: str | None) -> str | None:
    return text[:_NAME_MAX] if text else None


class RecordStacks:
    """Frames for records' stacks: one symbols file per instance, looked up once."""

    def __init__(self, root: Path, symbols: Path | None = None) -> None:
        self._root = root
        self._given = symbols
        self._symbols: dict[str, Path | None] = {}
        self._bias: dict[tuple[Path, int | None], int] = {}

    def symbols(self, instance: str) -> Path | None:
        """The symbols file for ``instance``'s records, or None."""
        if self._given is not None:
            return self._given
        if instance not in self._symbols:
            self._symbols[instance] = self._noted(instance)
        return self._symbols[instance]

    def _noted(self, instance: str) -> Path | None:
        if "/" in instance or instance in ("", ".", ".."):
            return None
        try:
            saved = json.loads((self._root / "run" / instance / "instance.json").read_text())
        except (OSError, ValueError):
            return None
        noted = saved.get("symbols") if isinstance(saved, dict) else None
        return Path(noted) if isinstance(noted, str) and noted else None

    def frames(self, instance: str, fields: Sequence[tuple[str, str]]) -> list[Frame] | None:
        """The record's stack as frames (inlined ones expanded), None if it has none."""
        addresses, text = stack_untrusted(fields)
        if not addresses:
            return None
        # Imported here: only records with a stack need the symbolizer (a quick `logs`).
        from umonitor.debug.symbolize import Frame, symbolizer_for
        from umonitor.debug.symbols_file import load_bias

        plain = [Frame(a, None, None, None) for a in addresses]
        symbols = self.symbols(instance)
        if symbols is None:
            return plain
        try:
            key = (symbols, text)
            if key not in self._bias:
                self._bias[key] = load_bias(symbols, text)
            bias = self._bias[key]
            moved = [(a - bias) & _U64 for a in addresses]
            found = symbolizer_for(symbols).backtrace(moved, first_is_pc=False)
        except Exception:  # no symbols file, no addr2line: the addresses stay
            return plain
        return [
            dataclasses.replace(
                f, address=(f.address + bias) & _U64, function=_short(f.function),
                file=_short(f.file),
            )
            for f in found
        ]  # fmt: skip

    def text_lines(self, instance: str, fields: Sequence[tuple[str, str]]) -> list[str]:
        """One ``  at function (file:line)`` line per frame, the file without its
        directory; an address where the function is unknown."""
        frames = self.frames(instance, fields) or []
        return [f"  at {escape(where(f))}" for f in frames]

    def json_stack(
        self, instance: str, fields: Sequence[tuple[str, str]]
    ) -> list[dict[str, Any]] | None:
        """The ``stack`` array of ``logs -o json``, shaped like a crash report's
        ``backtrace``; None when the record carries no stack."""
        frames = self.frames(instance, fields)
        return None if frames is None else [f.to_json() for f in frames]


def where(frame: Frame) -> str:
    """``function (file:line)`` of a frame, as ``logs`` shows it."""
    if frame.function is None:
        return f"{frame.address:#x}"
    place = Path(frame.file).name if frame.file else f"{frame.address:#x}"
    if frame.file and frame.line:
        place += f":{frame.line}"
    if frame.inlined:
        place += ", inlined"
    return f"{frame.function} ({place})"
