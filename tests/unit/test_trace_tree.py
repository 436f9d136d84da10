"""Function-trace records into call trees: nesting, durations, what was not seen."""

from __future__ import annotations

import pytest

from umonitor.debug import trace_tree as tt
from umonitor.debug.trace_functions import bare_name
from umonitor.records import Kind, Record, Severity

NAMES = {0x10: "main", 0x20: "a", 0x30: "b", 0x40: "fact", 0x50: "c"}


def name(fn: int) -> str:
    return NAMES.get(fn, f"{fn:#x}")


def caller(address: int) -> str:
    return f"@{address:#x}"


def events(boot: str, *steps: tuple[str, int, int]) -> list[tt.TraceEvent]:
    """``(">", fn, t)`` enters fn at t, ``("<", fn, t)`` returns; seq from 1."""
    return [
        tt.TraceEvent(boot, seq, kind == ">", t, fn, 0x1000 + fn)
        for seq, (kind, fn, t) in enumerate(steps, 1)
    ]


def shape(calls: list[tt.Call]) -> list[object]:
    return [(name(c.fn), c.duration_ns, shape(c.children)) for c in calls]


def test_nesting_and_durations() -> None:
    (boot,) = tt.build(
        events(
            "b1",
            (">", 0x20, 100),
            (">", 0x30, 110),
            ("<", 0x30, 130),
            (">", 0x30, 140),
            ("<", 0x30, 170),
            ("<", 0x20, 200),
        )
    )
    assert shape(boot.calls) == [("a", 100, [("b", 20, []), ("b", 30, [])])]
    assert boot.events == 6


def test_recursion_closes_the_innermost_call_first() -> None:
    (boot,) = tt.build(
        events(
            "b1",
            (">", 0x40, 0),
            (">", 0x40, 10),
            (">", 0x40, 20),
            ("<", 0x40, 25),
            ("<", 0x40, 40),
            ("<", 0x40, 100),
        )
    )
    assert shape(boot.calls) == [("fact", 100, [("fact", 30, [("fact", 5, [])])])]


def test_an_enter_without_exit_is_still_open() -> None:
    (boot,) = tt.build(events("b1", (">", 0x20, 0), (">", 0x30, 5), ("<", 0x30, 9)))
    assert shape(boot.calls) == [("a", None, [("b", 4, [])])]
    assert boot.calls[0].exit_ns is None
    lines = tt.render(boot, name, caller)
    assert lines[0].split() == ["?", "@0x1020", "→", "a", *tt.NO_EXIT.split()]
    assert lines[1].split() == ["4", "ns", "b"]


def test_an_exit_closes_calls_whose_exits_were_dropped() -> None:
    (boot,) = tt.build(
        events("b1", (">", 0x20, 0), (">", 0x30, 5), (">", 0x50, 6), ("<", 0x20, 50))
    )
    assert shape(boot.calls) == [("a", 50, [("b", None, [("c", None, [])])])]


def test_an_exit_with_nothing_open_adopts_what_came_before() -> None:
    # Tracing switched on inside a: b ran and returned, then a returned.
    (boot,) = tt.build(events("b1", (">", 0x30, 10), ("<", 0x30, 20), ("<", 0x20, 30)))
    assert shape(boot.calls) == [("a", None, [("b", 10, [])])]
    assert boot.calls[0].enter_ns is None
    assert tt.NO_ENTER in tt.render(boot, name, caller)[0]


def test_an_exit_not_open_under_an_open_call_is_a_leaf() -> None:
    (boot,) = tt.build(events("b1", (">", 0x20, 0), ("<", 0x30, 5), ("<", 0x20, 9)))
    assert shape(boot.calls) == [("a", 9, [("b", None, [])])]


def test_boots_interleaved_in_time_each_get_their_tree() -> None:
    one = events("b1", (">", 0x20, 0), ("<", 0x20, 10))
    two = events("b2", (">", 0x30, 1000), ("<", 0x30, 1500))
    mixed = [one[0], two[0], one[1], two[1]]
    boots = tt.build(mixed)
    assert [b.boot for b in boots] == ["b1", "b2"]
    assert [shape(b.calls) for b in boots] == [[("a", 10, [])], [("b", 500, [])]]


def test_events_are_ordered_by_sequence_not_arrival() -> None:
    steps = events("b1", (">", 0x20, 0), (">", 0x30, 1), ("<", 0x30, 2), ("<", 0x20, 3))
    (boot,) = tt.build(reversed(steps))
    assert shape(boot.calls) == [("a", 3, [("b", 1, [])])]


def test_repeated_leaf_calls_are_one_line() -> None:
    (boot,) = tt.build(
        events(
            "b1",
            (">", 0x20, 0),
            *[step for i in range(3) for step in ((">", 0x30, 10 * i), ("<", 0x30, 10 * i + 4))],
            ("<", 0x20, 2000),
        )
    )
    lines = tt.render(boot, name, caller)
    assert [line.split() for line in lines] == [
        ["2.0", "µs", "@0x1020", "→", "a"],
        ["12", "ns", "b", "×3", "(avg", "4", "ns)"],
    ]


