"""Function tracing in real QEMU guests of the fleet (TCG): a C and a C++ program in
the Linux guest, and the C program as a Unikraft 0.17 guest.

How this works: ``trace_app.c`` and ``trace_app.cpp`` (guest/demo) are built into
images by the image builder with ``-finstrument-functions`` for the program only;
``umonitor up`` (the default accelerator path) boots both on a bridge. Each calls
``work()`` a few times a second and logs "tick N" after it. The test checks that no
enter/exit record exists while tracing is off, switches it on with ``umonitor trace
NAME on``, reads the symbolized tree (``--symbols`` the image's unstripped ``app``;
for the C guest also the fleet's default, that same ``app`` beside the initrd),
limits it to functions by name, switches it off and sees the events stop while the
ticks go on; ``down`` leaves no TAP, bridge or QEMU process behind. The Unikraft
guest (guests/unikraft: ``trace.kernel``, the application alone built with the flag,
and ``trace.dbg`` beside it, the fleet's default symbols) goes through the same
steps under Unikraft's cooperative scheduler.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import wait_for
from tests.vm.test_fleet import fleet_config, nothing_left, ps, qemu_pids, records, umon
from tests.vm.test_unikernels import instance
from umonitor.debug.symbols_file import function_symbols, symbol_value
from umonitor.image.linux import TRACE_APP, TRACE_APP_CXX, Image, build_image

BOOT_TIMEOUT = 300.0
TRACED = ("-finstrument-functions",)
DURATION = r"\d+(?:\.\d+)? (?:ns|µs|ms|s)"


@pytest.fixture(scope="module")
def trace_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Image]:
    out = tmp_path_factory.mktemp("trace-images")
    return {
        "c": build_image([TRACE_APP], out / "c", cflags=TRACED),
        "cxx": build_image([TRACE_APP_CXX], out / "cxx", cflags=TRACED),
    }


def connected(data: Path) -> set[str]:
    out = umon("ls", "-o", "json", "--data", str(data), timeout=30)
    if out.returncode != 0:
        return set()
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    return {r["name"] for r in rows if r.get("connected")}


def app_records(data: Path, name: str) -> list[dict[str, Any]]:
    """The instance's app records of its (single) boot, in sequence order."""
    rows = records(data, name, "app")
    assert len({r["boot"] for r in rows}) <= 1, f"{name} booted more than once"
    return sorted(rows, key=lambda r: int(r["seq"]))


def events(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["kind"] in ("enter", "exit")]


def ticks(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if re.fullmatch(r"tick \d+", r["message"])]


