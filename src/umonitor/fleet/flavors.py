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

Two kinds of arguments: ``args`` are the kernel's (Unikraft's ``netdev.ip``, Linux's
``loglevel``), ``app_args`` the application's own, what its ``main()`` gets (after
``--`` for Unikraft, the program's command line for rumprun and Nanos). The ``umon.*``
words never reach ``main()``: they are the kernel's on Linux and Unikraft (the
library reads them as Unikraft library parameters), and the environment variable
``UMON_CONFIG`` on rumprun and Nanos.
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
    # For a guest whose program, arguments and environment are built into its disk
    # image (Nanos): what the fleet writes into it before each start.
    program_args: tuple[str, ...] = ()
    environment: tuple[tuple[str, str], ...] = ()


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


def _linux(net: GuestNet, extra: str, template: str | None, app: str) -> BootSpec:
    words = [
        "console=ttyS0",
        "panic=-1",
        f"umon.ip={net.address.with_prefixlen}",
        f"umon.gw={net.gateway}",
        *net.umon_words(),
    ]
    return BootSpec(" ".join([*words, *cmdline_words(extra)]), pvpanic=True)


def _unikraft(net: GuestNet, extra: str, template: str | None, app: str) -> BootSpec:
    # Kernel words: netdev.ip=CIDR:GATEWAY, the umon.* words (parameters of the umonitor
    # Unikraft library), the user's args, `--`, then the words for the application's
    # main(). The `--` is always there: without it ukboot parses no parameter at all
    # and hands every word to main() (netdev.ip unread, so no network). At least one
    # kernel word must come before it, and netdev.ip always does.
    kernel = [
        f"netdev.ip={net.address.with_prefixlen}:{net.gateway}",
        *net.umon_words(),
        *cmdline_words(extra),
    ]
    return BootSpec(" ".join([*kernel, "--", *cmdline_words(app)]))


def rumprun_word(word: str) -> str:
    """One word of rumprun's ``cmdline``, written so that rumprun reads it back whole.

    Two parsers read it, and neither unescapes for the other: the JSON tokenizer
    (jsmn) keeps a string's bytes as they are and accepts only JSON's escapes, then
    ``rumprun_parseargs`` splits at blanks, groups quoted parts and takes a backslash
    as "the next byte as it is". So a backslash or a double quote is written ``\\\\`` or
    ``\\"`` (valid JSON, read back as the byte), a word with a space or none at all
    is single-quoted, and a single quote or a control character, which neither can
    carry, is refused.
    """
    if "'" in word or any(ord(c) < 0x20 or ord(c) == 0x7F for c in word):
        raise UsageError(
            f"app_args word {word!r} has a single quote or a control character, which "
            "rumprun's command line cannot carry; leave it out"
        )
    text = word.replace("\\", "\\\\").replace('"', '\\"')
    return f"'{text}'" if not word or " " in word else text


def _no_kernel_args(flavor: str, extra: str) -> None:
    if split_args(extra):
        raise UsageError(
            f"a {flavor} guest has no kernel command line: give its program's arguments as app_args"
        )


def _rumprun(net: GuestNet, extra: str, template: str | None, app: str) -> BootSpec:
    # The hw/x86 platform reads a JSON configuration from the first multiboot module,
    # in the format lib/librumprun_base/config.c parses: one flat "net" object, "env"
    # as one NAME=VALUE string, "cmdline" as the program's command line (one string,
    # where "rc" would need an argv array per program). Built by hand: the cmdline
    # value must be written raw (see rumprun_word); the other values are names,
    # addresses and hex tokens, which need no JSON escape, written as UTF-8 because
    # jsmn would keep a \u escape as its six bytes.
    _no_kernel_args("rumprun", extra)
    network = {
        "if": "vioif0",
        "type": "inet",
        "method": "static",
        "addr": str(net.address.ip),
        "mask": str(net.address.network.prefixlen),
        "gw": str(net.gateway),
    }
    cmdline = " ".join(["app", *(rumprun_word(w) for w in split_args(app))])
    text = (
        f'{{"net":{json.dumps(network)},'
        f'"env":{json.dumps("UMON_CONFIG=" + " ".join(net.umon_words()), ensure_ascii=False)},'
        f'"hostname":{json.dumps(net.name, ensure_ascii=False)},'
        f'"cmdline":"{cmdline}"}}\n'
    )
    return BootSpec(None, files={"rumprun.json": text}, initrd_file="rumprun.json")


def _osv(net: GuestNet, extra: str, template: str | None, app: str) -> BootSpec:
    options = [
        f"--ip=eth0,{net.address.ip},{net.address.netmask}",
        f"--defaultgw={net.gateway}",
    ]
    command = cmdline_words(extra) or ["/app"]
    return BootSpec(" ".join([*options, *command, *net.umon_words()]))


def _mirage(net: GuestNet, extra: str, template: str | None, app: str) -> BootSpec:
    # MirageOS 4 unikernels (solo5 virtio target) take runtime arguments as options.
    options = [f"--ipv4={net.address.with_prefixlen}", f"--ipv4-gateway={net.gateway}"]
    return BootSpec(" ".join([*options, *cmdline_words(extra)]))


def _nanos(net: GuestNet, extra: str, template: str | None, app: str) -> BootSpec:
    # Nanos reads program, arguments, environment and address from its image's
    # manifest: the fleet builds one image per instance (image/nanos.py) from these.
    _no_kernel_args("nanos", extra)
    return BootSpec(
        None,
        disk_boot=True,
        program_args=tuple(split_args(app)),
        # UMON_CONFIG for the library; IMAGE_NAME is what Nanos' syslog klib sends as
        # APP-NAME (else "/app"), so its messages carry the instance's name too.
        environment=(("UMON_CONFIG", " ".join(net.umon_words())), ("IMAGE_NAME", net.name)),
    )


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


def _generic(net: GuestNet, extra: str, template: str | None, app: str) -> BootSpec:
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


FLAVORS: dict[str, Callable[[GuestNet, str, str | None, str], BootSpec]] = {
    "linux": _linux,
    "unikraft": _unikraft,
    "rumprun": _rumprun,
    "osv": _osv,
    "mirage-solo5": _mirage,
    "nanos": _nanos,
    "generic": _generic,
}


# Flavors whose application gets arguments of its own (app_args).
APP_ARGS_FLAVORS = ("unikraft", "rumprun", "nanos")


def boot_spec(
    flavor: str, net: GuestNet, extra: str = "", template: str | None = None, app: str = ""
) -> BootSpec:
    """The boot arguments for ``flavor``; UsageError, and only that, for bad input.

    Bad input is an unknown flavor, ``extra`` (the user's ``args``) or ``app`` (the
    user's ``app_args``) that does not split or cannot be written where that flavor
    puts it, or a generic template that does not fill.
    """
    make = FLAVORS.get(flavor) if isinstance(flavor, str) else None
    if make is None:
        raise UsageError(f"unknown flavor {flavor!r}; use one of {', '.join(FLAVORS)}")
    if split_args(app) and flavor not in APP_ARGS_FLAVORS:
        raise UsageError(
            f"app_args is for {', '.join(APP_ARGS_FLAVORS)} guests; a {flavor} guest "
            "takes its arguments in args"
        )
    return make(net, extra, template, app)