def test_json_keeps_every_call() -> None:
    (boot,) = tt.build(events("b9", (">", 0x20, 0), (">", 0x30, 1), ("<", 0x30, 3)))
    out = tt.to_json(boot, name, caller)
    assert out["boot"] == "b9"
    (a,) = out["calls"]
    assert (a["function"], a["duration_ns"], a["exit_ns"]) == ("a", None, None)
    assert a["children"][0]["function"] == "b"
    assert a["children"][0]["duration_ns"] == 2
    assert a["caller_function"] == "@0x1020"


def test_gaps_are_the_missing_sequence_numbers_per_boot() -> None:
    seen = [("b1", 1), ("b1", 2), ("b1", 5), ("b2", 7), ("b1", 6), ("b1", 9), ("b2", 8)]
    assert tt.gaps(seen) == {"b1": [(3, 2), (7, 2)]}
    assert tt.gaps([("b1", 3), ("b1", 3), ("b1", 4)]) == {}  # a replayed record


def test_dropped_records_are_marked_where_they_were_lost() -> None:
    # a → b, then records 4-6 lost (b's exit among them), then a returns.
    steps = [(">", 0x20, 0), (">", 0x30, 5), ("<", 0x30, 9)]
    seen = events("b1", *steps)
    late = [
        tt.TraceEvent("b1", 7, True, 20, 0x30, 0x1030),
        tt.TraceEvent("b1", 8, False, 30, 0x20, 0),
    ]
    (boot,) = tt.build(seen + late, {"b1": [(4, 3)]})
    assert [(c.dropped, name(c.fn)) for c in boot.calls[0].children] == [
        (0, "b"),
        (3, "0x0"),
        (0, "b"),
    ]
    lines = tt.render(boot, name, caller)
    assert lines[2].split()[:5] == ["!", "…", "3", "records", "dropped"]
    # Not merged with the b calls around it, and kept in JSON.
    assert lines[1].split()[2:] == ["b"] and "×" not in lines[3]
    children = tt.to_json(boot, name, caller)["calls"][0]["children"]
    assert children[1] == {"dropped": 3}
    assert tt.addresses(boot) == ({0x20, 0x30}, {0x1020, 0x1030})


def test_gaps_outside_the_events_are_not_shown() -> None:
    seen = [tt.TraceEvent("b1", seq, seq == 5, seq, 0x20, 0x1020) for seq in (5, 6)]
    (boot,) = tt.build(seen, {"b1": [(2, 2), (9, 4)]})
    assert [c.dropped for c in boot.calls] == [0]
    assert len(tt.render(boot, name, caller)) == 1


def record(kind: Kind, fields: tuple[tuple[str, str], ...]) -> Record:
    return Record(7, Severity.DEBUG, "", kind, 123, None, fields=fields)


def test_event_from_a_record() -> None:
    fields = (("fn", "0x401000"), ("caller", "0x401234"), ("umon.text", "0x402000"))
    event = tt.event_untrusted(record(Kind.ENTER, fields), "bb")
    assert event == tt.TraceEvent("bb", 7, True, 123, 0x401000, 0x401234, 0x402000)


@pytest.mark.parametrize(
    ("kind", "fields"),
    [
        (Kind.LOG, (("fn", "0x1"),)),
        (Kind.EXIT, ()),
        (Kind.EXIT, (("fn", "main"),)),
        (Kind.ENTER, (("fn", "0x" + "f" * 17),)),
        (Kind.ENTER, (("fn", "0x"),)),
    ],
)
def test_records_that_are_not_events(kind: Kind, fields: tuple[tuple[str, str], ...]) -> None:
    assert tt.event_untrusted(record(kind, fields), "bb") is None


def test_bad_caller_and_text_are_left_out() -> None:
    fields = (("fn", "0x10"), ("caller", "here"), ("umon.text", "0xzz"))
    event = tt.event_untrusted(record(Kind.EXIT, fields), "bb")
    assert event is not None and (event.caller, event.text, event.enter) == (0, None, False)


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "0 ns"),
        (999, "999 ns"),
        (12_345, "12.3 µs"),
        (4_560_000, "4.56 ms"),
        (12 * 10**9, "12.00 s"),
    ],
)
def test_format_ns(ns: int, text: str) -> None:
    assert tt.format_ns(ns) == text


@pytest.mark.parametrize(
    ("demangled", "bare"),
    [
        ("b", "b"),
        ("Counter::bump(int)", "Counter::bump"),
        ("int square<int>(int)", "square<int>"),
        ("std::pair<int, int> make<std::pair<int, int> >(int)", "make<std::pair<int, int> >"),
        ("work()", "work"),
    ],
)
def test_bare_name(demangled: str, bare: str) -> None:
    assert bare_name(demangled) == bare
