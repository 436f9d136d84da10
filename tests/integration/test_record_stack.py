"""The C library's error records carry their call stack, and `logs` shows it symbolized.

``tests/c/stack_guest.c`` (compiled here with the library, position-independent, with
frame pointers) logs an error two calls down (``main`` -> ``outer`` -> ``inner``) and a
notice from ``main``, to a real collector. The error record's ``umon.stack`` must
symbolize, with the program as symbols, to ``inner``, ``outer`` and ``main`` with lines
inside them, in ``logs`` (``  at inner (stack_guest.c:N)`` under the record) and in
``logs -o json`` (a ``stack`` array); the notice carries no stack.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from tests.integration.conftest import Collector
from tests.unit.test_library_stack import compile_guest, function_lines


def test_error_record_stack_symbolized_by_logs(collector: Collector, tmp_path: Path) -> None:
    binary = compile_guest(tmp_path / "stack_guest", "-fno-omit-frame-pointer", "-fPIE", "-pie")
    done = subprocess.run(
        [str(binary), "127.0.0.1", str(collector.port), "stacks"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr

    error, notice = logs_json(collector, binary)
    assert error["message"] == "two calls down" and error["severity"] == "err"
    assert re.fullmatch(r"0x[0-9a-f]+( 0x[0-9a-f]+){2,15}", error["fields"]["umon.stack"])
    assert re.fullmatch(r"0x[0-9a-f]+", error["fields"]["umon.text"])
    first = error["stack"][:3]
    assert [f["function"] for f in first] == ["inner", "outer", "main"]
    for frame in first:
        assert Path(frame["file"]).name == "stack_guest.c"
        assert frame["line"] in function_lines(frame["function"]), frame
    assert [f["address"] for f in error["stack"]] == error["fields"]["umon.stack"].split()
    assert "stack" not in notice and "umon.stack" not in notice["fields"]

    text = collector.cli("logs", "stacks", "--symbols", str(binary))
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    at = next(n for n, line in enumerate(lines) if "two calls down" in line)
    line = function_lines("inner")
    assert re.fullmatch(r"  at inner \(stack_guest\.c:(\d+)\)", lines[at + 1]), lines[at + 1]
    assert int(lines[at + 1].rsplit(":", 1)[1].rstrip(")")) in line
    assert lines[at + 2].startswith("  at outer (stack_guest.c:")
    assert lines[at + 3].startswith("  at main (stack_guest.c:")
    assert "no stack at notice" in lines[-1]  # the notice follows its frames, none of its own

    plain = collector.cli("logs", "stacks")  # no symbols known for this instance
    assert plain.returncode == 0, plain.stderr
    assert re.search(r"\n  at 0x[0-9a-f]+\n", plain.stdout), plain.stdout


def logs_json(collector: Collector, symbols: Path) -> list[dict[str, Any]]:
    out = collector.cli("logs", "stacks", "-o", "json", "--symbols", str(symbols))
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]
