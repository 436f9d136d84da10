"""Instrumented C programs send the records they should to a real collector.

tests/c/instrument_sample.c, rewritten by ``umonitor instrument`` and built with the C
library, runs against a collector (UMON_CONFIG); ``umonitor logs NAME -o json`` must
then show, call by call and in order, an enter record with each parameter's value
and an exit record with the value returned, at the original file and lines.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from tests.integration.conftest import C_SRC, ROOT, Collector, umonitor

SAMPLE = ROOT / "tests" / "c" / "instrument_sample.c"
PTR = re.compile(r"0x[0-9a-f]+")


def line_of(text: str) -> int:
    """The line of SAMPLE that holds ``text`` (once)."""
    lines = [n for n, line in enumerate(SAMPLE.read_text().splitlines(), 1) if text in line]
    assert len(lines) == 1, (text, lines)
    return lines[0]


def build_sample(tmp_path: Path) -> Path:
    out = tmp_path / "instrumented"
    done = umonitor("instrument", str(SAMPLE.relative_to(ROOT)), "-o", str(out))
    assert done.returncode == 0, done.stderr
    cc = shutil.which("gcc")
    assert cc, "gcc is needed: apt-get install gcc"
    program = tmp_path / "sample"
    subprocess.run(
        [cc, "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", f"-I{C_SRC}", "-o", str(program),
         str(out / SAMPLE.name), str(C_SRC / "umonitor.c")],
        check=True,
    )  # fmt: skip
    return program


def test_records_of_an_instrumented_program(tmp_path: Path, collector: Collector) -> None:
    program = build_sample(tmp_path)
    env = {**os.environ, "UMON_CONFIG": f"umon.collector=127.0.0.1:{collector.port} umon.name=inst"}
    run = subprocess.run([program], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert run.returncode == 0, run.stderr
    records = collector.records("inst")
    calls = [(r["kind"], r["function"], r["fields"]) for r in records]
    pointers: dict[str, str] = {}

    def ptr(key: str) -> str:  # any address; the same key must be the same address
        return f"<{key}>"

    expected = [
        ("enter", "main", {}),
        ("enter", "say", {"what": "hello"}),
        ("exit", "say", {}),
        ("enter", "say", {"what": "NULL"}),
        ("exit", "say", {}),
        ("enter", "add", {"a": "2", "b": "3"}),
        ("exit", "add", {"return": "5"}),
        ("enter", "apply", {"op": ptr("sub"), "a": "9", "b": "4"}),
        ("enter", "sub", {"a": "9", "b": "4"}),
        ("exit", "sub", {"return": "5"}),
        ("exit", "apply", {"return": "5"}),
        ("enter", "scale", {"f": "1.5", "g": "2", "c": "3", "u": "4", "col": "5"}),
        ("exit", "scale", {"return": "15"}),
        ("enter", "scale", {"f": "-1", "g": "0", "c": "0", "u": "0", "col": "0"}),
        ("exit", "scale", {"return": "-1"}),
        ("enter", "mk", {"x": "1"}),
        ("exit", "mk", {"return": ptr("mk result")}),
        ("enter", "name_of", {"s": "abc", "argv": ptr("args"), "p": ptr("p"), "arr": ptr("arr")}),
        ("exit", "name_of", {"return": "abc"}),
        ("enter", "mk", {"x": "1"}),
        ("exit", "mk", {"return": ptr("mk result")}),
        ("enter", "name_of", {"s": "NULL", "argv": ptr("args"), "p": ptr("p"), "arr": ptr("arr")}),
        ("exit", "name_of", {"return": "none"}),
        ("enter", "sum", {"n": "3"}),
        ("exit", "sum", {"return": "60"}),
        ("enter", "cleanup", {"fail": "1"}),
        ("exit", "cleanup", {"return": "-1"}),
        ("enter", "cleanup", {"fail": "0"}),
        ("exit", "cleanup", {"return": "2"}),
        # sizes() uses `2 KB` (a macro as an operator): left as it was, no records
        ("enter", "pick", {"which": "1"}),
        ("exit", "pick", {"return": ptr("sub")}),
        ("enter", "sub", {"a": "7", "b": "2"}),
        ("exit", "sub", {"return": "5"}),
        ("enter", "pick", {"which": "0"}),
        ("exit", "pick", {"return": "(nil)"}),
        ("enter", "multi", {"a": "7", "b": "8"}),
        ("exit", "multi", {"return": "15"}),
        ("enter", "big", {"s": "-5", "w": "65535", "ch": "65", "flag": "1"}),
        ("exit", "big", {"return": "65606"}),
        ("enter", "first_line", {"text": "a" * 64}),  # cut at UMON_I_STRING_MAX
        ("exit", "first_line", {"return": "a" * 64}),
        ("enter", "ticks", {"base": "100", "d": ptr("d")}),  # by _Generic, in the header
        ("exit", "ticks", {"return": "103"}),
    ]
    assert len(calls) == len(expected), calls
    for (kind, function, fields), want in zip(calls, expected, strict=True):
        assert (kind, function, list(fields)) == (want[0], want[1], list(want[2])), calls
        for key, value in fields.items():
            spec = want[2][key]
            if spec.startswith("<"):
                assert PTR.fullmatch(value), (function, key, value)
                assert pointers.setdefault(spec, value) == value, (function, key, value)
            else:
                assert value == spec, (function, key, value)
    assert pointers["<sub>"] != pointers["<args>"]

    # The records carry the original file and lines: the name's line on entry, the
    # return statement's (or the closing brace's) on exit.
    where = [(r["kind"], r["function"], r["file"], r["line"]) for r in records]
    file = str(SAMPLE.relative_to(ROOT))
    assert where[1:5] == [
        ("enter", "say", file, line_of("static void say(")),
        ("exit", "say", file, line_of('printf("say %s\\n", what);') + 1),  # the closing brace
        ("enter", "say", file, line_of("static void say(")),
        ("exit", "say", file, line_of("if (what == NULL)") + 1),  # `return;`
    ]
    assert ("exit", "multi", file, line_of("        + b;") - 1) in where  # where `return` is
    assert ("exit", "cleanup", file, line_of("return rc;")) in where
