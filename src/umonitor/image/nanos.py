"""Nanos images: the manifest one fleet instance boots with, and the disk image made of it.

How this works
--------------
Nanos takes no command line: program, arguments, environment, network and kernel
libraries are all in a *manifest*, a tuple that ``mkfs`` parses and writes into the
image. So each instance gets an image of its own, written before QEMU starts:

    (
        children:(app:(contents:(host:/srv/app)))
        program:/app
        arguments:[app -v "two words"]
        environment:(UMON_CONFIG:"umon.collector=10.77.0.1:2333 umon.name=web-1")
        en1:(ipaddr:10.77.0.5 netmask:255.255.255.0 gateway:10.77.0.1)
        boot:(children:(klib:(children:(syslog:(contents:(host:/nanos/klibs/syslog))))))
        klibs:bootfs
        syslog:(server:10.77.0.1 server_port:5514)
    )

``host:`` names a file on this machine that mkfs copies into the image. ``en1`` is the
first NIC; without its ``ipaddr`` Nanos would ask DHCP. The syslog kernel library
(loaded from the boot filesystem's ``klib/`` directory, which ``klibs:bootfs`` selects)
sends every console line as RFC 5424 over UDP.

Syntax (src/runtime/tuple_parser.c in Nanos): a bare word ends at white space or one
of ``()[]``, a name also at ``:``, ``|`` and ``/``, and a ``#`` where white space may
stand starts a comment. A double-quoted string holds anything; in it a backslash takes
the next character literally, so ``\\"`` and ``\\\\`` are a quote and a backslash. The
manifest is UTF-8. Words that are not plain are written quoted; only a NUL character
(which would cut the C string the program gets) cannot be written and is refused.

A Nanos directory (``nanos_dir``) holds ``kernel.img``, ``boot.img``, ``mkfs`` and
``klibs/`` (the klibs must come from the same build as the kernel): what
guests/nanos/build.sh leaves in its OUT directory. An ``ops`` release directory
(``~/.ops/VERSION``) has the first, second and last in the same places, as Nanos'
``make release`` packs them; that target packs no ``mkfs``, so one must be put there
(``make tools`` builds it).
"""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from umonitor.errors import UsageError

PROGRAM = "/app"  # where the program is in the image
ARGV0 = "app"
SYSLOG_KLIB = "syslog"
MKFS_TIMEOUT = 60.0

# Words written bare; anything else is quoted. Names end at ":" and "/" too.
_PLAIN_VALUE = re.compile(r"[A-Za-z0-9_.,+=@%/:-]+")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.,+=@%-]+")


def _text(what: str, text: str) -> bytes:
    if not isinstance(text, str):
        raise UsageError(f"{what} must be text, not {type(text).__name__}")
    if "\0" in text:
        raise UsageError(f"{what} {text!r} has a NUL character, which Nanos cannot pass on")
    try:
        return text.encode()
    except UnicodeEncodeError:
        raise UsageError(f"{what} {text!r} is not valid text (UTF-8)") from None


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def value_word(what: str, text: str) -> str:
    """``text`` as a manifest value: bare when plain, else quoted; UsageError for a NUL."""
    _text(what, text)
    return text if _PLAIN_VALUE.fullmatch(text) else _quoted(text)


def name_word(what: str, text: str) -> str:
    """``text`` as a manifest name (a tuple key): bare when plain, else quoted."""
    _text(what, text)
    return text if _PLAIN_NAME.fullmatch(text) else _quoted(text)


def klibs_dir(nanos_dir: Path) -> Path:
    """Where a Nanos directory keeps its kernel libraries (as in ``~/.ops/VERSION``)."""
    return nanos_dir / "klibs"


def _network(address: ipaddress.IPv4Interface, gateway: ipaddress.IPv4Address) -> str:
    if not isinstance(address, ipaddress.IPv4Interface):
        raise UsageError(f"address must be an IPv4 interface (10.0.0.5/24), not {address!r}")
    if not isinstance(gateway, ipaddress.IPv4Address):
        raise UsageError(f"gateway must be an IPv4 address, not {gateway!r}")
    net = address.network
    if gateway not in net or gateway == address.ip:
        raise UsageError(
            f"gateway {gateway} must be another address of {address.ip}'s network {net}"
        )
    if net.prefixlen < 31 and address.ip in (net.network_address, net.broadcast_address):
        raise UsageError(f"{address} is the network's own or broadcast address, not a host's")
    return f"en1:(ipaddr:{address.ip} netmask:{address.netmask} gateway:{gateway})"


def _host_file(what: str, path: Path) -> str:
    if not isinstance(path, Path):
        raise UsageError(f"{what} must be a path, not {type(path).__name__}")
    if not path.is_absolute():
        raise UsageError(f"{what} {str(path)!r} must be an absolute path (mkfs reads it)")
    return value_word(what, str(path))


