"""Guest images built for real and booted for real under QEMU (TCG).

How this works: a module fixture builds two images with ``build_image`` — the demo
app and the crash app — using Debian's kernel from the per-user kernel cache
(downloaded with apt-get on first use). Each boot runs ``qemu-system-x86_64 -accel
tcg`` with user-mode networking: the guest's 10.0.2.2:PORT reaches a real collector
on the host's 127.0.0.1:PORT. The tests read the console QEMU prints and the
instance's app.log. KVM is never used here (on some hosts these guests hang under
it). Debian packages: qemu-system-x86, cpio, gcc, libc6-dev; apt package lists
that know linux-image-6.1.*-amd64.
"""

from __future__ import annotations

import contextlib
import gzip
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.integration.conftest import start_collector
from umonitor.errors import UsageError
from umonitor.image import cpio
from umonitor.image.elf import read_modinfo_untrusted
from umonitor.image.linux import (
    CRASH_APP,
    DEMO_APP,
    MODULE_LIST,
    TRACE_APP_CXX,
    Image,
    build_image,
)
from umonitor.image.pvh import extract_pvh_untrusted

pytestmark = pytest.mark.slow

BOOT_TIMEOUT = 120.0
EXPECTED_MODULES = {
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
}


@dataclass
class Images:
    demo: Image
    crash: Image


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Images:
    for tool, package in [("qemu-system-x86_64", "qemu-system-x86"), ("cpio", "cpio")]:
        assert shutil.which(tool), f"{tool} is needed: apt-get install {package}"
    out = tmp_path_factory.mktemp("images")
    return Images(
        demo=build_image([DEMO_APP], out / "demo"),
        crash=build_image([CRASH_APP], out / "crash"),
    )


@dataclass
class Boot:
    returncode: int
    console: str
    seconds: float
    first_record: float | None  # seconds from QEMU's start to the first stored record


def has_record(log: Path) -> bool:
    try:
        text = log.read_text()
    except FileNotFoundError:
        return False
    return any(line and not line.startswith("#") for line in text.splitlines())


def boot(kernel: Path, initrd: Path, append: str, console: Path, app_log: Path) -> Boot:
    """Boot under TCG until the guest powers off; the console is QEMU's stdout."""
    argv = [
        "qemu-system-x86_64", "-accel", "tcg", "-m", "256", "-nographic", "-no-reboot",
        "-kernel", str(kernel), "-initrd", str(initrd), "-append", append,
        "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0",
    ]  # fmt: skip
    start = time.monotonic()
    first_record = None
    with console.open("wb") as out:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            while proc.poll() is None:
                now = time.monotonic() - start
                if first_record is None and has_record(app_log):
                    first_record = now
                if now > BOOT_TIMEOUT:
                    tail = console.read_bytes()[-3000:].decode(errors="replace")
                    raise AssertionError(f"guest still running after {BOOT_TIMEOUT} s:\n{tail}")
                time.sleep(0.05)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    elapsed = time.monotonic() - start
    if first_record is None and has_record(app_log):
        first_record = elapsed
    text = console.read_bytes().decode(errors="replace").replace("\r\n", "\n")
    return Boot(proc.returncode, text, elapsed, first_record)


def init_lines(console: str) -> list[str]:
    return [line for line in console.splitlines() if line.startswith("umon-init: ")]


def record_lines(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if not line.startswith("#")]


def has_interpreter(elf: bytes) -> bool:
    """Whether an ELF64 executable names a dynamic loader (a PT_INTERP segment)."""
    phoff = int.from_bytes(elf[32:40], "little")
    phentsize = int.from_bytes(elf[54:56], "little")
    phnum = int.from_bytes(elf[56:58], "little")
    types = [
        int.from_bytes(elf[phoff + i * phentsize : phoff + i * phentsize + 4], "little")
        for i in range(phnum)
    ]
    assert types, "no program headers"
    return 3 in types  # PT_INTERP


def initrd_files(image: Image) -> dict[str, bytes]:
    """The initrd's members, listed and extracted by GNU cpio (not by our code)."""
    raw = gzip.decompress(image.initrd.read_bytes())
    listing = subprocess.run(
        ["cpio", "-it", "--quiet", "-H", "newc"], input=raw, capture_output=True, check=True
    )
    files = {}
    for name in listing.stdout.decode().splitlines():
        member = subprocess.run(
            ["cpio", "-i", "--quiet", "-H", "newc", "--to-stdout", name],
            input=raw,
            capture_output=True,
            check=True,
        )
        files[name] = member.stdout
    return files


# --- parsers of kernel files -------------------------------------------------------


