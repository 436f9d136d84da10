"""Flavors: how each kind of unikernel is told its address, collector and name.

A flavor turns one ``GuestNet`` (what the fleet decided for an instance) into the
kernel command line and QEMU options that kind of unikernel reads. Formats, and where
they come from, are in docs/flavors.md; every flavor is unit-tested on its output.

How ``args`` reach a command line: the user's text is split as a POSIX shell would
(``split_args``), then each word is written back the way kernel command lines quote
(``cmdline_words``): Linux's ``next_arg`` and Unikraft's ``uk_argparse`` group
``"a b"`` and ``key="a b"`` into one word and drop the quotes. Neither has an escape,
so a word holding a double quote cannot be written at all and is refused. Bad input
of any kind (args, template, flavor) raises UsageError only, before QEMU is started.
"""

from __future__ import annotations

import ipaddress
import json
import shlex
import string
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


# Bytes Linux's isspace() splits a command line at (lib/ctype.c: 9-13, 32 and 0xA0,
# which also occurs inside UTF-8 characters such as "à"); Unikraft splits at a subset.
_KERNEL_SPACE = frozenset(b"\t\n\v\f\r \xa0")


def split_args(text: str) -> list[str]:
    """The words of ``args`` as a POSIX shell splits them; UsageError if it cannot.

    The one place where shlex's ValueError (an unbalanced quote, a trailing backslash)
    becomes the user's error. No guest can receive a NUL character, so none is accepted.
    """
    if not isinstance(text, str):
        raise UsageError(f"args must be text, not {type(text).__name__}")
    if "\0" in text:
        raise UsageError(f"args {text!r}: a NUL character cannot be passed to a guest")
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"args {text!r}: {str(exc).lower()}") from None


def cmdline_word(word: str) -> str:
    """One word written for a kernel command line so that the guest reads it back whole.

    A word without spaces or quotes stays as it is; otherwise it is double-quoted the way
    kernels understand: ``key="value with space"`` or ``"a b"``. Single quotes are quoted
    too: Unikraft would take them as the start of a quote.
    """
    if '"' in word:
        raise UsageError(
            f'args word {word!r} has a double quote ("), which a kernel command line '
            "cannot carry (it has no escape); leave it out or use single quotes"
        )
    try:
        encoded = word.encode()
    except UnicodeEncodeError:
        raise UsageError(f"args word {word!r} is not valid text (UTF-8)") from None
    if word and "'" not in word and not _KERNEL_SPACE.intersection(encoded):
        return word
    key, equals, value = word.partition("=")
    if equals and key and not _KERNEL_SPACE.intersection(key.encode()) and "'" not in key:
        return f'{key}="{value}"'
    return f'"{word}"'


def cmdline_words(text: str) -> list[str]:
    """The words of ``args`` ready to join with spaces into a kernel command line."""
    return [cmdline_word(word) for word in split_args(text)]


def _linux(net: GuestNet, extra: str, template: str | None) -> BootSpec:
    words = [
        "console=ttyS0",
        "panic=-1",
        f"umon.ip={net.address.with_prefixlen}",
        f"umon.gw={net.gateway}",
        *net.umon_words(),
    ]
    return BootSpec(" ".join([*words, *cmdline_words(extra)]), pvpanic=True)


def _unikraft(net: GuestNet, extra: str, template: str | None) -> BootSpec:
    # netdev.ip=CIDR:GATEWAY; words after `--` reach the application's main(), and at
    # least one kernel word must come before `--`.
    kernel = [f"netdev.ip={net.address.with_prefixlen}:{net.gateway}", *cmdline_words(extra)]
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
        "rc": [{"bin": "app", "args": [*net.umon_words(), *split_args(extra)]}],
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
    command = cmdline_words(extra) or ["/app"]
    return BootSpec(" ".join([*options, *command, *net.umon_words()]))


def _mirage(net: GuestNet, extra: str, template: str | None) -> BootSpec:
    # MirageOS 4 unikernels (solo5 virtio target) take runtime arguments as options.
    options = [f"--ipv4={net.address.with_prefixlen}", f"--ipv4-gateway={net.gateway}"]
    return BootSpec(" ".join([*options, *cmdline_words(extra)]))


def _nanos(net: GuestNet, extra: str, template: str | None) -> BootSpec:
    # Nanos boots a disk image built by `ops`; its address is in the image manifest
    # (ipaddr/netmask/gateway), so nothing goes on a command line.
    return BootSpec(None, disk_boot=True)


_PLACEHOLDERS = ("ip", "cidr", "netmask", "gateway", "collector", "port", "token", "name")


def _fill_template_untrusted(template: str, values: dict[str, str]) -> str:
    """``template`` with its ``{placeholder}`` fields replaced; UsageError for anything else.

    Not ``str.format``: its attribute and index lookups (``{ip.x}``, ``{ip[9]}``) and
    format specs (``{ip:>999999999}``) raise a zoo of exceptions or build huge strings.
    Only bare placeholders and the ``{{``/``}}`` escapes are accepted.
    """
    placeholders = ", ".join("{" + p + "}" for p in _PLACEHOLDERS)
    if "\0" in template:
        raise UsageError(f"bad template {template!r}: a NUL character cannot be passed")
    parts: list[str] = []
    try:
        for literal, field_name, spec, conversion in string.Formatter().parse(template):
            parts.append(literal)
            if field_name is None:
                continue
            if field_name not in values or spec or conversion:
                written = field_name + (f"!{conversion}" if conversion else "")
                written += f":{spec}" if spec else ""
                raise ValueError(f"unknown placeholder {{{written}}}")
            parts.append(values[field_name])
    except ValueError as exc:
        raise UsageError(
            f"bad template {template!r}: {exc}; placeholders are {placeholders} "
            "(write {{ and }} for braces)"
        ) from None
    return "".join(parts)


def _generic(net: GuestNet, extra: str, template: str | None) -> BootSpec:
    if not isinstance(template, str) or not template:
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
    text = _fill_template_untrusted(template, values)
    return BootSpec(" ".join([text, *cmdline_words(extra)]).strip())


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
    """The boot arguments for ``flavor``; UsageError, and only that, for bad input.

    Bad input is an unknown flavor, ``extra`` (the user's ``args``) that does not split
    or cannot be written on a command line, or a generic template that does not fill.
    """
    make = FLAVORS.get(flavor) if isinstance(flavor, str) else None
    if make is None:
        raise UsageError(f"unknown flavor {flavor!r}; use one of {', '.join(FLAVORS)}")
    return make(net, extra, template)
