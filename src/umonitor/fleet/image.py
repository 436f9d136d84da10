"""Build a bootable single-application Linux guest: Debian's kernel, our initramfs.

How this works: the kernel is Debian's own (``linux-image-<version>``), fetched with
``apt-get download`` and unpacked with ``dpkg-deb -x`` once per version into a cache
directory that later builds reuse. Debian builds virtio-pci and virtio-net as
modules, so the image carries them: starting from ``virtio_pci`` and ``virtio_net``,
each module's ``depends=`` (read from its ELF ``.modinfo`` section) pulls in the
others, and they are listed dependencies first. Compressed modules (``.ko.xz``,
``.ko.gz``) are decompressed here, at build time, so that loading them does not
depend on the kernel's own decompression support.

Debian's ``vmlinuz`` is an xz-compressed bzImage; under TCG its decompressor alone
takes 15-20 s. The uncompressed kernel inside it is an ELF file with a PVH entry
note (CONFIG_PVH), which QEMU boots directly with ``-kernel``, skipping both the
firmware's real-mode path and the decompression. So next to ``vmlinuz`` the image
gets ``vmlinux``, extracted once per kernel version into the cache.

The initramfs is written by ``cpio.py``: ``/init`` (``guest/init/umon_init.c``,
compiled static), ``/app`` (the user's C sources with the guest library, compiled
static), the modules and ``/etc/umon-modules`` naming them in load order, and a
``/dev/console`` node so the kernel has a console before devtmpfs is mounted.
docs/image.md describes the boot sequence and the command line the guest reads.
"""

from __future__ import annotations

import gzip
import logging
import lzma
import os
import re
import shutil
import struct
import subprocess
import tempfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from umonitor.errors import EnvironmentProblem, UsageError
from umonitor.fleet import cpio

log = logging.getLogger(__name__)

GUEST_DIR = Path(__file__).resolve().parent.parent / "guest"
C_LIBRARY_DIR = GUEST_DIR / "c"
INIT_SOURCE = GUEST_DIR / "init" / "umon_init.c"
DEMO_APP = GUEST_DIR / "demo" / "demo_app.c"
CRASH_APP = GUEST_DIR / "demo" / "crash_app.c"

DEFAULT_SERIES = "6.1"
FLAVOUR = "amd64"
NET_MODULES = ("virtio_pci", "virtio_net")
MODULE_LIST = "etc/umon-modules"
_MODULE_DIR = "lib/modules"
_COMPLETE = ".umonitor-complete"

CC = "gcc"
INIT_CFLAGS = ("-std=c99", "-static", "-O2", "-Wall", "-Wextra", "-Werror")
# Frame pointers: the C library's records and its crash line carry a frame-pointer
# walk of the call stack (docs/debugging.md), which needs them in the app's code.
APP_CFLAGS = ("-static", "-O2", "-g", "-fno-omit-frame-pointer", "-Wall")

_VERSION = re.compile(r"[0-9][0-9A-Za-z.+~]*(?:-[0-9A-Za-z.+~]+)*")
_MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.gz", ".ko.zst")


@dataclass(frozen=True, slots=True)
class Image:
    """A built guest: what QEMU boots (``-kernel``, ``-initrd``) and what it holds."""

    kernel: Path  # OUT/vmlinuz: Debian's bzImage
    initrd: Path  # OUT/initrd.img (gzip-compressed newc)
    app: Path  # OUT/app: the application with debug information, for symbolizing
    kernel_version: str  # e.g. "6.1.0-56-amd64"
    modules: tuple[str, ...]  # in load order
    pvh_kernel: Path | None = None  # OUT/vmlinux: the same kernel, uncompressed, PVH entry


@dataclass(frozen=True, slots=True)
class KernelModule:
    """One loadable module, uncompressed."""

    name: str
    data: bytes


