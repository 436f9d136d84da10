"""The real unikernel test guests: built by guests/build.py, once, cached under build/.

Without the sources (``../shared/unikernels`` or ``$UMONITOR_UNIKERNEL_SOURCES``) a
test that needs a guest fails with the build driver's one sentence saying where to
put them; it is never skipped.

``UMONITOR_BUILT_<KIND>`` (``UMONITOR_BUILT_UNIKRAFT=/tmp/uk``) names a directory that
already holds what ``guests/KIND/build.sh`` writes, and is used as it is, unbuilt and
unchecked: for running one test against guests built by hand, on a machine that must
not build them now.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "guests" / "build.py"
CRASH_APP = ROOT / "src" / "umonitor" / "guest" / "demo" / "crash_app.c"


def crash_app_lines(name: str) -> range:
    """The source lines of crash_app.c's function ``name``, declaration to closing brace:
    where a frame of that function may point."""
    lines = CRASH_APP.read_text().splitlines()
    declared = re.compile(rf"^(static |int ).*\b{name}\(.*\)$")
    start = next(n for n, line in enumerate(lines, 1) if declared.match(line))
    end = next(n for n in range(start, len(lines) + 1) if lines[n - 1] == "}")
    return range(start, end + 1)


def built(kind: str) -> Path:
    """The directory holding ``kind``'s built guests (guests/KIND/build.sh says which)."""
    given = os.environ.get(f"UMONITOR_BUILT_{kind.upper()}")
    if given:
        return Path(given)
    out = subprocess.run(
        [sys.executable, str(BUILD), kind], capture_output=True, text=True, timeout=3600
    )
    if out.returncode == 2:
        pytest.fail(out.stderr.strip(), pytrace=False)
    assert out.returncode == 0, f"the {kind} guests did not build:\n{out.stderr[-4000:]}"
    return Path(out.stdout.split()[-1])