def test_modinfo_is_read_from_a_real_elf_object(tmp_path: Path) -> None:
    source = tmp_path / "mod.c"
    source.write_text(
        'static const char info[] __attribute__((section(".modinfo"), used)) =\n'
        '    "license=GPL\\0depends=virtio_ring,net_failover\\0name=fake\\0";\n'
        "int fake_symbol = 1;\n"
    )
    subprocess.run(["gcc", "-c", "-o", str(tmp_path / "mod.o"), str(source)], check=True)
    info = read_modinfo_untrusted((tmp_path / "mod.o").read_bytes())
    assert info["depends"] == "virtio_ring,net_failover"
    assert info["name"] == "fake" and info["license"] == "GPL"


@given(st.binary(max_size=400))
def test_modinfo_reader_only_raises_value_error(data: bytes) -> None:
    for candidate in (data, b"\x7fELF\x02\x01" + data):
        with contextlib.suppress(ValueError):
            read_modinfo_untrusted(candidate)


@given(st.binary(max_size=1200))
def test_pvh_extractor_only_raises_value_error(data: bytes) -> None:
    # a bzImage header whose payload starts at (1 + 1) * 512 = 0x400
    header = bytearray(0x400)
    header[0x1F1] = 1
    header[0x202:0x206] = b"HdrS"
    header[0x206:0x208] = (0x20F).to_bytes(2, "little")
    for candidate in (
        data,
        bytes(header) + data,
        bytes(header) + b"\xfd7zXZ\x00" + data,
        bytes(header) + b"\x1f\x8b" + data,
        bytes(header) + gzip.compress(b"\x7fELF\x02\x01" + data),
    ):
        with contextlib.suppress(ValueError):
            extract_pvh_untrusted(candidate)


# --- the image ---------------------------------------------------------------------


def test_image_files_and_initramfs_contents(images: Images) -> None:
    image = images.demo
    assert image.kernel.name == "vmlinuz" and image.initrd.name == "initrd.img"
    assert image.kernel_version.startswith("6.1.") and image.kernel_version.endswith("-amd64")
    assert image.kernel.read_bytes()[0x202:0x206] == b"HdrS"
    assert image.pvh_kernel is not None and image.pvh_kernel.read_bytes()[:4] == b"\x7fELF"
    assert set(image.modules) == EXPECTED_MODULES

    files = initrd_files(image)
    for name in ["init", "app", "dev/console", "sbin/init", MODULE_LIST]:
        assert name in files, name
    for program in ("init", "app"):
        assert files[program][:4] == b"\x7fELF"
        assert not has_interpreter(files[program]), f"/{program} is not static"
    order = files[MODULE_LIST].decode().split()
    assert order == [f"/lib/modules/{name}.ko" for name in image.modules]
    # every module comes after the modules it depends on
    seen: set[str] = set()
    for name in image.modules:
        info = read_modinfo_untrusted(files[f"lib/modules/{name}.ko"])
        deps = {d for d in info.get("depends", "").split(",") if d}
        assert deps <= seen, (name, deps - seen)
        seen.add(name)


def test_the_initrd_is_reproducible(images: Images, tmp_path: Path) -> None:
    again = build_image([DEMO_APP], tmp_path / "again")
    assert again.initrd.read_bytes() == images.demo.initrd.read_bytes()
    assert again.kernel_version == images.demo.kernel_version