def build_image(
    app_sources: Sequence[Path],
    out_dir: Path,
    *,
    kernel_version: str | None = None,
    cache_dir: Path | None = None,
    pvh: bool = True,
) -> Image:
    """Build OUT/vmlinuz and OUT/initrd.img running ``app_sources`` as the only program.

    ``kernel_version`` is a Debian kernel release such as ``6.1.0-56-amd64`` (the
    ``-amd64`` may be left out); by default the newest ``linux-image-6.1.*-amd64``
    apt knows. ``cache_dir`` holds unpacked kernels, one directory per version
    (default ``$XDG_CACHE_HOME/umonitor/kernels``, i.e. ``~/.cache/umonitor/kernels``).
    With ``pvh`` (the default) OUT/vmlinux is written too, when the kernel has a
    PVH entry: QEMU boots it much faster under TCG than the compressed ``vmlinuz``.
    """
    sources = [Path(s) for s in app_sources]
    if not sources:
        raise UsageError("no application sources given")
    for source in sources:
        if not source.is_file():
            raise UsageError(f"{source}: no such file")
    if not INIT_SOURCE.is_file():
        raise EnvironmentProblem(f"{INIT_SOURCE} is missing; reinstall umonitor")
    cc = find_tool(CC, "gcc")
    cache = cache_dir if cache_dir is not None else default_cache_dir()
    version = normalize_version(kernel_version) if kernel_version else _default_version(cache)
    kernel_root = fetch_kernel(version, cache)
    vmlinuz = find_vmlinuz(kernel_root, version)
    modules = resolve_modules(kernel_root, version, NET_MODULES)
    pvh_source = pvh_kernel(kernel_root, vmlinuz) if pvh else None

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".build-", dir=out_dir) as tmp:
        work = Path(tmp)
        init = work / "init"
        compile_c(cc, [INIT_SOURCE], init, INIT_CFLAGS, user_code=False)
        app = work / "app"
        all_sources = [*sources, C_LIBRARY_DIR / "umonitor.c"]
        # Records name their source file (__FILE__): make that "demo_app.c" rather
        # than the absolute path of this build. Debug information keeps full paths.
        prefix_maps = sorted({f"-fmacro-prefix-map={s.resolve().parent}/=" for s in all_sources})
        compile_c(
            cc,
            all_sources,
            app,
            (*APP_CFLAGS, *prefix_maps, f"-I{C_LIBRARY_DIR}"),
            user_code=True,
        )
        members = initramfs_members(init.read_bytes(), _stripped(app, work), modules)
        _write_atomic(out_dir / "initrd.img", cpio.gzip_newc(members))
        _write_atomic(out_dir / "app", app.read_bytes(), mode=0o755)
    _install(vmlinuz, out_dir / "vmlinuz")
    pvh_target = out_dir / "vmlinux"
    if pvh_source is not None:
        _install(pvh_source, pvh_target)
    else:
        pvh_target.unlink(missing_ok=True)
    log.info(
        "image in %s: kernel %s, modules %s", out_dir, version, " ".join(m.name for m in modules)
    )
    return Image(
        kernel=out_dir / "vmlinuz",
        initrd=out_dir / "initrd.img",
        app=out_dir / "app",
        kernel_version=version,
        modules=tuple(m.name for m in modules),
        pvh_kernel=pvh_target if pvh_source is not None else None,
    )