def switch(data: Path, name: str, *args: str) -> str:
    out = umon("trace", name, *args, "--data", str(data), timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def tree(data: Path, name: str, *args: str) -> list[str]:
    """``trace NAME``'s lines without the duration column, each indented as shown."""
    out = umon("trace", name, *args, "--data", str(data), timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) > 1 and lines[0].startswith("boot "), out.stdout
    assert sum(line.startswith("boot ") for line in lines) == 1, out.stdout
    rows = []
    for line in lines[1:]:
        found = re.fullmatch(rf" *({DURATION}|\?)  (.*)", line)
        assert found, line
        rows.append(found.group(2))
    return rows


def function_at(program: Path, names: dict[int, str]) -> Callable[[dict[str, Any]], str]:
    """An event's function by its address (``fn``), less the guest's load bias."""
    anchor = symbol_value(program, "umon_logx")
    assert anchor is not None

    def name(record: dict[str, Any]) -> str:
        fields = record["fields"]
        bias = int(fields["umon.text"], 16) - anchor
        return names.get(int(fields["fn"], 16) - bias, fields["fn"])

    return name


def addresses(program: Path, *symbols: str) -> dict[int, str]:
    """The link-time address of each function named (not of a variable of that name:
    Unikraft's libraries have static variables called ``a``)."""
    found = {value: name for name, value, _ in function_symbols(program) if name in symbols}
    assert sorted(found.values()) == sorted(symbols), (found, symbols)
    return found


def after_settling(data: Path, name: str) -> int:
    """The seq of the last tick stored once records sent before a switch are in:
    every event after it was recorded under the switch's setting."""
    time.sleep(2.0)
    return int(ticks(app_records(data, name))[-1]["seq"])


def new_events(data: Path, name: str, since_seq: int) -> list[dict[str, Any]]:
    return [r for r in events(app_records(data, name)) if int(r["seq"]) > since_seq]


C_TICK = ["tick → work", "  a", "    b ×2 (avg *)", "  fact", "    fact", "      fact"]
CXX_TICK = [
    "tick(unsigned long) → work()",
    "  Counter::bump(int)",
    "    int square<int>(int)",
    "  Counter::bump(int)",
    "    int square<int>(int)",
]


def matches(row: str, pattern: str) -> bool:
    return re.fullmatch(re.escape(pattern).replace(r"\*", DURATION), row) is not None


def test_tracing_in_fleet_guests(
    tmp_path: Path, trace_images: dict[str, Image], subnet: tuple[str, str]
) -> None:
    c, cxx = trace_images["c"], trace_images["cxx"]
    bridge, _ = subnet
    data = tmp_path / "data"
    config = fleet_config(tmp_path / "umonitor.toml", subnet, f"""
[[instance]]
name = "tc"
kernel = "{c.pvh_kernel or c.kernel}"
initrd = "{c.initrd}"
args = "umon.rate=4"
[[instance]]
name = "tx"
kernel = "{cxx.pvh_kernel or cxx.kernel}"
initrd = "{cxx.initrd}"
args = "umon.rate=4"
""")  # fmt: skip
    before = qemu_pids()
    taps: set[str] = set()
    started = umon("up", "-d", "-f", str(config), "--data", str(data))
    assert started.returncode == 0, started.stderr + (data / "run" / "fleet.log").read_text()
    try:
        taps = {row["tap"] for row in ps(data).values()}
        wait_for(lambda: connected(data) == {"tc", "tx"}, timeout=BOOT_TIMEOUT,
                 what="both trace guests connected")  # fmt: skip
        for name in ("tc", "tx"):
            wait_for(lambda n=name: len(ticks(app_records(data, n))) >= 3, timeout=60,
                     what=f"ticks from {name}")  # fmt: skip
            # Off by default: the hooks run at every call of work() and send nothing.
            assert events(app_records(data, name)) == []
            out = umon("trace", name, "--data", str(data), timeout=60)
            assert out.returncode == 0 and "no function trace recorded" in out.stderr

        # On: every function under tick.
        assert switch(data, "tc", "on") == "tc: tracing on\n"
        assert switch(data, "tx", "on") == "tx: tracing on\n"
        wait_for(lambda: len(events(app_records(data, "tc"))) >= 3 * 14, timeout=60,
                 what="3 ticks of events from tc")  # fmt: skip
        wait_for(lambda: len(events(app_records(data, "tx"))) >= 3 * 10, timeout=60,
                 what="3 ticks of events from tx")  # fmt: skip
        for name, image, tick in (("tc", c, C_TICK), ("tx", cxx, CXX_TICK)):
            rows = tree(data, name, "--symbols", str(image.app))
            print(f"\n{name}:\n" + "\n".join(rows[: 2 * len(tick)]))
            # Tracing went on between two ticks: whole ticks from the first row on.
            assert len(rows) >= 2 * len(tick), rows
            for row, pattern in zip(rows[: 2 * len(tick)], tick * 2, strict=True):
                assert matches(row, pattern), (row, pattern, rows[: 2 * len(tick)])
            shown = umon("trace", name, "-o", "json", "--symbols", str(image.app),
                         "--data", str(data), timeout=60)  # fmt: skip
            assert shown.returncode == 0, shown.stderr
            (boot,) = [json.loads(line) for line in shown.stdout.splitlines()]
            calls = boot["calls"]
            work = "work" if name == "tc" else "work()"
            assert {call["function"] for call in calls[:-1]} == {work}
            assert all(call["duration_ns"] > 0 for call in calls[:-1])
        # The fleet's default symbols for a linux guest: the app beside the initrd.
        assert (
            tree(data, "tc")[: len(C_TICK)]
            == tree(data, "tc", "--symbols", str(c.app))[: len(C_TICK)]
        )

        # Limited by name: the GLOB is found in the instance's symbols (for tc the
        # default; 'b*' matches libc's functions too, which are not instrumented).
        out = switch(data, "tc", "on", "-f", "b*")
        assert re.fullmatch(r"tc: tracing on for \d+ address ranges?\n", out), out
        out = switch(data, "tx", "on", "-f", "Counter::*", "--symbols", str(cxx.app))
        assert out == "tx: tracing on for 1 address range\n"
        c_mark, cxx_mark = after_settling(data, "tc"), after_settling(data, "tx")
        wait_for(lambda: len(new_events(data, "tc", c_mark)) >= 3 * 4, timeout=60,
                 what="b's events from tc")  # fmt: skip
        wait_for(lambda: len(new_events(data, "tx", cxx_mark)) >= 3 * 4, timeout=60,
                 what="Counter::bump's events from tx")  # fmt: skip
        c_name = function_at(c.app, addresses(c.app, "a", "b", "fact", "work"))
        bump, square = "_ZN7Counter4bumpEi", "_Z6squareIiET_S0_"
        cxx_name = function_at(cxx.app, addresses(cxx.app, bump, square, "_Z4workv"))
        assert {c_name(r) for r in new_events(data, "tc", c_mark)} == {"b"}
        assert {cxx_name(r) for r in new_events(data, "tx", cxx_mark)} == {bump}
        last = tree(data, "tc", "--symbols", str(c.app))[-1]
        assert re.fullmatch(rf"a → b( ×\d+ \(avg {DURATION}\))?", last), last
        print(f"tc after -f 'b*': {last}")
        last = tree(data, "tx", "--symbols", str(cxx.app))[-1]
        bumps = rf"work\(\) → Counter::bump\(int\)( ×\d+ \(avg {DURATION}\))?"
        assert re.fullmatch(bumps, last), last
        print(f"tx after -f 'Counter::*': {last}")

        # Off: the ticks go on, the events stop.
        assert switch(data, "tc", "off") == "tc: tracing off\n"
        assert switch(data, "tx", "off") == "tx: tracing off\n"
        time.sleep(2.0)  # what was recorded before the switch is stored
        counts = {n: len(events(app_records(data, n))) for n in ("tc", "tx")}
        tick_counts = {n: len(ticks(app_records(data, n))) for n in ("tc", "tx")}
        time.sleep(4.0)
        for name in ("tc", "tx"):
            rows = app_records(data, name)
            assert len(events(rows)) == counts[name], name
            assert len(ticks(rows)) >= tick_counts[name] + 8, name  # 4 ticks/s
        assert {row["state"] for row in ps(data).values()} == {"running"}
    finally:
        down = umon("down", "--data", str(data))
        assert down.returncode == 0, down.stderr
    nothing_left(data, bridge, taps, before)


def test_tracing_in_a_unikraft_guest(
    tmp_path: Path, unikraft: Path, subnet: tuple[str, str]
) -> None:
    """trace_app.c as a Unikraft guest: the hooks run under the cooperative scheduler,
    and the fleet symbolizes with the image's .dbg (its default symbols)."""
    kernel, symbols = unikraft / "trace.kernel", unikraft / "trace.dbg"
    bridge, _ = subnet
    data = tmp_path / "data"
    config = fleet_config(
        tmp_path / "umonitor.toml", subnet,
        instance("uk", "unikraft", kernel, memory="64M", app_args="umon.rate=4"),
    )  # fmt: skip
    before = qemu_pids()
    started = umon("up", "-d", "-f", str(config), "--data", str(data))
    assert started.returncode == 0, started.stderr + (data / "run" / "fleet.log").read_text()
    taps = {row["tap"] for row in ps(data).values()}
    try:
        wait_for(lambda: connected(data) == {"uk"}, timeout=BOOT_TIMEOUT,
                 what="the Unikraft trace guest connected")  # fmt: skip
        wait_for(lambda: len(ticks(app_records(data, "uk"))) >= 3, timeout=60,
                 what="ticks from uk")  # fmt: skip
        assert events(app_records(data, "uk")) == []  # off by default

        assert switch(data, "uk", "on") == "uk: tracing on\n"
        wait_for(lambda: len(events(app_records(data, "uk"))) >= 3 * 14, timeout=60,
                 what="3 ticks of events from uk")  # fmt: skip
        rows = tree(data, "uk")
        print("\nuk:\n" + "\n".join(rows[: 2 * len(C_TICK)]))
        assert len(rows) >= 2 * len(C_TICK), rows
        for row, pattern in zip(rows[: 2 * len(C_TICK)], C_TICK * 2, strict=True):
            assert matches(row, pattern), (row, pattern, rows[: 2 * len(C_TICK)])
        # The image is not relocated: an event's address is its symbol's value.
        name = function_at(symbols, addresses(symbols, "a", "b", "fact", "work"))
        assert {name(r) for r in events(app_records(data, "uk"))} == {"a", "b", "fact", "work"}
        assert (
            tree(data, "uk")[: len(C_TICK)]
            == tree(data, "uk", "--symbols", str(symbols))[: len(C_TICK)]
        )

        out = switch(data, "uk", "on", "-f", "fact")
        assert out == "uk: tracing on for 1 address range\n", out
        mark = after_settling(data, "uk")
        wait_for(lambda: len(new_events(data, "uk", mark)) >= 3 * 6, timeout=60,
                 what="fact's events from uk")  # fmt: skip
        assert {name(r) for r in new_events(data, "uk", mark)} == {"fact"}
        # fact's caller is named (work), its own calls nest: fact(3) → fact(2) → fact(1).
        last = tree(data, "uk")[-3:]
        assert last == ["work → fact", "  fact", "    fact"], last
        print(f"uk after -f fact: {last}")

        assert switch(data, "uk", "off") == "uk: tracing off\n"
        time.sleep(2.0)  # what was recorded before the switch is stored
        count = len(events(app_records(data, "uk")))
        tick_count = len(ticks(app_records(data, "uk")))
        time.sleep(4.0)
        rows = app_records(data, "uk")
        assert len(events(rows)) == count
        assert len(ticks(rows)) >= tick_count + 8  # 4 ticks/s
        assert ps(data)["uk"]["state"] == "running"
    finally:
        down = umon("down", "--data", str(data))
        assert down.returncode == 0, down.stderr
    nothing_left(data, bridge, taps, before)
