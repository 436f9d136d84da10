"""Function tracing end to end: programs built with -finstrument-functions and the C
library (``tests/c/trace_guest.c`` and its C++ twin), a real collector, the CLI in a
subprocess: off at start, switched on and off while the program runs, limited to
functions by name, shown as a symbolized call tree."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import C_SRC, ROOT, Collector
from tests.integration.test_control import run_polling
from umonitor.guest.client import Client
from umonitor.records import Severity

TESTS_C = ROOT / "tests" / "c"
WARNINGS = ["-Wall", "-Wextra", "-Werror", "-pedantic", "-O2", "-g"]


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """trace_guest (C) and trace_guest_cxx (C++), the library instrumented too."""
    gcc, gxx = shutil.which("gcc"), shutil.which("g++")
    assert gcc and gxx, "gcc and g++ are needed: apt-get install gcc g++"
    out = tmp_path_factory.mktemp("trace")
    lib = out / "umonitor.o"
    flags = [*WARNINGS, "-finstrument-functions", f"-I{C_SRC}"]
    subprocess.run(
        [gcc, "-std=c99", *flags, "-c", "-o", str(lib), str(C_SRC / "umonitor.c")], check=True
    )
    c, cxx = out / "trace_guest", out / "trace_guest_cxx"
    subprocess.run(
        [gcc, "-std=c99", *flags, "-o", str(c), str(TESTS_C / "trace_guest.c"), str(lib)],
        check=True,
    )
    subprocess.run(
        [gxx, "-std=c++17", *flags, "-o", str(cxx), str(TESTS_C / "trace_guest.cpp"), str(lib)],
        check=True,
    )
    return {"c": c, "cxx": cxx}


class Guest:
    """A trace guest, driven over its stdin and stdout."""

    def __init__(self, program: Path, port: int, name: str) -> None:
        self.program = program
        self.proc = subprocess.Popen(
            [str(program), "127.0.0.1", str(port), name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def say(self, command: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def quit(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("quit\n")
        self.proc.communicate(timeout=30)
        assert self.proc.returncode == 0


@pytest.fixture
def c_guest(collector: Collector, programs: dict[str, Path]) -> Iterator[Guest]:
    guest = Guest(programs["c"], collector.port, "tc")
    assert guest.say("trace") == "trace 0"  # connected (it polls) and off
    yield guest
    guest.quit()


@pytest.fixture
def cxx_guest(collector: Collector, programs: dict[str, Path]) -> Iterator[Guest]:
    guest = Guest(programs["cxx"], collector.port, "tx")
    assert guest.say("trace") == "trace 0"
    yield guest
    guest.quit()


def ok(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 0, out.stderr
    return out.stdout


def switch(c: Collector, name: str, *args: str) -> str:
    """``trace NAME on|off ...``: retried while the guest's HELLO is not in yet."""
    out = c.cli("trace", name, *args)
    for _ in range(50):
        if "not connected" not in out.stderr:
            break
        threading.Event().wait(0.1)
        out = c.cli("trace", name, *args)
    return ok(out)


def tree(c: Collector, name: str, program: Path) -> list[str]:
    """The tree's lines without the duration column, each indented as shown."""
    lines = ok(c.cli("trace", name, "--symbols", str(program))).splitlines()
    assert lines[0].startswith("boot ")
    rows = []
    for line in lines[1:]:
        found = re.fullmatch(r" *(\d+(?:\.\d+)? (?:ns|µs|ms|s)|\?)  (.*)", line)
        assert found, line
        rows.append(found.group(2))
    return rows


def trace_kinds(c: Collector, name: str) -> list[str]:
    return [str(r["kind"]) for r in c.records(name) if r["kind"] in ("enter", "exit")]


def test_c_program_traced_on_and_off(collector: Collector, c_guest: Guest) -> None:
    assert c_guest.say("run") == "ran 0"  # off by default: the hooks send nothing
    out = collector.cli("trace", "tc")
    assert out.returncode == 0 and "no function trace recorded" in out.stderr

    assert switch(collector, "tc", "on") == "tc: tracing on\n"
    assert c_guest.say("trace") == "trace 1"
    assert c_guest.say("run") == "ran 14"  # 7 calls, an enter and an exit each
    rows = tree(collector, "tc", c_guest.program)
    assert rows[:2] == ["main → work", "  a"]
    assert re.fullmatch(r"    b ×2 \(avg \d+(\.\d+)? (ns|µs)\)", rows[2]), rows[2]
    assert rows[3:] == ["  fact", "    fact", "      fact"]
    records = [r for r in collector.records("tc") if r["kind"] in ("enter", "exit")]
    assert all(r["severity"] == "debug" and r["message"] == "" for r in records)
    assert {k for r in records for k in dict(r["fields"])} == {"fn", "caller", "umon.text"}

    assert switch(collector, "tc", "off") == "tc: tracing off\n"
    assert c_guest.say("run") == "ran 0"
    assert len(trace_kinds(collector, "tc")) == 14


