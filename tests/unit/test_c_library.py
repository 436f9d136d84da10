"""The C guest library builds cleanly with gcc and clang and speaks the vectors.

How this works: a module-scoped fixture compiles the library and every C program
that uses it once per toolchain (gcc, clang, and gcc with AddressSanitizer and
UBSan) into a temporary directory, with warnings as errors. ``vector_tool`` then
drives the library's own wire codec: every valid vector a guest sends (and PING,
PONG) must come out of the C encoder byte for byte, every frame a guest receives
must be read back by the C decoder, and bytes the guest must refuse give INVALID.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "src" / "umonitor" / "guest" / "c"
TESTS_C = ROOT / "tests" / "c"
DEMO = ROOT / "src" / "umonitor" / "guest" / "demo" / "demo_app.c"
VECTORS: dict[str, Any] = json.loads((ROOT / "tests" / "vectors" / "native.json").read_text())

STRICT = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2"]
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g"]
SANITIZER_ENV = {
    "ASAN_OPTIONS": "detect_leaks=0:halt_on_error=1",
    "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
}

# program name -> (sources, extra flags)
PROGRAMS: dict[str, tuple[list[Path], list[str]]] = {
    "vector_tool": ([TESTS_C / "vector_tool.c", LIB / "umonitor.c"], []),
    "numbered_guest": ([TESTS_C / "numbered_guest.c", LIB / "umonitor.c"], []),
    "numbered_guest_threads": (
        [TESTS_C / "numbered_guest.c", LIB / "umonitor.c"],
        ["-DUMON_THREADS", "-pthread"],
    ),
    "legacy_guest": ([TESTS_C / "legacy_guest.c", LIB / "umonitor_compat.c"], []),
    "control_guest": ([TESTS_C / "control_guest.c", LIB / "umonitor.c"], []),
    "trace_guest": (
        [TESTS_C / "trace_guest.c", LIB / "umonitor.c"],
        ["-finstrument-functions"],
    ),
    "demo_app": ([DEMO, LIB / "umonitor.c"], []),
}

# toolchain -> (compiler, extra flags, programs built)
TOOLCHAINS: dict[str, tuple[str, list[str], tuple[str, ...]]] = {
    "gcc": ("gcc", [], tuple(PROGRAMS)),
    "clang": ("clang", [], tuple(PROGRAMS)),
    "gcc-asan": ("gcc", SANITIZE, tuple(PROGRAMS)),
}

GUEST_SENDS = {"HELLO", "RECORD", "DROPPED", "BYE", "LEVEL", "TRACE", "PING", "PONG"}
GUEST_RECEIVES = {"ACK", "SET_LEVEL", "SET_TRACE", "PING", "PONG", "ERROR"}
HOST_TYPE_BYTES = {"81", "82", "83"}  # ACK, SET_LEVEL, SET_TRACE: fine for a guest to receive


class Build:
    """The programs one toolchain produced, and how to run them."""

    def __init__(self, toolchain: str, programs: dict[str, Path]) -> None:
        self.toolchain = toolchain
        self.programs = programs
        self.env = {**os.environ, **SANITIZER_ENV} if "asan" in toolchain else None

    def run(self, program: str, *args: str, expect: int = 0, quiet: bool = True) -> str:
        done = subprocess.run(
            [str(self.programs[program]), *args],
            capture_output=True,
            env=self.env,
            timeout=60,
        )
        stderr = done.stderr.decode("utf-8", "replace")
        assert done.returncode == expect, f"{program} {args!r} exited {done.returncode}: {stderr}"
        if expect == 0 and quiet:
            assert stderr == "", f"{program} wrote to stderr: {stderr}"
        return done.stdout.decode("utf-8").rstrip("\n")


@pytest.fixture(scope="module", params=list(TOOLCHAINS))
def build(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Build:
    toolchain = request.param
    compiler, flags, names = TOOLCHAINS[toolchain]
    if shutil.which(compiler) is None:
        pytest.fail(
            f"{compiler} is not installed; the C guest library must build with both gcc "
            f"and clang (install it, e.g. `apt-get install {compiler}`)",
            pytrace=False,
        )
    out = tmp_path_factory.mktemp(f"c-{toolchain}")
    programs: dict[str, Path] = {}
    for name in names:
        sources, extra = PROGRAMS[name]
        exe = out / name
        cmd = [compiler, *STRICT, *flags, *extra, f"-I{LIB}", "-o", str(exe), *map(str, sources)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stderr}"
        assert done.stderr == "", f"{' '.join(cmd)} printed diagnostics:\n{done.stderr}"
        programs[name] = exe
    return Build(toolchain, programs)


def _valid(*types: str) -> list[Any]:
    return [
        pytest.param(case, id=case["name"])
        for case in VECTORS["valid"]
        if case["frame"]["type"] in types
    ]


def _encode_args(frame: dict[str, Any]) -> list[str]:
    kind = frame["type"]
    if kind == "HELLO":
        level = [str(frame["level"]) if "level" in frame else "none"]
        trace = ["trace"] if frame.get("tracing") else []
        hello = [frame["boot_id"], frame["name"], frame["token"], frame["library"], *level, *trace]
        return ["encode-hello", *hello]
    if kind == "RECORD":
        wall = "none" if frame["wall_ns"] is None else str(frame["wall_ns"])
        fields = [f"{key}={value}" for key, value in frame["fields"]]
        return [
            "encode-record",
            str(frame["seq"]),
            str(frame["mono_ns"]),
            wall,
            str(frame["severity"]),
            str(frame["kind"]),
            frame["file"],
            str(frame["line"]),
            frame["function"],
            frame["message"],
            *fields,
        ]
    if kind == "DROPPED":
        return ["encode-dropped", str(frame["count"]), str(frame["through_seq"])]
    if kind == "BYE":
        return ["encode-bye"]
    if kind == "LEVEL":
        return ["encode-level", str(frame["level"])]
    if kind == "TRACE":
        return ["encode-trace", str(int(frame["on"])), str(frame["ranges"])]
    return [f"encode-{kind.lower()}", str(frame["nonce"])]


def _decoded(frame: dict[str, Any]) -> str:
    kind = frame["type"]
    if kind == "ACK":
        return f"ACK {frame['seq']}"
    if kind == "SET_LEVEL":
        return f"SET_LEVEL {frame['level']}"
    if kind == "SET_TRACE":
        ranges = "".join(f" {start}-{end}" for start, end in frame["ranges"])
        return f"SET_TRACE {int(frame['on'])} {frame['anchor']}{ranges}"
    if kind == "ERROR":
        return f"ERROR {frame['code']} {frame['reason']}"
    return f"{kind} {frame['nonce']}"


def test_every_vector_type_is_checked() -> None:
    types = {case["frame"]["type"] for case in VECTORS["valid"]}
    assert types <= GUEST_SENDS | GUEST_RECEIVES


def test_builds_warning_free(build: Build) -> None:
    for exe in build.programs.values():
        assert exe.is_file()


@pytest.mark.parametrize("case", _valid(*GUEST_SENDS))
def test_encoder_matches_vector(build: Build, case: dict[str, Any]) -> None:
    assert build.run("vector_tool", *_encode_args(case["frame"])) == case["hex"]


@pytest.mark.parametrize("case", _valid(*GUEST_RECEIVES))
def test_decoder_reads_vector(build: Build, case: dict[str, Any]) -> None:
    assert build.run("vector_tool", "decode", case["hex"]) == _decoded(case["frame"])


INVALID_FOR_GUEST = (
    [
        pytest.param(case["hex"], id=f"vector: {case['name']}")
        for case in VECTORS["invalid"]
        if case["hex"][8:10] not in HOST_TYPE_BYTES
    ]
    + [
        pytest.param(case["hex"], id=f"guest frame: {case['name']}")
        for case in VECTORS["valid"]
        if case["frame"]["type"] not in GUEST_RECEIVES
    ]
    + [
        pytest.param(case["hex"], id=f"host vector: {case['name']}")
        for case in VECTORS["invalid_from_host"]
    ]
    + [
        pytest.param("0001000081", id="declared length over max frame"),
        pytest.param("0000fffd7f0001", id="error one byte over max frame"),
        pytest.param("ffffffff7f", id="declared length 4 GiB"),
        pytest.param("0000000a8100000000000003e800", id="ack body 9 bytes"),
        pytest.param("0000000881000000000003e8", id="ack body 7 bytes"),
        pytest.param("00000003820400", id="set level body 2 bytes"),
        pytest.param("0000000182", id="set level empty body"),
        pytest.param("000000028208", id="set level 8"),
        pytest.param("0000000411000000", id="pong body 3 bytes"),
        pytest.param("000000027f00", id="error without a code"),
        pytest.param("0000000105", id="unknown type 0x05"),
        pytest.param("0000000180", id="unknown type 0x80"),
        pytest.param("00000009830000000000000001", id="set trace body 8 bytes"),
        pytest.param("00000009840000000000000001", id="unknown type 0x84"),
        pytest.param("00000009810000", id="truncated ack"),
        pytest.param("000000098100000000000003e8000000028204", id="two frames"),
        pytest.param("", id="no bytes"),
    ]
)


@pytest.mark.parametrize("hex_bytes", INVALID_FOR_GUEST)
def test_decoder_rejects(build: Build, hex_bytes: str) -> None:
    assert build.run("vector_tool", "decode", hex_bytes) == "INVALID"


def test_decoder_reads_error_with_empty_reason(build: Build) -> None:
    assert build.run("vector_tool", "decode", "000000037f0006") == "ERROR 6 "


def test_encoder_refuses_an_empty_instance_name(build: Build) -> None:
    build.run("vector_tool", "encode-hello", "00" * 16, "", "", "", expect=2)


def test_record_fields_keep_their_order_and_utf8(build: Build) -> None:
    hex_frame = build.run(
        "vector_tool",
        "encode-record",
        "7",
        "0",
        "none",
        "6",
        "0",
        "f.c",
        "1",
        "fn",
        "msg",
        "z=1",
        "a=caf\u00e9",
        "k=",
    )
    frame = bytes.fromhex(hex_frame)
    assert frame[4] == 0x02
    assert frame[5 + 27] == 3  # nfields
    assert b"\x01\x00\x01z1\x01\x00\x05acaf\xc3\xa9\x01\x00\x00k" in frame
    assert frame.endswith(b"msg")


def test_demo_runs_without_a_collector(build: Build) -> None:
    out = build.run("demo_app", "umon.rate=100000 umon.count=24", quiet=False)
    assert out.startswith("demo_app: logged=")
    assert " acked=0 " in out


@pytest.mark.parametrize(
    ("program", "args"),
    [
        ("numbered_guest", []),
        ("numbered_guest", ["127.0.0.1", "x", "name", "1"]),
        ("numbered_guest", ["127.0.0.1", "1", "name", "1", "--bogus"]),
        ("legacy_guest", ["2333"]),
        ("control_guest", ["127.0.0.1", "0", "name"]),
        ("vector_tool", ["encode-ping"]),
        ("vector_tool", ["encode-level", "8"]),
        ("vector_tool", ["decode", "zz"]),
    ],
)
def test_usage_errors_exit_2(build: Build, program: str, args: list[str]) -> None:
    build.run(program, *args, expect=2)
