"""Build a bootable single-application Linux guest: Debian's kernel, our initramfs.

How this works: the kernel is Debian's own, downloaded and unpacked once per version
into a cache (debian_kernel.py). Debian builds virtio-pci and virtio-net as modules,
so the image carries them with their dependencies, dependencies first
(kernel_modules.py). Next to ``vmlinuz`` the image gets ``vmlinux``, the same kernel
uncompressed with its PVH entry, which QEMU boots much faster under TCG (pvh.py).

The initramfs is written by ``cpio.py``: ``/init`` (``guest/init/umon_init.c``,
compiled static), ``/app`` (the user's C or C++ sources with the guest library,
compiled static; tools.py), the modules and ``/etc/umon-modules`` naming them in load
order, and a ``/dev/console`` node so the kernel has a console before devtmpfs is
mounted.
docs/image.md describes the boot sequence and the command line the guest reads.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from umonitor.errors import EnvironmentProblem, UsageError
from umonitor.image import cpio
from umonitor.image.debian_kernel import (
    default_cache_dir,
    default_version,
    fetch_kernel,
    find_vmlinuz,
    normalize_version,
)
from umonitor.image.files import install, write_atomic
from umonitor.image.kernel_modules import KernelModule, resolve_modules
from umonitor.image.pvh import pvh_kernel
from umonitor.image.tools import (
    APP_CFLAGS,
    CC,
    CXX,
    INIT_CFLAGS,
    compile_app,
    compile_c,
    find_tool,
    is_cxx,
    stripped,
)

log = logging.getLogger(__name__)

GUEST_DIR = Path(__file__).resolve().parent.parent / "guest"
C_LIBRARY_DIR = GUEST_DIR / "c"
INIT_SOURCE = GUEST_DIR / "init" / "umon_init.c"
DEMO_APP = GUEST_DIR / "demo" / "demo_app.c"
CRASH_APP = GUEST_DIR / "demo" / "crash_app.c"
TRACE_APP = GUEST_DIR / "demo" / "trace_app.c"
TRACE_APP_CXX = GUEST_DIR / "demo" / "trace_app.cpp"

NET_MODULES = ("virtio_pci", "virtio_net")
MODULE_LIST = "etc/umon-modules"
_MODULE_DIR = "lib/modules"


@dataclass(frozen=True, slots=True)
class Image:
    """A built guest: what QEMU boots (``-kernel``, ``-initrd``) and what it holds."""

    kernel: Path  # OUT/vmlinuz: Debian's bzImage
    initrd: Path  # OUT/initrd.img (gzip-compressed newc)
    app: Path  # OUT/app: the application with debug information, for symbolizing
    kernel_version: str  # e.g. "6.1.0-56-amd64"
    modules: tuple[str, ...]  # in load order
    pvh_kernel: Path | None = None  # OUT/vmlinux: the same kernel, uncompressed, PVH entry


def build_image(
    app_sources: Sequence[Path],
    out_dir: Path,
    *,
    kernel_version: str | None = None,
    cache_dir: Path | None = None,
    pvh: bool = True,
    cflags: Sequence[str] = (),
    ldflags: Sequence[str] = (),
) -> Image:
    """Build OUT/vmlinuz and OUT/initrd.img running ``app_sources`` as the only program.

    ``kernel_version`` is a Debian kernel release such as ``6.1.0-56-amd64`` (the
    ``-amd64`` may be left out); by default the newest ``linux-image-6.1.*-amd64``
    apt knows. ``cache_dir`` holds unpacked kernels, one directory per version
    (default ``$XDG_CACHE_HOME/umonitor/kernels``, i.e. ``~/.cache/umonitor/kernels``).
    With ``pvh`` (the default) OUT/vmlinux is written too, when the kernel has a
    PVH entry: QEMU boots it much faster under TCG than the compressed ``vmlinuz``.

    Sources ending in .cc, .cpp or .cxx are C++ (compiled with g++, and then g++
    links), the others C. ``cflags`` are extra compiler flags for those sources only
    (not the guest library, not init), such as ``-finstrument-functions``; they are
    passed when linking too. ``ldflags`` go on the link line after the objects:
    libraries such as ``-lm``.
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
    if any(is_cxx(s) for s in sources):
        find_tool(CXX, "g++")
    cache = cache_dir if cache_dir is not None else default_cache_dir()
    version = normalize_version(kernel_version) if kernel_version else default_version(cache)
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
        library = [C_LIBRARY_DIR / "umonitor.c"]
        # Records name their source file (__FILE__): make that "demo_app.c" rather
        # than the absolute path of this build. Debug information keeps full paths.
        prefix_maps = sorted(
            {f"-fmacro-prefix-map={s.resolve().parent}/=" for s in [*sources, *library]}
        )
        compile_app(
            sources,
            library,
            app,
            work,
            (*APP_CFLAGS, *prefix_maps, f"-I{C_LIBRARY_DIR}"),
            tuple(cflags),
            tuple(ldflags),
        )
        members = initramfs_members(init.read_bytes(), stripped(app, work), modules)
        write_atomic(out_dir / "initrd.img", cpio.gzip_newc(members))
        write_atomic(out_dir / "app", app.read_bytes(), mode=0o755)
    install(vmlinuz, out_dir / "vmlinuz")
    pvh_target = out_dir / "vmlinux"
    if pvh_source is not None:
        install(pvh_source, pvh_target)
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
