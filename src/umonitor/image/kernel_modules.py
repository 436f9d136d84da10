"""The kernel modules a guest needs, found in an unpacked kernel package with their dependencies.

Debian builds virtio-pci and virtio-net as modules, so the image carries them:
starting from the wanted ones, each module's ``depends=`` (read from its ELF
``.modinfo`` section) pulls in the others, and they are listed dependencies first.
Compressed modules (``.ko.xz``, ``.ko.gz``) are decompressed here, at build time, so
that loading them does not depend on the kernel's own decompression support.
"""

from __future__ import annotations

import gzip
import lzma
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from umonitor.errors import EnvironmentProblem
from umonitor.image.elf import read_modinfo_untrusted

_MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.gz", ".ko.zst")


@dataclass(frozen=True, slots=True)
class KernelModule:
    """One loadable module, uncompressed."""

    name: str
    data: bytes


def resolve_modules(kernel_root: Path, version: str, wanted: Iterable[str]) -> list[KernelModule]:
    """``wanted`` and every module they depend on, dependencies first.

    Modules built into the kernel (``modules.builtin``) are left out.
    """
    base = kernel_root / "lib" / "modules" / version
    if not base.is_dir():
        raise EnvironmentProblem(f"no modules directory {base}")
    builtin = _builtin_names(base / "modules.builtin")
    index = _module_index(base / "kernel")
    order: list[KernelModule] = []
    done: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in done or name in builtin:
            return
        if name in chain:
            raise EnvironmentProblem(f"module dependency cycle: {' -> '.join((*chain, name))}")
        path = index.get(name)
        if path is None:
            raise EnvironmentProblem(f"kernel {version} has no module {name}")
        data = read_module(path)
        try:
            info = read_modinfo_untrusted(data)
        except ValueError as exc:
            raise EnvironmentProblem(f"{path}: {exc}") from exc
        for dep in info.get("depends", "").split(","):
            if dep:
                visit(_module_name(dep), (*chain, name))
        done.add(name)
        order.append(KernelModule(name, data))

    for name in wanted:
        visit(_module_name(name), ())
    return order


def _module_name(text: str) -> str:
    return text.replace("-", "_")


def _strip_module_suffix(filename: str) -> str | None:
    for suffix in _MODULE_SUFFIXES:
        if filename.endswith(suffix):
            return filename[: -len(suffix)]
    return None


def _builtin_names(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    names = set()
    for line in path.read_text().splitlines():
        stem = _strip_module_suffix(line.rsplit("/", 1)[-1].strip())
        if stem:
            names.add(_module_name(stem))
    return names


def _module_index(kernel_dir: Path) -> dict[str, Path]:
    index: dict[str, Path] = {}
    for dirpath, _dirs, files in os.walk(kernel_dir):
        for filename in files:
            stem = _strip_module_suffix(filename)
            if stem is not None:
                index.setdefault(_module_name(stem), Path(dirpath) / filename)
    return index


def read_module(path: Path) -> bytes:
    """A module file's ELF bytes, decompressed if it is ``.ko.xz`` or ``.ko.gz``."""
    raw = path.read_bytes()
    try:
        if path.name.endswith(".ko.xz"):
            return lzma.decompress(raw)
        if path.name.endswith(".ko.gz"):
            return gzip.decompress(raw)
    except (lzma.LZMAError, OSError, EOFError) as exc:
        raise EnvironmentProblem(f"{path}: cannot decompress: {exc}") from exc
    if path.name.endswith(".ko.zst"):
        raise EnvironmentProblem(f"{path}: zstd-compressed modules are not supported")
    return raw