def initramfs_members(
    init: bytes, app: bytes, modules: Iterable[KernelModule]
) -> list[cpio.Member]:
    """The files of the initramfs: /init, /app, the modules and their load order."""
    members = [
        cpio.directory("dev"),
        cpio.char_device("dev/console", 5, 1, 0o600),
        cpio.directory("proc", 0o555),
        cpio.directory("sys", 0o555),
        cpio.directory("tmp", 0o1777),
        cpio.directory("etc"),
        cpio.regular("init", init, 0o755),
        cpio.symlink("sbin/init", "/init"),
        cpio.regular("app", app, 0o755),
    ]
    order = []
    for module in modules:
        path = f"{_MODULE_DIR}/{module.name}.ko"
        members.append(cpio.regular(path, module.data, 0o644))
        order.append("/" + path)
    members.append(cpio.regular(MODULE_LIST, "".join(p + "\n" for p in order).encode()))
    return members


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
    out = _run(
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


def _default_version(cache_dir: Path) -> str:
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
        _run([apt_get, "download", package], what=f"downloading {package}", cwd=work)
        debs = sorted(work.glob("*.deb"))
        if len(debs) != 1:
            raise EnvironmentProblem(f"apt-get download {package} gave {len(debs)} packages")
        unpacked = work / "root"
        _run([dpkg_deb, "-x", str(debs[0]), str(unpacked)], what=f"unpacking {debs[0].name}")
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


def pvh_kernel(kernel_root: Path, vmlinuz: Path) -> Path | None:
    """The cached uncompressed ELF kernel of ``vmlinuz``, or None if it has no PVH entry."""
    cached = kernel_root / _PVH_FILE
    none = kernel_root / (_PVH_FILE + ".none")
    if cached.is_file():
        return cached
    if none.is_file():
        return None
    try:
        elf = extract_pvh_untrusted(vmlinuz.read_bytes())
    except ValueError as exc:
        log.info("%s: no PVH kernel (%s); only vmlinuz is usable", vmlinuz, exc)
        none.write_text(f"{exc}\n")
        return None
    _write_atomic(cached, elf)
    return cached


# The x86 boot protocol's setup header inside a bzImage (Documentation/arch/x86/boot.rst):
#   0x1f1 setup_sects u8      0x202 "HdrS"      0x206 version u16
#   0x248 payload_offset u32 (from the protected-mode code, (setup_sects + 1) * 512)
_SETUP_SECTS = 0x1F1
_HDRS = 0x202
_BOOT_VERSION = struct.Struct("<H")  # at 0x206
_PAYLOAD_OFFSET = struct.Struct("<I")  # at 0x248
# ELF64 program header (56 bytes):
#   0 type u32  4 flags u32  8 offset u64  16 vaddr u64  24 paddr u64  32 filesz u64
#  40 memsz u64  48 align u64
_PROGRAM_HEADER = struct.Struct("<IIQQQQQQ")
_PT_NOTE = 4
# One ELF note: namesz u32, descsz u32, type u32, then name and desc, each padded to 4.
_NOTE_HEADER = struct.Struct("<III")
_XEN_ELFNOTE_PHYS32_ENTRY = 18
_PVH_FILE = "umonitor-vmlinux-pvh"


def extract_pvh_untrusted(bzimage: bytes) -> bytes:
    """The ELF kernel compressed inside ``bzimage``, provided it has a PVH entry note.

    Handles xz and gzip payloads. Raises only ValueError, whatever the bytes.
    """
    if len(bzimage) < 0x250 or bzimage[_HDRS : _HDRS + 4] != b"HdrS":
        raise ValueError("not a bzImage")
    if _BOOT_VERSION.unpack_from(bzimage, 0x206)[0] < 0x208:
        raise ValueError("boot protocol older than 2.08 (no payload fields)")
    setup_sects = bzimage[_SETUP_SECTS] or 4
    start = (setup_sects + 1) * 512 + _PAYLOAD_OFFSET.unpack_from(bzimage, 0x248)[0]
    payload = bzimage[start:]
    try:
        if payload.startswith(b"\xfd7zXZ\x00"):
            xz = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
            elf = xz.decompress(payload)
            if not xz.eof:
                raise ValueError("truncated xz payload")
        elif payload.startswith(b"\x1f\x8b"):
            inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
            elf = inflate.decompress(payload)
            if not inflate.eof:
                raise ValueError("truncated gzip payload")
        else:
            raise ValueError("payload compression not supported (xz and gzip are)")
    except (lzma.LZMAError, zlib.error) as exc:
        raise ValueError(f"cannot decompress the payload: {exc}") from None
    if not _has_pvh_note(elf):
        raise ValueError("the kernel has no PVH entry note")
    return elf


def _has_pvh_note(elf: bytes) -> bool:
    if len(elf) < _ELF_HEADER.size or not elf.startswith(_ELF_MAGIC):
        raise ValueError("payload is not a 64-bit little-endian ELF file")
    fields = _ELF_HEADER.unpack_from(elf)
    phoff, phentsize, phnum = fields[5], fields[9], fields[10]
    if phentsize != _PROGRAM_HEADER.size or phoff + phnum * phentsize > len(elf):
        raise ValueError("bad ELF program header table")
    for i in range(phnum):
        p_type, _, offset, _, _, filesz = _PROGRAM_HEADER.unpack_from(elf, phoff + i * phentsize)[
            :6
        ]
        if p_type != _PT_NOTE:
            continue
        if offset + filesz > len(elf):
            raise ValueError("ELF note segment beyond the end of the file")
        at, end = offset, offset + filesz
        while at + _NOTE_HEADER.size <= end:
            namesz, descsz, n_type = _NOTE_HEADER.unpack_from(elf, at)
            name = elf[at + 12 : at + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and n_type == _XEN_ELFNOTE_PHYS32_ENTRY:
                return True
            at += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


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


# ELF64 little-endian file header (64 bytes); only the section-table fields are used.
#   0 e_ident[16]  16 type u16  18 machine u16  20 version u32  24 entry u64
#  32 phoff u64    40 shoff u64 48 flags u32    52 ehsize u16   54 phentsize u16
#  56 phnum u16    58 shentsize u16  60 shnum u16  62 shstrndx u16
_ELF_HEADER = struct.Struct("<16sHHIQQQIHHHHHH")
# ELF64 section header (64 bytes):
#   0 name u32  4 type u32  8 flags u64  16 addr u64  24 offset u64  32 size u64
#  40 link u32 44 info u32 48 addralign u64  56 entsize u64
_SECTION_HEADER = struct.Struct("<IIQQQQIIQQ")
_ELF_MAGIC = b"\x7fELF\x02\x01"  # 64-bit, little-endian


def read_modinfo_untrusted(elf: bytes) -> dict[str, str]:
    """The ``key=value`` strings of a module's ``.modinfo`` section (first value wins).

    Raises only ValueError, whatever the bytes.
    """
    if len(elf) < _ELF_HEADER.size or not elf.startswith(_ELF_MAGIC):
        raise ValueError("not a 64-bit little-endian ELF file")
    fields = _ELF_HEADER.unpack_from(elf)
    shoff, shentsize, shnum, shstrndx = fields[6], fields[11], fields[12], fields[13]
    if shentsize != _SECTION_HEADER.size or shstrndx >= shnum:
        raise ValueError("bad ELF section table")
    if shoff + shnum * shentsize > len(elf):
        raise ValueError("ELF section table beyond the end of the file")

    def section(i: int) -> tuple[int, bytes]:
        name, _type, _flags, _addr, offset, size = _SECTION_HEADER.unpack_from(
            elf, shoff + i * shentsize
        )[:6]
        if offset + size > len(elf):
            raise ValueError(f"ELF section {i} beyond the end of the file")
        return name, elf[offset : offset + size]

    _, names = section(shstrndx)
    for i in range(shnum):
        name_offset, body = section(i)
        if name_offset >= len(names):
            raise ValueError("bad ELF section name")
        end = names.find(b"\0", name_offset)
        if names[name_offset : end if end >= 0 else len(names)] != b".modinfo":
            continue
        info: dict[str, str] = {}
        for entry in body.split(b"\0"):
            key, sep, value = entry.partition(b"=")
            if sep:
                info.setdefault(key.decode("utf-8", "replace"), value.decode("utf-8", "replace"))
        return info
    raise ValueError("no .modinfo section (not a kernel module)")


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


def _stripped(binary: Path, work: Path) -> bytes:
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


def _run(argv: list[str], *, what: str, cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, check=False)
    except OSError as exc:
        raise EnvironmentProblem(f"{what}: {exc}") from exc
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if line.startswith("E:")]
        detail = "; ".join(errors) or done.stderr.strip()[-500:]
        raise EnvironmentProblem(f"{what} failed: {detail}")
    return done.stdout


def _install(source: Path, target: Path) -> None:
    """Put ``source``'s content at ``target``: a hard link when possible, else a copy."""
    tmp = _scratch_name(target)
    try:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = _scratch_name(path)
    try:
        tmp.write_bytes(data)
        tmp.chmod(mode)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _scratch_name(path: Path) -> Path:
    """A name next to ``path`` that no concurrent writer uses."""
    return path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
