"""Function-trace records made into call trees, with durations, for ``umonitor trace``.

How this works: a guest built with ``-finstrument-functions`` and the C library sends,
while tracing is on, one record per function entry (kind ENTER) and return (kind
EXIT), each with the fields ``fn`` (the function's address), ``caller`` (the call
site) and ``umon.text`` (for the load bias, as in record_stack.py), and the guest's
monotonic time. Per boot, in sequence order, an enter opens a call under the call
open at the time and an exit closes the innermost open call of the same function.
What the guest dropped, or the time before tracing was switched on, leaves
unmatched events, shown as such rather than guessed at:

- an enter with no exit: the call is still running, or its exit was dropped; calls
  opened inside one whose exit came are closed with it (their exits were dropped);
- an exit with no open call of its function: entered before tracing began (or its
  enter was dropped). With no call open, everything seen so far ran inside it, and
  becomes its children; otherwise it is a leaf under the open call.

Where the guest dropped records between two events (its sequence numbers skip:
``gaps``), the tree says so at that place: "… N records dropped here", so that a
call that looks short or a caller that looks wrong can be read for what it is.

Durations are differences of the guest's monotonic clock (``mono_ns``), so they hold
across wall-clock steps but only within one boot. Records from several boots (a
restart, a reconnect under another boot id) may interleave in time: each boot has
its own tree. Everything here is pure; names come from a function given to
``render``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from umonitor.records import Kind, Record

FN_FIELD = "fn"
CALLER_FIELD = "caller"
TEXT_FIELD = "umon.text"
_ADDRESS = re.compile(r"0x([0-9a-fA-F]{1,16})")


@dataclass(frozen=True, slots=True)
class TraceEvent:
    """One function entry or return, as a record of the C library carries it."""

    boot: str
    seq: int
    enter: bool
    mono_ns: int
    fn: int
    caller: int
    text: int | None = None


def _address(value: str | None) -> int | None:
    if value is None:
        return None
    found = _ADDRESS.fullmatch(value[:24])
    return int(found.group(1), 16) if found else None


def event_untrusted(record: Record, boot: str) -> TraceEvent | None:
    """The trace event a record holds; None when it is not one (another kind, or
    ``fn`` missing or not a ``0x`` address). Never raises for what the fields hold."""
    if record.kind not in (Kind.ENTER, Kind.EXIT):
        return None
    values = dict(record.fields)
    fn = _address(values.get(FN_FIELD))
    if fn is None:
        return None
    caller = _address(values.get(CALLER_FIELD)) or 0
    return TraceEvent(
        boot,
        record.seq,
        record.kind is Kind.ENTER,
        record.mono_ns or 0,
        fn,
        caller,
        _address(values.get(TEXT_FIELD)),
    )


@dataclass(slots=True)
class Call:
    """One call of a function: entered and returned at guest monotonic times, either
    unknown (None) when its event was not seen. A call with ``dropped`` > 0 is no
    call but the place where that many of the guest's records were lost."""

    fn: int
    caller: int
    enter_ns: int | None
    exit_ns: int | None
    children: list[Call] = field(default_factory=list)
    dropped: int = 0

    @property
    def duration_ns(self) -> int | None:
        if self.enter_ns is None or self.exit_ns is None:
            return None
        return max(0, self.exit_ns - self.enter_ns)


@dataclass(slots=True)
class BootTrace:
    """The calls of one boot of the guest, outermost first, in the order they began."""

    boot: str
    calls: list[Call]
    text: int | None  # the guest's umon.text, from which its load bias follows
    events: int


Gaps = Mapping[str, Sequence[tuple[int, int]]]
"""Per boot, (first missing seq, how many) for each run of records the guest dropped."""


def gaps(seqs: Iterable[tuple[str, int]]) -> dict[str, list[tuple[int, int]]]:
    """The runs of sequence numbers missing between the lowest and highest seen, per
    boot, from every (boot, seq) of a guest's records (of any kind: the guest numbers
    records and events alike)."""
    by_boot: dict[str, set[int]] = {}
    for boot, seq in seqs:
        by_boot.setdefault(boot, set()).add(seq)
    found: dict[str, list[tuple[int, int]]] = {}
    for boot, seen in by_boot.items():
        ordered = sorted(seen)
        runs = [(a + 1, b - a - 1) for a, b in pairwise(ordered) if b - a > 1]
        if runs:
            found[boot] = runs
    return found


def build(events: Iterable[TraceEvent], missing: Gaps | None = None) -> list[BootTrace]:
    """One tree per boot, boots in the order their first event appears; ``missing``
    (see ``gaps``) marks where records were dropped between two events."""
    by_boot: dict[str, list[TraceEvent]] = {}
    for event in events:
        by_boot.setdefault(event.boot, []).append(event)
    missing = missing or {}
    return [
        _build_boot(boot, sorted(evs, key=lambda e: e.seq), missing.get(boot, ()))
        for boot, evs in by_boot.items()
    ]