def manifest(
    program: Path,
    args: Sequence[str],
    env: Mapping[str, str],
    address: ipaddress.IPv4Interface,
    gateway: ipaddress.IPv4Address,
    syslog: tuple[str, int] | None,
    klibs_dir: Path | None,
) -> str:
    """The Nanos manifest that boots ``program`` as ``/app`` with a static address.

    ``args`` are the program's words after ``argv[0]`` ("app"); ``env`` its
    environment (the nanos flavor's ``BootSpec.environment``). ``syslog`` is the
    (host, port) the syslog klib sends console lines to; it needs ``klibs_dir``, where
    the klib is read from when the image is made. Every value is written so that
    Nanos reads it back exactly; what cannot be written raises UsageError.
    """
    lines = [f"children:(app:(contents:(host:{_host_file('program', program)})))"]
    lines.append(f"program:{PROGRAM}")
    if isinstance(args, str) or not isinstance(args, Sequence):
        raise UsageError(f"args must be a list of words, not {type(args).__name__}")
    words = [ARGV0, *(value_word("argument", arg) for arg in args)]
    lines.append(f"arguments:[{' '.join(words)}]")
    if not isinstance(env, Mapping):
        raise UsageError(f"env must map names to values, not {type(env).__name__}")
    pairs = []
    for name, value in env.items():
        if not isinstance(name, str) or not name or "=" in name:
            raise UsageError(f"environment name {name!r} must be non-empty text without '='")
        written = value_word(f"environment variable {name}", value)
        pairs.append(f"{name_word('environment name', name)}:{written}")
    lines.append(f"environment:({' '.join(pairs)})")
    lines.append(_network(address, gateway))
    if syslog is not None:
        lines.extend(_syslog(syslog, klibs_dir))
    return "(\n" + "".join(f"    {line}\n" for line in lines) + ")\n"


def _syslog(syslog: tuple[str, int], klibs: Path | None) -> list[str]:
    if not (isinstance(syslog, tuple) and len(syslog) == 2):
        raise UsageError(f"syslog must be (host, port), not {syslog!r}")
    host, port = syslog
    if not isinstance(host, str) or not host.strip():
        raise UsageError(f"syslog host must be a name or an address, not {host!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise UsageError(f"syslog port must be a number from 1 to 65535, not {port!r}")
    if klibs is None:
        raise UsageError("syslog needs the directory of Nanos' klibs (NANOS_DIR/klibs)")
    klib = _host_file("syslog klib", klibs / SYSLOG_KLIB)
    return [
        f"boot:(children:(klib:(children:({SYSLOG_KLIB}:(contents:(host:{klib}))))))",
        "klibs:bootfs",
        f"syslog:(server:{value_word('syslog host', host)} server_port:{port})",
    ]


def _mkfs_error(done: subprocess.CompletedProcess[str]) -> str:
    """mkfs's own words: it prints its errors (``halt``) on stdout after the metadata."""
    for line in done.stderr.splitlines():
        if line.strip():
            return line.strip()
    lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {done.returncode}, no message"


def build_image(
    nanos_dir: Path, manifest_text: str, out: Path, *, timeout: float = MKFS_TIMEOUT
) -> None:
    """Write the disk image ``out`` for ``manifest_text`` with ``nanos_dir``'s mkfs.

    The image replaces ``out`` only once it is complete. It is made readable by its
    owner only: the manifest in it may hold the instance's token. UsageError, with
    mkfs's message, when anything is missing or mkfs fails.
    """
    nanos_dir = Path(nanos_dir)
    kernel, boot, mkfs = (nanos_dir / name for name in ("kernel.img", "boot.img", "mkfs"))
    for path in (kernel, boot, mkfs):
        if not path.is_file():
            raise UsageError(
                f"{nanos_dir} has no {path.name}: give a directory built by "
                "guests/nanos/build.sh or an ops release directory (~/.ops/VERSION)"
            )
    if not os.access(mkfs, os.X_OK):
        raise UsageError(f"{mkfs} is not executable")
    _text("manifest", manifest_text)
    out = Path(out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    argv = [str(mkfs), "-b", str(boot), "-k", str(kernel), str(tmp)]
    try:
        try:
            done = subprocess.run(
                argv,
                input=manifest_text,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise UsageError(f"{mkfs} did not finish within {timeout:g} s") from None
        except OSError as exc:
            raise UsageError(f"cannot run {mkfs}: {exc.strerror}") from None
        if done.returncode != 0:
            raise UsageError(f"mkfs could not write {out}: {_mkfs_error(done)}")
        tmp.chmod(0o600)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
