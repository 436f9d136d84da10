"""``umonitor instrument`` on C nobody here wrote: lz4, as the PyPI package "lz4" bundles it.

How this works: a session fixture downloads the sdist of lz4 (pinned) with pip into
build/instrument/ once, and unpacks it there. The test instruments every function of
lz4frame.c, and the block and HC compressors' ``LZ4_compress_*`` and
``LZ4_decompress_*`` functions of lz4.c and lz4hc.c (instrumenting their inner helpers
too would log over a million records per round trip), builds tests/c/lz4_driver.c
against lz4 as it is and as rewritten, both with -std=c11 -O2 -Wall -Wextra -Werror
(which lz4 builds clean with), and runs both: their output must be identical, and the
collector must hold the calls with their parameters and results.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.integration.conftest import C_SRC, ROOT, Collector, umonitor

LZ4 = "lz4==4.4.5"
CACHE = ROOT / "build" / "instrument"
DRIVER = ROOT / "tests" / "c" / "lz4_driver.c"
FLAGS = ["-std=c11", "-O2", "-Wall", "-Wextra", "-Werror"]


@pytest.fixture(scope="session")
def lz4_sources() -> Path:
    """lz4libs/ of the lz4 sdist, downloaded from PyPI once."""
    unpacked = CACHE / "lz4-4.4.5" / "lz4libs"
    if unpacked.is_dir():
        return unpacked
    CACHE.mkdir(parents=True, exist_ok=True)
    got = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
         "--disable-pip-version-check", "-q", "-d", str(CACHE), LZ4],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    sdist = CACHE / "lz4-4.4.5.tar.gz"
    last = (got.stderr.strip().splitlines() or ["no output"])[-1]
    assert got.returncode == 0 and sdist.is_file(), f"cannot download {LZ4} from PyPI: {last}"
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith("lz4-4.4.5/lz4libs/")]
        tar.extractall(CACHE, members=members, filter="data")
    return unpacked


def build(out: Path, lz4: Path, sources: list[Path]) -> None:
    cc = shutil.which("gcc")
    assert cc, "gcc is needed: apt-get install gcc"
    subprocess.run(
        [cc, *FLAGS, f"-I{lz4}", f"-I{C_SRC}", "-o", str(out), str(DRIVER),
         *map(str, sources), str(C_SRC / "umonitor.c")],
        check=True, timeout=120,
    )  # fmt: skip


def test_lz4_instrumented_round_trips(
    tmp_path: Path, lz4_sources: Path, collector: Collector
) -> None:
    out = tmp_path / "lz4"
    frame = umonitor("instrument", str(lz4_sources / "lz4frame.c"), "-o", str(out))
    assert frame.returncode == 0, frame.stderr
    block = umonitor(
        "instrument", str(lz4_sources / "lz4.c"), str(lz4_sources / "lz4hc.c"), "-o", str(out),
        "--functions", "LZ4_compress_*", "--functions", "LZ4_decompress_*",
    )  # fmt: skip
    assert block.returncode == 0, block.stderr
    counts = re.findall(r"(\w+\.c): (\d+) functions instrumented", frame.stdout + block.stdout)
    assert {name: int(n) for name, n in counts} == {"lz4frame.c": 45, "lz4.c": 21, "lz4hc.c": 6}
    # What the parser cannot read is said, with the line: `5 MB` (a macro as an operator).
    assert f"{lz4_sources / 'lz4frame.c'}:475: LZ4F_compressFrame left as is: " in frame.stderr
    assert "could not read line 491 (a macro?)" in frame.stderr

    build(
        tmp_path / "plain",
        lz4_sources,
        [lz4_sources / n for n in ("lz4.c", "lz4frame.c", "lz4hc.c", "xxhash.c")],
    )
    build(
        tmp_path / "instrumented",
        lz4_sources,
        [out / "lz4.c", out / "lz4frame.c", out / "lz4hc.c", lz4_sources / "xxhash.c"],
    )
    plain = subprocess.run([tmp_path / "plain"], capture_output=True, text=True, timeout=60)
    assert plain.returncode == 0, plain.stdout
    env = {**os.environ, "UMON_CONFIG": f"umon.collector=127.0.0.1:{collector.port} umon.name=lz4"}
    run = subprocess.run(
        [tmp_path / "instrumented"], capture_output=True, text=True, env=env, timeout=60
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout == plain.stdout
    sizes = {kind: int(n) for kind, n in re.findall(r"^(\w+) (\d+) ", run.stdout, re.M)}

    records = collector.records("lz4")
    calls = [(r["kind"], r["function"], r["fields"]) for r in records]

    def call(function: str, nth: int = 0) -> tuple[dict[str, str], dict[str, str]]:
        """The nth call of function: its enter fields and its exit fields."""
        starts = [i for i, c in enumerate(calls) if c[:2] == ("enter", function)]
        depth, i = 0, starts[nth]
        for j in range(i, len(calls)):  # the matching exit (calls may recurse)
            if calls[j][1] == function:
                depth += 1 if calls[j][0] == "enter" else -1
                if depth == 0:
                    return calls[i][2], calls[j][2]
        raise AssertionError(f"{function} never returned: {calls}")

    args, result = call("LZ4_compress_default")
    assert args["srcSize"] == "65536" and args["maxOutputSize"] == str(
        65536 + 65536 // 255 + 16 + 1024
    )
    # `const char *src` is logged as a string: its first 64 bytes (the buffer has no NUL)
    assert args["src"] == ("the quick brown fox jumps over the lazy dog " * 2)[:64]
    assert result == {"return": str(sizes["block"])}
    args, result = call("LZ4_decompress_safe")
    assert (args["compressedSize"], args["maxDecompressedSize"]) == (str(sizes["block"]), "65536")
    assert result == {"return": "65536"}
    args, result = call("LZ4_compress_HC")
    assert (args["srcSize"], args["compressionLevel"]) == ("65536", "9")
    assert result == {"return": str(sizes["hc"])}
    args, result = call("LZ4F_compressFrame_usingCDict")
    assert args["srcSize"] == "65536" and args["cdict"] == "(nil)"
    assert result == {"return": str(sizes["frame"])}
    args, result = call("LZ4F_createDecompressionContext")
    assert args["versionNumber"] == "100" and result == {"return": "0"}
    args, result = call("LZ4F_freeDecompressionContext")
    assert result == {"return": "0"}
    assert len(records) < 2000, len(records)