def _build_boot(
    boot: str, events: Sequence[TraceEvent], missing: Sequence[tuple[int, int]]
) -> BootTrace:
    roots: list[Call] = []
    stack: list[Call] = []
    text = None
    # Only gaps between two events: before the first or after the last, nothing
    # traced was necessarily lost.
    first = events[0].seq if events else 0
    pending = sorted(gap for gap in missing if gap[0] > first)
    for event in events:
        if event.text is not None:
            text = event.text
        siblings = stack[-1].children if stack else roots
        while pending and pending[0][0] < event.seq:
            siblings.append(Call(0, 0, None, None, dropped=pending.pop(0)[1]))
        if event.enter:
            call = Call(event.fn, event.caller, event.mono_ns, None)
            siblings.append(call)
            stack.append(call)
            continue
        at = next((i for i in range(len(stack) - 1, -1, -1) if stack[i].fn == event.fn), None)
        if at is not None:
            stack[at].exit_ns = event.mono_ns
            del stack[at:]  # calls still open inside it lost their exits
        elif not stack:  # everything so far ran inside this call
            roots[:] = [Call(event.fn, event.caller, None, event.mono_ns, list(roots))]
        else:
            siblings.append(Call(event.fn, event.caller, None, event.mono_ns))
    return BootTrace(boot, roots, text, len(events))


def format_ns(ns: int) -> str:
    """A duration as people read it: ``850 ns``, ``12.3 µs``, ``4.56 ms``, ``1.20 s``."""
    if ns < 1_000:
        return f"{ns} ns"
    if ns < 1_000_000:
        return f"{ns / 1e3:.1f} µs"
    if ns < 1_000_000_000:
        return f"{ns / 1e6:.2f} ms"
    return f"{ns / 1e9:.2f} s"


NO_EXIT = "(no exit: still running, or its exit was dropped)"
NO_ENTER = "(entered before tracing began, or its enter was dropped)"
_WIDTH = 10  # characters of the duration column


DROPPED = "… {} record{} dropped here (calls around them may be incomplete)"


def _same_leaf(a: Call, b: Call) -> bool:
    return (
        not a.dropped
        and not b.dropped
        and a.fn == b.fn
        and not a.children
        and not b.children
        and a.duration_ns is not None
        and b.duration_ns is not None
    )


def render(
    trace: BootTrace, name: Callable[[int], str], caller_name: Callable[[int], str]
) -> list[str]:
    """The text lines of one boot's tree: a duration column, then the function,
    indented by depth; an outermost call shows who called it (``main → a``).
    Consecutive calls of one function that called nothing are one line
    (``b ×3``, their total time, ``avg``)."""
    lines: list[str] = []

    def walk(calls: list[Call], depth: int) -> None:
        i = 0
        while i < len(calls):
            call = calls[i]
            if call.dropped:
                note = DROPPED.format(call.dropped, "" if call.dropped == 1 else "s")
                lines.append(f"{'!':>{_WIDTH}}  {'  ' * depth}{note}")
                i += 1
                continue
            j = i + 1
            while j < len(calls) and _same_leaf(call, calls[j]):
                j += 1
            label = name(call.fn)
            if depth == 0 and call.caller:
                label = f"{caller_name(call.caller)} → {label}"
            if j - i > 1:
                total = sum(c.duration_ns or 0 for c in calls[i:j])
                label += f" ×{j - i} (avg {format_ns(total // (j - i))})"
                took = format_ns(total)
            elif call.duration_ns is not None:
                took = format_ns(call.duration_ns)
            else:
                took = "?"
                label += " " + (NO_EXIT if call.exit_ns is None else NO_ENTER)
            lines.append(f"{took:>{_WIDTH}}  {'  ' * depth}{label}")
            walk(call.children, depth + 1)
            i = j

    walk(trace.calls, 0)
    return lines


def to_json(
    trace: BootTrace, name: Callable[[int], str], caller_name: Callable[[int], str]
) -> dict[str, Any]:
    """One boot's tree for ``trace -o json``: nested calls, times in ns (null when
    the event was not seen)."""

    def call_json(call: Call) -> dict[str, Any]:
        if call.dropped:
            return {"dropped": call.dropped}
        return {
            "function": name(call.fn),
            "fn": f"{call.fn:#x}",
            "caller": f"{call.caller:#x}",
            "caller_function": caller_name(call.caller),
            "enter_ns": call.enter_ns,
            "exit_ns": call.exit_ns,
            "duration_ns": call.duration_ns,
            "children": [call_json(c) for c in call.children],
        }

    return {
        "boot": trace.boot,
        "events": trace.events,
        "calls": [call_json(c) for c in trace.calls],
    }


def addresses(trace: BootTrace) -> tuple[set[int], set[int]]:
    """The function addresses and the call sites in a tree."""
    fns: set[int] = set()
    callers: set[int] = set()
    todo = list(trace.calls)
    while todo:
        call = todo.pop()
        if call.dropped:
            continue
        fns.add(call.fn)
        if call.caller:
            callers.add(call.caller)
        todo.extend(call.children)
    return fns, callers
