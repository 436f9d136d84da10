"""The host's tools the image builder runs: apt and dpkg-deb, the C and C++ compilers,
strip.

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
CXX = "g++"
CXX_SUFFIXES = (".cc", ".cpp", ".cxx")
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
    """Compile and link ``sources`` into ``output`` in one step.

    A failure in the user's code is a UsageError; in ours (init), most likely a
    missing static C library, an EnvironmentProblem.
    """
    argv = [cc, *flags, "-o", str(output), *map(str, sources)]
    _run_compiler(argv, "compiling", sources, user_code=user_code)


def is_cxx(source: Path) -> bool:
    """Whether a source file is C++ (by its suffix: .cc, .cpp, .cxx), else C."""
    return source.suffix.lower() in CXX_SUFFIXES


def compile_app(
    sources: Sequence[Path],
    library: Sequence[Path],
    output: Path,
    work: Path,
    flags: Sequence[str],
    user_flags: Sequence[str] = (),
    link_flags: Sequence[str] = (),
) -> None:
    """Compile the application and link it statically into ``output``.

    Each of ``sources`` (the user's) is compiled with ``flags`` then ``user_flags``,
    C with gcc and C++ with g++; each of ``library`` (C, ours) with ``flags`` only.
    The objects go to ``work``; they are linked with ``flags`` and ``user_flags``, by
    g++ when any source is C++ (it brings the C++ runtime), else by gcc, with
    ``link_flags`` after the objects (libraries: ``-lm``; in a static link a
    library resolves only what the objects before it need). A compile or
    link failure is a UsageError; a missing g++ or static C++ library, an
    EnvironmentProblem naming the Debian package.
    """
    cxx = any(is_cxx(s) for s in sources)
    cc = find_tool(CC, "gcc")
    gxx = find_tool(CXX, "g++") if cxx else cc
    if cxx:
        _check_static_libstdcxx(gxx)
    objects_dir = work / "objects"
    objects_dir.mkdir(exist_ok=True)
    objects = []
    units = [(s, user_flags) for s in sources] + [(s, ()) for s in library]
    for number, (source, extra) in enumerate(units):
        obj = objects_dir / f"{number}-{source.stem}.o"
        compiler = gxx if is_cxx(source) else cc
        argv = [compiler, *flags, *extra, "-c", "-o", str(obj), str(source)]
        _run_compiler(argv, "compiling", [source], user_code=True)
        objects.append(obj)
    argv = [gxx, *flags, *user_flags, "-o", str(output), *map(str, objects), *link_flags]
    _run_compiler(argv, "linking", [*sources, *library], user_code=True)


def _check_static_libstdcxx(gxx: str) -> None:
    """EnvironmentProblem unless g++ finds libstdc++.a (it answers the bare name if not)."""
    found = subprocess.run(
        [gxx, "-print-file-name=libstdc++.a"], capture_output=True, text=True, check=False
    ).stdout.strip()
    if Path(found).is_absolute() and Path(found).is_file():
        return
    version = subprocess.run(
        [gxx, "-dumpversion"], capture_output=True, text=True, check=False
    ).stdout.strip()
    package = f"libstdc++-{version.split('.')[0]}-dev" if version else "libstdc++-dev"
    raise EnvironmentProblem(
        f"linking C++ statically needs libstdc++.a, which {gxx} does not find "
        f"(Debian: apt-get install {package})"
    )


def _run_compiler(
    argv: Sequence[str], doing: str, sources: Sequence[Path], *, user_code: bool
) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode == 0:
        return
    detail = "\n".join(done.stderr.strip().splitlines()[-20:])
    if user_code:
        raise UsageError(f"{doing} {' '.join(map(str, sources))} failed:\n{detail}")
    raise EnvironmentProblem(
        f"{doing} {sources[0].name} failed (a static C library is needed: Debian "
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
