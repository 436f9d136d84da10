"""Flavors: how each kind of unikernel is told its address, collector and name.

A flavor turns one ``GuestNet`` (what the fleet decided for an instance) into the
kernel command line and QEMU options that kind of unikernel reads. Formats, and where
they come from, are in docs/flavors.md; every flavor is unit-tested on its output.
"""

from __future__ import annotations

import ipaddress
import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field

from umonitor.errors import UsageError


@dataclass(frozen=True, slots=True)
class GuestNet:
    """Everything a guest needs to find the collector, decided by the host."""

    name: str
    address: ipaddress.IPv4Interface  # e.g. 10.77.0.5/24
    gateway: ipaddress.IPv4Address  # the bridge's address
    collector_port: int = 2333
    token: str = ""

    @property
    def collector(self) -> str:
        return f"{self.gateway}:{self.collector_port}"

    def umon_words(self) -> list[str]:
        """The ``umon.*`` words the guest libraries read (umon_init_from_string)."""
        words = [f"umon.collector={self.collector}", f"umon.name={self.name}"]
        if self.token:
            words.append(f"umon.token={self.token}")
        return words


@dataclass(frozen=True, slots=True)
class BootSpec:
    """What QEMU gets for one instance: ``-append`` text, extra options, files to write."""

    append: str | None
    qemu_args: tuple[str, ...] = ()
    files: dict[str, str] = field(default_factory=dict)  # name in the run dir -> content
    initrd_file: str | None = None  # one of ``files`` passed as -initrd
    pvpanic: bool = False
    disk_boot: bool = False  # boots from a disk image instead of -kernel


def _linux(net: GuestNet, extra: str, template: str | None) -> BootSpec:
    words = [
        "console=ttyS0",
        "panic=-1",
        f"umon.ip={net.address.with_prefixlen}",
        f"umon.gw={net.gateway}",
        *net.umon_words(),
    ]
    return BootSpec(" ".join([*words, *shlex.split(extra)]), pvpanic=True)


def _unikraft(net: GuestNet, extra: str, template: str | None) -> BootSpec:
    # netdev.ip=CIDR:GATEWAY; words after `--` reach the application's main(), and at
    # least one kernel word must come before `--`.
    kernel = [f"netdev.ip={net.address.with_prefixlen}:{net.gateway}", *shlex.split(extra)]
    return BootSpec(" ".join([*kernel, "--", *net.umon_words()]))


def _rumprun(net: GuestNet, extra: str, template: str | None) -> BootSpec:
    # The hw/x86 platform reads a JSON configuration from the first multiboot module.
    config = {
        "net": {
            "interfaces": {
                "vioif0": {
                    "addrs": [
                        {"type": "inet", "method": "static", "addr": net.address.with_prefixlen}
                    ]
                }
            },
            "gateways": [{"type": "inet", "addr": str(net.gateway)}],
        },
        "hostname": net.name,
        "env": {"UMON_CONFIG": " ".join(net.umon_words())},
        "rc": [{"bin": "app", "args": [*net.umon_words(), *shlex.split(extra)]}],
    }
    return BootSpec(
        None,
        files={"rumprun.json": json.dumps(config, indent=1)},
        initrd_file="rumprun.json",
    )


def _osv(net: GuestNet, extra: str, template: str | None) -> BootSpec:
    options = [
        f"--ip=eth0,{net.address.ip},{net.address.netmask}",
        f"--defaultgw={net.gateway}",
    ]
    command = shlex.split(extra) or ["/app"]
    return BootSpec(" ".join([*options, *command, *net.umon_words()]))


def _mirage(net: GuestNet, extra: str, template: str | None) -> BootSpec:
    # MirageOS 4 unikernels (solo5 virtio target) take runtime arguments as options.
    options = [f"--ipv4={net.address.with_prefixlen}", f"--ipv4-gateway={net.gateway}"]
    return BootSpec(" ".join([*options, *shlex.split(extra)]))


def _nanos(net: GuestNet, extra: str, template: str | None) -> BootSpec:
    # Nanos boots a disk image built by `ops`; its address is in the image manifest
    # (ipaddr/netmask/gateway), so nothing goes on a command line.
    return BootSpec(None, disk_boot=True)


_PLACEHOLDERS = ("ip", "cidr", "netmask", "gateway", "collector", "port", "token", "name")


def _generic(net: GuestNet, extra: str, template: str | None) -> BootSpec:
    if not template:
        raise UsageError("the generic flavor needs a template (e.g. 'ip={ip} gw={gateway}')")
    values = {
        "ip": str(net.address.ip),
        "cidr": net.address.with_prefixlen,
        "netmask": str(net.address.netmask),
        "gateway": str(net.gateway),
        "collector": net.collector,
        "port": str(net.collector_port),
        "token": net.token,
        "name": net.name,
    }
    try:
        text = template.format(**values)
    except (KeyError, IndexError, ValueError) as exc:
        raise UsageError(
            f"bad template {template!r}: {exc}; placeholders are "
            + ", ".join("{" + p + "}" for p in _PLACEHOLDERS)
        ) from None
    return BootSpec(" ".join([text, *shlex.split(extra)]).strip())


FLAVORS: dict[str, Callable[[GuestNet, str, str | None], BootSpec]] = {
    "linux": _linux,
    "unikraft": _unikraft,
    "rumprun": _rumprun,
    "osv": _osv,
    "mirage-solo5": _mirage,
    "nanos": _nanos,
    "generic": _generic,
}


def boot_spec(flavor: str, net: GuestNet, extra: str = "", template: str | None = None) -> BootSpec:
    """The boot arguments for ``flavor``; UsageError for an unknown flavor."""
    try:
        make = FLAVORS[flavor]
    except KeyError:
        raise UsageError(f"unknown flavor {flavor!r}; use one of {', '.join(FLAVORS)}") from None
    return make(net, extra, template)
