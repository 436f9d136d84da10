"""The host's tools the image builder runs: apt and dpkg-deb, the C compiler, strip.

A tool that is missing is an EnvironmentProblem naming the Debian package that has
it; a tool that fails is one with its own last words (apt's ``E:`` lines). A compile
failure in the user's code is a UsageError instead.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from umonitor.errors import EnvironmentProblem, UsageError

CC = "gcc"
INIT_CFLAGS = ("-std=c99", "-static", "-O2", "-Wall", "-Wextra", "-Werror")
# Frame pointers: the C library's records and its crash line carry a frame-pointer
# walk of the call stack (docs/debugging.md), which needs them in the app's code.
APP_CFLAGS = ("-static", "-O2", "-g", "-fno-omit-frame-pointer", "-Wall")


def find_tool(name: str, package: str) -> str:
    """The path of a command, or EnvironmentProblem naming the Debian package."""
    path = shutil.which(name)
    if path is None:
        raise EnvironmentProblem(f"{name} is not installed (Debian: apt-get install {package})")
    return path


def compile_c(
    cc: str, sources: Sequence[Path], output: Path, flags: Sequence[str], *, user_code: bool
) -> None:
    """Compile and link ``sources`` into ``output``.

    A failure in the user's code is a UsageError; in ours (init), most likely a
    missing static C library, an EnvironmentProblem.
    """
    argv = [cc, *flags, "-o", str(output), *map(str, sources)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode == 0:
        return
    detail = "\n".join(done.stderr.strip().splitlines()[-20:])
    if user_code:
        raise UsageError(f"compiling {' '.join(map(str, sources))} failed:\n{detail}")
    raise EnvironmentProblem(
        f"compiling {sources[0].name} failed (a static C library is needed: Debian "
        f"package libc6-dev):\n{detail}"
    )


def stripped(binary: Path, work: Path) -> bytes:
    """``binary`` without debug information (the symbol table stays), for the initrd."""
    strip = shutil.which("strip")
    if strip is None:
        return binary.read_bytes()
    target = work / (binary.name + ".stripped")
    done = subprocess.run(
        [strip, "--strip-debug", "-o", str(target), str(binary)],
        capture_output=True,
        check=False,
    )
    return target.read_bytes() if done.returncode == 0 else binary.read_bytes()


def run_tool(argv: list[str], *, what: str, cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, check=False)
    except OSError as exc:
        raise EnvironmentProblem(f"{what}: {exc}") from exc
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if line.startswith("E:")]
        detail = "; ".join(errors) or done.stderr.strip()[-500:]
        raise EnvironmentProblem(f"{what} failed: {detail}")
    return done.stdout
