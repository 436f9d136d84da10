"""Boot arguments per flavor and the QEMU command line, checked option by option."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import replace
from pathlib import Path

import pytest

from umonitor.errors import UsageError
from umonitor.fleet.flavors import FLAVORS, GuestNet, boot_spec
from umonitor.fleet.qemu import LaunchSpec, mac_for, parse_memory, qemu_command

NET = GuestNet(
    "web-1",
    ipaddress.IPv4Interface("10.77.0.5/24"),
    ipaddress.IPv4Address("10.77.0.1"),
    2333,
    "s3cret",
)
UMON = "umon.collector=10.77.0.1:2333 umon.name=web-1 umon.token=s3cret"


def test_linux() -> None:
    spec = boot_spec("linux", NET, "loglevel=7")
    assert spec.append == (
        f"console=ttyS0 panic=-1 umon.ip=10.77.0.5/24 umon.gw=10.77.0.1 {UMON} loglevel=7"
    )
    assert spec.pvpanic and spec.initrd_file is None


def test_unikraft_keeps_kernel_and_application_words_apart() -> None:
    spec = boot_spec("unikraft", NET, "vfs.fstab=none", app="5 500")
    assert spec.append == f"netdev.ip=10.77.0.5/24:10.77.0.1 {UMON} vfs.fstab=none -- 5 500"
    # No application words: no separator, which main() would otherwise get as argv[1].
    # Always a `--`: without one, ukboot parses no parameter (netdev.ip included).
    assert boot_spec("unikraft", NET).append == f"netdev.ip=10.77.0.5/24:10.77.0.1 {UMON} --"


def test_rumprun_json_configuration_module() -> None:
    spec = boot_spec("rumprun", NET, app="-v 3")
    assert spec.append is None and spec.initrd_file == "rumprun.json"
    config = json.loads(spec.files["rumprun.json"])
    assert config == {
        "net": {
            "if": "vioif0",
            "type": "inet",
            "method": "static",
            "addr": "10.77.0.5",
            "mask": "24",
            "gw": "10.77.0.1",
        },
        "env": f"UMON_CONFIG={UMON}",
        "hostname": "web-1",
        "cmdline": "app -v 3",
    }


def test_guests_without_a_kernel_command_line_refuse_args() -> None:
    for flavor in ("rumprun", "nanos"):
        with pytest.raises(UsageError, match=r"no kernel command line: give .* app_args"):
            boot_spec(flavor, NET, "-v")


def test_app_args_only_where_an_application_gets_its_own() -> None:
    for flavor in ("linux", "osv", "mirage-solo5"):
        with pytest.raises(UsageError, match="app_args is for unikraft, rumprun, nanos"):
            boot_spec(flavor, NET, app="x")


def test_osv() -> None:
    spec = boot_spec("osv", NET, "/server.so --port 80")
    assert spec.append == (
        f"--ip=eth0,10.77.0.5,255.255.255.0 --defaultgw=10.77.0.1 /server.so --port 80 {UMON}"
    )


def test_mirage_and_nanos() -> None:
    assert boot_spec("mirage-solo5", NET).append == ("--ipv4=10.77.0.5/24 --ipv4-gateway=10.77.0.1")
    nanos = boot_spec("nanos", NET, app="serve 'a b'")
    assert nanos.append is None and nanos.disk_boot
    assert nanos.program_args == ("serve", "a b")
    assert nanos.environment == (("UMON_CONFIG", UMON), ("IMAGE_NAME", "web-1"))


def test_generic_template() -> None:
    spec = boot_spec(
        "generic", NET, "x=1", "ip={ip}/{netmask} gw={gateway} log={collector} id={name}:{token}"
    )
    assert spec.append == (
        "ip=10.77.0.5/255.255.255.0 gw=10.77.0.1 log=10.77.0.1:2333 id=web-1:s3cret x=1"
    )
    with pytest.raises(UsageError, match="placeholders are"):
        boot_spec("generic", NET, "", "{nope}")
    with pytest.raises(UsageError, match="needs a template"):
        boot_spec("generic", NET)


def test_unknown_flavor() -> None:
    with pytest.raises(UsageError, match="unknown flavor"):
        boot_spec("windows", NET)
    assert set(FLAVORS) == {"linux", "unikraft", "rumprun", "osv", "mirage-solo5", "nanos",
                            "generic"}  # fmt: skip


def test_qemu_command_linux_on_tap(tmp_path: Path) -> None:
    spec = LaunchSpec(
        "web-1", Path("/img/vmlinuz"), tmp_path, boot_spec("linux", NET),
        initrd=Path("/img/initrd.img"), memory_mib=512, cpus=2, accel="tcg", tap="umt1234",
    )  # fmt: skip
    argv = qemu_command(spec)
    joined = " ".join(argv)
    assert argv[0] == "qemu-system-x86_64"
    assert argv[argv.index("-accel") + 1] == "tcg" and "-cpu" not in argv
    assert argv[argv.index("-m") + 1] == "512" and argv[argv.index("-smp") + 1] == "2"
    assert "-no-reboot" in argv and "-nodefaults" in argv
    assert f"unix:{tmp_path}/qmp.sock,server=on,wait=off" in argv
    # A power-off pauses QEMU, and its gdbstub waits in the run directory (the capture).
    assert "-no-shutdown" in argv
    assert argv[argv.index("-gdb") + 1] == f"unix:{tmp_path}/gdb.sock,server=on,wait=off"
    assert f"logfile={tmp_path}/console.raw,logappend=on" in joined
    assert "tap,id=net0,ifname=umt1234,script=no,downscript=no" in argv
    assert f"virtio-net-pci,netdev=net0,mac={mac_for('web-1')}" in argv
    assert argv[argv.index("-kernel") + 1] == "/img/vmlinuz"
    assert argv[argv.index("-initrd") + 1] == "/img/initrd.img"
    assert argv[argv.index("-append") + 1].startswith("console=ttyS0 ")
    assert "pvpanic" in argv
    assert "-S" not in argv  # runs at once unless asked to wait
    paused = qemu_command(replace(spec, paused=True))
    assert paused == [*argv[: argv.index("-netdev")], "-S", *argv[argv.index("-netdev") :]]


def test_qemu_command_kvm_rumprun_and_nanos(tmp_path: Path) -> None:
    rump = qemu_command(
        LaunchSpec("r", Path("/k.bin"), tmp_path, boot_spec("rumprun", NET), accel="kvm")
    )
    assert rump[rump.index("-cpu") + 1] == "host"
    assert rump[rump.index("-initrd") + 1] == str(tmp_path / "rumprun.json")
    assert "-append" not in rump and "-netdev" not in rump
    nanos = qemu_command(LaunchSpec("n", Path("/disk.img"), tmp_path, boot_spec("nanos", NET)))
    assert "file=/disk.img,format=raw,if=virtio" in nanos and "-kernel" not in nanos


def test_mac_is_stable_local_and_distinct() -> None:
    assert mac_for("web-1") == mac_for("web-1") != mac_for("web-2")
    assert mac_for("web-1").startswith("52:54:00:")


@pytest.mark.parametrize(
    ("text", "mib"), [(256, 256), ("256M", 256), ("1G", 1024), ("512MiB", 512), ("2g", 2048)]
)
def test_memory_sizes(text: str | int, mib: int) -> None:
    assert parse_memory(text) == mib


@pytest.mark.parametrize("bad", ["lots", "0", "4", "12T", "-1M"])
def test_bad_memory_sizes(bad: str) -> None:
    with pytest.raises(UsageError):
        parse_memory(bad)
