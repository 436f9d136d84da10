"""Debian's kernel packages: which version, downloaded and unpacked once into a cache.

The kernel is Debian's own (``linux-image-<version>``), fetched with ``apt-get
download`` and unpacked with ``dpkg-deb -x`` once per version into a cache directory
(``default_cache_dir``) that later builds reuse. Without a version, the newest of the
series apt knows is taken; offline, the newest one already in the cache.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

from umonitor.errors import EnvironmentProblem, UsageError
from umonitor.image.tools import find_tool, run_tool

log = logging.getLogger(__name__)

DEFAULT_SERIES = "6.1"
FLAVOUR = "amd64"
_COMPLETE = ".umonitor-complete"

_VERSION = re.compile(r"[0-9][0-9A-Za-z.+~]*(?:-[0-9A-Za-z.+~]+)*")


def default_cache_dir() -> Path:
    """Where unpacked kernels are kept: ``$XDG_CACHE_HOME/umonitor/kernels``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "umonitor" / "kernels"


def normalize_version(version: str) -> str:
    """``6.1.0-56`` or ``6.1.0-56-amd64`` as the release ``6.1.0-56-amd64``."""
    text = version.strip().removeprefix("linux-image-")
    if not _VERSION.fullmatch(text):
        raise UsageError(f"bad kernel version {version!r}; use e.g. 6.1.0-56-amd64")
    if not text.endswith("-" + FLAVOUR):
        text += "-" + FLAVOUR
    return text


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"[0-9]+", version))


def _series_pattern(series: str) -> re.Pattern[str]:
    """Package names ``linux-image-<series>[.N|-N]...[+debN]-amd64``; group 1 the version."""
    return re.compile(
        rf"linux-image-({re.escape(series)}(?:[.-][0-9]+)*(?:\+deb[0-9]+)?-{FLAVOUR})"
    )


def newest_kernel_version(series: str = DEFAULT_SERIES) -> str:
    """The newest ``linux-image-<series>.*-amd64`` apt knows (signed, not -unsigned)."""
    pattern = _series_pattern(series)
    out = run_tool(
        [find_tool("apt-cache", "apt"), "pkgnames", f"linux-image-{series}"],
        what="listing kernel packages",
    )
    versions = [m.group(1) for name in out.split() if (m := pattern.fullmatch(name))]
    if not versions:
        raise EnvironmentProblem(
            f"apt knows no linux-image-{series}.*-{FLAVOUR} package; run apt-get update "
            "(a Debian 12 package source is needed) or pass a kernel version"
        )
    return max(versions, key=_version_key)


def cached_versions(cache_dir: Path, series: str = DEFAULT_SERIES) -> list[str]:
    """The kernel versions of ``series`` already unpacked in ``cache_dir``, oldest first."""
    if not cache_dir.is_dir():
        return []
    found = [
        d.name
        for d in cache_dir.iterdir()
        if (d / _COMPLETE).is_file() and _series_pattern(series).fullmatch("linux-image-" + d.name)
    ]
    return sorted(found, key=_version_key)


def default_version(cache_dir: Path) -> str:
    """The newest kernel apt knows; offline, the newest one already in the cache."""
    try:
        return newest_kernel_version()
    except EnvironmentProblem:
        cached = cached_versions(cache_dir)
        if not cached:
            raise
        log.warning("apt knows no kernel package; using %s from the cache", cached[-1])
        return cached[-1]


def fetch_kernel(version: str, cache_dir: Path) -> Path:
    """The unpacked ``linux-image-<version>`` package, downloaded on first use.

    Each version is unpacked into a scratch directory next to its final place and
    renamed into place when complete, so concurrent builds and interrupted
    downloads never leave a half-unpacked kernel behind.
    """
    root = cache_dir / version
    if (root / _COMPLETE).is_file():
        return root
    try:
        _download_kernel(version, cache_dir, root)
    except OSError as exc:
        raise EnvironmentProblem(f"kernel cache {cache_dir}: {exc}") from exc
    return root


def _download_kernel(version: str, cache_dir: Path, root: Path) -> None:
    package = f"linux-image-{version}"
    cache_dir.mkdir(parents=True, exist_ok=True)
    apt_get = find_tool("apt-get", "apt")
    dpkg_deb = find_tool("dpkg-deb", "dpkg")
    log.info("downloading %s into %s", package, cache_dir)
    with tempfile.TemporaryDirectory(prefix=f".{version}-", dir=cache_dir) as tmp:
        work = Path(tmp)
        run_tool([apt_get, "download", package], what=f"downloading {package}", cwd=work)
        debs = sorted(work.glob("*.deb"))
        if len(debs) != 1:
            raise EnvironmentProblem(f"apt-get download {package} gave {len(debs)} packages")
        unpacked = work / "root"
        run_tool([dpkg_deb, "-x", str(debs[0]), str(unpacked)], what=f"unpacking {debs[0].name}")
        (unpacked / _COMPLETE).write_text(debs[0].name + "\n")
        if root.exists() and not (root / _COMPLETE).is_file():
            shutil.rmtree(root)
        try:
            unpacked.rename(root)
        except OSError:
            if not (root / _COMPLETE).is_file():  # not a concurrent build that won
                raise


def find_vmlinuz(kernel_root: Path, version: str) -> Path:
    """The kernel image of an unpacked kernel package."""
    exact = kernel_root / "boot" / f"vmlinuz-{version}"
    if exact.is_file():
        return exact
    found = sorted((kernel_root / "boot").glob("vmlinuz-*"))
    if not found:
        raise EnvironmentProblem(f"no boot/vmlinuz-* in {kernel_root}")
    return found[-1]
