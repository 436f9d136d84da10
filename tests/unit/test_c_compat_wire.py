"""The compat library's 2018 wire switch builds cleanly, as the rest of the C library.

``-DUMON_COMPAT_WIRE_2018`` changes what ``send_log`` writes (docs/protocol.md §4);
both ways the compat source and the programs using it must compile without a
diagnostic under gcc and clang with the house flags (as tests/unit/test_c_library.py
does for the default build), and under the sanitizers. What goes on the wire is
checked over loopback in tests/integration/test_seed_guest.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "src" / "umonitor" / "guest" / "c"
TESTS_C = ROOT / "tests" / "c"

STRICT = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2"]
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g"]
SANITIZER_ENV = {
    "ASAN_OPTIONS": "detect_leaks=0:halt_on_error=1",
    "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
}
TOOLCHAINS = {"gcc": ("gcc", []), "clang": ("clang", []), "gcc-asan": ("gcc", SANITIZE)}
WIRES = {"default": [], "wire-2018": ["-DUMON_COMPAT_WIRE_2018"]}
PROGRAMS = {"seed_guest": TESTS_C / "seed_guest.c", "legacy_guest": TESTS_C / "legacy_guest.c"}


@pytest.fixture(
    scope="module",
    params=[pytest.param((t, w), id=f"{t}-{w}") for t in TOOLCHAINS for w in WIRES],
)
def programs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    toolchain, wire = request.param
    compiler, flags = TOOLCHAINS[toolchain]
    if shutil.which(compiler) is None:
        pytest.fail(f"{compiler} is not installed (apt-get install {compiler})", pytrace=False)
    out = tmp_path_factory.mktemp(f"compat-{toolchain}-{wire}")
    built = {}
    for name, source in PROGRAMS.items():
        exe = out / name
        cmd = [
            compiler,
            *STRICT,
            *flags,
            *WIRES[wire],
            f"-I{LIB}",
            "-o",
            str(exe),
            str(source),
            str(LIB / "umonitor_compat.c"),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stderr}"
        assert done.stderr == "", f"{' '.join(cmd)} printed diagnostics:\n{done.stderr}"
        built[name] = exe
    return built


def test_builds_warning_free(programs: dict[str, Path]) -> None:
    assert all(exe.is_file() for exe in programs.values())


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["2333"],
        ["2333", "16"],
        ["2333", "16", "x"],
        ["70000", "16", "40"],
        ["-1", "16", "40"],
        ["umon.count=x"],
        ["umon.count=3 stray"],
        ["umon.ip=10.0.0.2/24 umon.port=99999"],
    ],
)
def test_seed_guest_usage_errors_exit_2(programs: dict[str, Path], args: list[str]) -> None:
    done = subprocess.run(
        [str(programs["seed_guest"]), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **SANITIZER_ENV},
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("usage: seed_guest PORT COUNT GAP_MS")