def test_function_filter_sends_only_those_functions(collector: Collector, c_guest: Guest) -> None:
    program = str(c_guest.program)
    out = switch(collector, "tc", "on", "--function", "b*", "--symbols", program)
    assert out == "tc: tracing on for 1 address range\n"
    assert c_guest.say("run") == "ran 4"  # b twice
    rows = tree(collector, "tc", c_guest.program)
    assert len(rows) == 1 and rows[0].startswith("a → b ×2 (avg ")

    out = switch(collector, "tc", "on", "-f", "b", "-f", "fact", "--symbols", program)
    assert out == "tc: tracing on for 2 address ranges\n"
    assert c_guest.say("run") == "ran 10"
    switch(collector, "tc", "off")


def test_records_dropped_while_the_host_stalls_are_marked_in_the_tree(
    collector: Collector, c_guest: Guest
) -> None:
    """A guest that never blocks drops events while the collector cannot take them;
    the tree says where, rather than showing calls that seem to have no exit."""
    switch(collector, "tc", "on")
    collector.proc.send_signal(signal.SIGSTOP)
    try:
        # 20,000 x 14 events, about 30 MB: more than the ring and both socket buffers.
        reply = c_guest.say("burst 20000").split()
    finally:
        collector.proc.send_signal(signal.SIGCONT)
    assert reply[:2] == ["burst", "280000"], reply
    dropped = int(reply[2])
    assert dropped > 0, reply
    assert c_guest.say("run") == "ran 14"  # everything the guest kept is acknowledged
    switch(collector, "tc", "off")
    out = ok(collector.cli("trace", "tc", "-n", "400000", "--symbols", str(c_guest.program)))
    marks = [int(m) for m in re.findall(r"… (\d+) records? dropped here", out)]
    assert marks, out[-2000:]
    stored = len(trace_kinds(collector, "tc"))
    # What the guest logged = what was stored + what the marks say was lost (the
    # library may count a record dropped that the host had already taken).
    assert stored + sum(marks) == 280000 + 14, (stored, marks)
    # The library counts every record it evicted (the run's 14 events evict 14 more
    # from the full ring), including any the host had already taken.
    assert 0 < sum(marks) <= dropped + 14, (marks, dropped)


def test_cxx_names_are_demangled(collector: Collector, cxx_guest: Guest) -> None:
    switch(collector, "tx", "on")
    assert cxx_guest.say("run") == "ran 10"
    assert tree(collector, "tx", cxx_guest.program) == [
        "main → work()",
        "  Counter::bump(int)",
        "    int square<int>(int)",
        "  Counter::bump(int)",
        "    int square<int>(int)",
    ]
    shown = json.loads(
        ok(collector.cli("trace", "tx", "-o", "json", "--symbols", str(cxx_guest.program)))
    )
    (work,) = shown["calls"]
    assert work["function"] == "work()" and work["caller_function"] == "main"
    assert [c["function"] for c in work["children"]] == ["Counter::bump(int)"] * 2
    assert all(c["duration_ns"] > 0 for c in work["children"])

    program = str(cxx_guest.program)
    switch(collector, "tx", "on", "-f", "square<int>", "--symbols", program)
    assert cxx_guest.say("run") == "ran 4"
    switch(collector, "tx", "on", "-f", "Counter::*", "--symbols", program)
    assert cxx_guest.say("run") == "ran 4"
    switch(collector, "tx", "off")


def test_unknown_function_and_unknown_guest_are_one_sentence(
    collector: Collector, c_guest: Guest
) -> None:
    out = collector.cli("trace", "tc", "on", "-f", "nosuch*", "--symbols", str(c_guest.program))
    assert out.returncode != 0 and out.stderr.count("\n") == 1
    assert "no function" in out.stderr and "nosuch*" in out.stderr
    out = collector.cli("trace", "ghost", "on")
    assert out.returncode != 0 and "no instance named 'ghost'" in out.stderr


def test_a_library_without_tracing_is_refused_and_stays_connected(collector: Collector) -> None:
    """The Python guest library does not say it takes SET_TRACE: nothing is sent."""
    data = str(collector.data)
    with Client("127.0.0.1", collector.port, "py") as client:
        client.log(Severity.INFO, "hello")
        assert client.flush(5)
        out = run_polling(client, "trace", "py", "on", "--data", data)
        assert out.returncode != 0
        assert "does not take function tracing" in out.stderr
        out = run_polling(client, "ping", "py", "--data", data)
        assert out.returncode == 0, out.stderr