def test_a_cxx_program_with_cflags_is_linked_static(images: Images, tmp_path: Path) -> None:
    """trace_app.cpp with -finstrument-functions: g++ compiles and links it, statically,
    and the flag reaches the program: work() calls the hook, main (no_instrument_function)
    does not."""
    image = build_image(
        [TRACE_APP_CXX],
        tmp_path / "cxx",
        kernel_version=images.demo.kernel_version,
        pvh=False,
        cflags=("-finstrument-functions",),
    )
    app = image.app.read_bytes()
    assert app[:4] == b"\x7fELF" and not has_interpreter(app)
    assert not has_interpreter(initrd_files(image)["app"])
    names = subprocess.run(["nm", "-C", str(image.app)], capture_output=True, text=True).stdout
    assert "Counter::bump(int)" in names and "int square<int>(int)" in names

    def calls_the_hook(symbol: str) -> bool:
        out = subprocess.run(
            ["objdump", "-d", f"--disassemble={symbol}", str(image.app)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert f"<{symbol}>:" in out
        return "<__cyg_profile_func_enter>" in out

    assert calls_the_hook("_Z4workv") and not calls_the_hook("main")


def test_user_mistakes_are_usage_errors(images: Images, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        build_image([tmp_path / "missing.c"], tmp_path / "out")
    broken = tmp_path / "broken.c"
    broken.write_text("int main(void) { return undefined_name; }\n")
    with pytest.raises(UsageError, match="undefined_name"):
        build_image([broken], tmp_path / "out", kernel_version=images.demo.kernel_version)
    with pytest.raises(UsageError, match="bad kernel version"):
        build_image([DEMO_APP], tmp_path / "out", kernel_version="../../etc")


def test_initrd_parses_as_newc_by_its_header(images: Images) -> None:
    raw = gzip.decompress(images.crash.initrd.read_bytes())
    assert raw.startswith(cpio.MAGIC)
    assert raw.rstrip(b"\0").endswith(cpio.TRAILER.encode())
    assert len(raw) % 4 == 0


# --- booting -----------------------------------------------------------------------


@pytest.mark.parametrize("kernel", ["vmlinuz", "vmlinux (PVH)"])
def test_demo_guest_boots_and_its_records_reach_the_collector(
    images: Images, tmp_path: Path, kernel: str, record_property: pytest.RecordProperty
) -> None:
    image = images.demo
    kernel_path = image.kernel if kernel == "vmlinuz" else image.pvh_kernel
    assert kernel_path is not None
    collector = start_collector(tmp_path / "data")
    app_log = collector.data / "instances" / "vmtest" / "app.log"
    try:
        append = (
            "console=ttyS0 panic=-1 umon.ip=10.0.2.15/24 umon.gw=10.0.2.2 "
            f"umon.collector=10.0.2.2:{collector.port} umon.name=vmtest umon.count=8 umon.rate=10"
        )
        result = boot(kernel_path, image.initrd, append, tmp_path / "console.log", app_log)
    finally:
        assert collector.stop() == 0
    record_property("boot_to_first_record_s", result.first_record)
    print(
        f"\n{kernel}: first record after {result.first_record} s, off after {result.seconds:.1f} s"
    )

    assert result.returncode == 0, result.console[-3000:]
    lines = init_lines(result.console)
    assert lines, result.console[-3000:]
    assert lines[0].startswith("umon-init: started at ")
    assert any(f"loaded {len(EXPECTED_MODULES)} modules" in line for line in lines), lines
    assert "umon-init: eth0 is up: 10.0.2.15/24 via 10.0.2.2" in lines
    assert any(line.startswith("umon-init: starting /app") for line in lines)
    assert "umon-init: app exited with status 0" in lines
    assert lines[-1] == "umon-init: powering off"
    stats = re.search(r"demo_app: logged=(\d+) acked=(\d+) dropped=0", result.console)
    assert stats and stats.group(1) == stats.group(2), result.console[-2000:]

    records = record_lines(app_log)
    assert len(records) == int(stats.group(1))
    tokens = [line.split(" ") for line in records]
    assert any(t[1] == "debug" and t[2] == "app/enter" for t in tokens)
    assert any(t[1] == "debug" and t[2] == "app/exit" for t in tokens)
    assert any(t[1] == "warning" and "greet() was passed a NULL pointer" in line
               for t, line in zip(tokens, records, strict=True))  # fmt: skip
    assert any(t[1] == "err" and "division by zero caught: 1 / 0" in line
               for t, line in zip(tokens, records, strict=True))  # fmt: skip
    assert "demo_app.c:" in records[0], "source file names are relative"
    assert "demo stopping" in records[-1]
    assert result.first_record is not None and result.first_record < BOOT_TIMEOUT


def test_crash_guest_reports_the_crash_and_powers_off(images: Images, tmp_path: Path) -> None:
    image = images.crash
    assert image.pvh_kernel is not None
    collector = start_collector(tmp_path / "data")
    app_log = collector.data / "instances" / "crashy" / "app.log"
    try:
        append = (
            "console=ttyS0 panic=-1 umon.ip=10.0.2.15/24 umon.gw=10.0.2.2 "
            f"umon.collector=10.0.2.2:{collector.port} umon.name=crashy umon.count=6 umon.rate=10"
        )
        result = boot(image.pvh_kernel, image.initrd, append, tmp_path / "console.log", app_log)
    finally:
        assert collector.stop() == 0

    assert result.returncode == 0, result.console[-3000:]
    lines = init_lines(result.console)
    crash_line = "umon-init: app killed by signal 11 (Segmentation fault)"
    assert crash_line in lines, lines
    assert lines[-1] == "umon-init: powering off"
    console = result.console
    assert console.index("crash_app: crashing now") < console.index(crash_line)
    # The C library's fatal-signal handler reports the fault (so the kernel, which
    # reports only faults nobody handles, does not), then the signal kills the app.
    crash = re.search(r"umon-crash: signal 11 code 1 addr 0x0 pc 0x[0-9a-f]+ .* stack 0x", console)
    assert crash, "the C library's crash line"
    assert crash.start() < console.index(crash_line)

    records = record_lines(app_log)
    assert sum("working (" in line for line in records) == 6
    assert " err app " in records[-1] and "about to crash" in records[-1]
