#!/usr/bin/env python3
"""Build the real unikernel test guests, once: cached under build/unikernels/.

    python3 guests/build.py KIND [KIND ...]     # unikraft, nanos, rumprun

Each KIND has a recipe, ``guests/KIND/build.sh SOURCES OUT``, that builds offline from
the public sources in SOURCES/KIND (``../shared/unikernels`` beside the checkout, or
``$UMONITOR_UNIKERNEL_SOURCES``) into the empty directory OUT. The result is kept in
``build/unikernels/KIND-KEY``, where KEY hashes everything the build reads: the source
files (checked against SOURCES/SHA256SUMS first), the recipe directory and the C code
the guests are compiled from. A second run with the same inputs prints the directory
at once; a changed input builds anew and removes the older result.

Prints one directory per KIND on stdout. A missing or altered source is one sentence
on stderr and exit status 2; a failed build is the recipe's own report and status 1.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("unikraft", "nanos", "rumprun")
# What every build uses besides its recipe's own directory: the shared shell and C code.
GUEST_CODE = (
    ROOT / "guests" / "lib.sh",
    ROOT / "src" / "umonitor" / "guest" / "c",
    ROOT / "src" / "umonitor" / "guest" / "demo",
    ROOT / "tests" / "c",
)
CACHE = ROOT / "build" / "unikernels"


class SourcesMissing(Exception):
    """The unikernel sources are not where the build looks, or not the expected files."""


def sources_dir() -> Path:
    configured = os.environ.get("UMONITOR_UNIKERNEL_SOURCES")
    return Path(configured) if configured else ROOT.parent / "shared" / "unikernels"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checked_sources(kind: str, sources: Path) -> list[tuple[str, str]]:
    """(path, sha256) of KIND's source files, each verified against SHA256SUMS."""
    sums = sources / "SHA256SUMS"
    where = "set UMONITOR_UNIKERNEL_SOURCES to the directory that holds them"
    if not sums.is_file():
        raise SourcesMissing(
            f"the unikernel sources are not in {sources} (no SHA256SUMS there): put the "
            f"Unikraft, Nanos and rumprun tarballs there (docs/unikernels.md) or {where}"
        )
    listed: list[tuple[str, str]] = []
    for line in sums.read_text().splitlines():
        digest, _, name = line.strip().partition("  ")
        if name.startswith(f"{kind}/"):
            listed.append((name, digest))
    if not listed:
        raise SourcesMissing(f"{sums} lists no {kind} sources; {where}")
    for name, digest in listed:
        path = sources / name
        if not path.is_file():
            raise SourcesMissing(f"{path} is missing; {where}")
        if _sha256(path) != digest:
            raise SourcesMissing(f"{path} does not match its SHA256SUMS line; fetch it again")
    return listed


def cache_key(kind: str, listed: list[tuple[str, str]]) -> str:
    """A hash of every input of KIND's build: sources, recipe, guest code."""
    digest = hashlib.sha256()
    for name, sha in listed:
        digest.update(f"source {name} {sha}\n".encode())
    for top in (ROOT / "guests" / kind, *GUEST_CODE):
        files = [top] if top.is_file() else top.rglob("*")
        for path in sorted(p for p in files if p.is_file()):
            if "__pycache__" in path.parts:
                continue
            digest.update(f"file {path.relative_to(ROOT)} {_sha256(path)}\n".encode())
    return digest.hexdigest()[:16]


def build(kind: str, sources: Path) -> Path:
    """KIND's built guests: from the cache, or built now (one build at a time)."""
    if kind not in KINDS:
        raise SourcesMissing(f"unknown guest kind {kind!r}; use one of {', '.join(KINDS)}")
    listed = checked_sources(kind, sources)
    done = CACHE / f"{kind}-{cache_key(kind, listed)}"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs must not build into one place
        if (done / ".complete").exists():
            return done
        partial = done.with_name(done.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        started = time.monotonic()
        print(f"building the {kind} test guests (cached in {done})", file=sys.stderr)
        recipe = ROOT / "guests" / kind / "build.sh"
        result = subprocess.run(
            ["bash", str(recipe), str(sources.resolve()), str(partial)],
            cwd=ROOT,
            stdout=sys.stderr,
        )
        if result.returncode != 0:
            raise BuildFailed(f"the {kind} guest build failed (status {result.returncode})")
        (partial / ".complete").write_text(f"{time.monotonic() - started:.0f} s\n")
        for old in CACHE.glob(f"{kind}-*"):
            if old != partial:
                shutil.rmtree(old, ignore_errors=True)
        partial.rename(done)
        return done


class BuildFailed(Exception):
    """A recipe exited with an error (it has printed why)."""


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    sources = sources_dir()
    try:
        for kind in argv:
            print(build(kind, sources))
    except SourcesMissing as exc:
        print(f"guests: {exc}", file=sys.stderr)
        return 2
    except BuildFailed as exc:
        print(f"guests: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
