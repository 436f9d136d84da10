"""``umonitor.toml``: the instances to run, validated with every error and its line.

How this works: ``tomllib`` parses (its syntax errors already carry a line); then each
value is checked against the schema below, and every problem is reported at once,
with the line it is on, found by ``_Locator`` from the ``[[instance]]`` headers and
``key =`` lines of the file (tomllib keeps no positions).

    [network]                  # optional
    bridge = "umon0"
    address = "10.77.0.1/24"   # the host's address on the bridge; guests lease from .2
    [collector]                # optional
    port = 2333
    open = false               # true: also accept guests that are not managed instances
    max_connections = 16384    # limits, as serve's options (docs/reliability.md):
    max_per_source = 1024      #   connections in all and per address,
    handshake_timeout = 10.0   #   seconds to say who it is,
    frame_timeout = 30.0       #   for a started frame / to read its ACKs,
    idle_timeout = 0.0         #   silent this long: closed (0: never),
    rate_limit = 0.0           #   records/s per instance (0: unlimited),
    pause_timeout = 3600.0     #   a guest stopped in gdb keeps its connection this long
    [syslog]                   # optional: syslog UDP + TCP on the bridge address
    port = 514                 # 0 turns it off
    [[instance]]
    name = "web"               # [a-z0-9][a-z0-9._-]*; with count = N: web-1 ... web-N
    kernel = "build/image/vmlinuz"
    initrd = "build/image/initrd.img"   # optional
    flavor = "linux"           # linux unikraft rumprun osv mirage-solo5 nanos generic
    template = "..."           # generic flavor only
    memory = "256M"            # or a number of MiB
    cpus = 1
    args = "extra kernel arguments"
    app_args = "the application's own arguments"   # unikraft, rumprun, nanos: main()'s
    nanos = "nanos/"           # nanos flavor: directory with kernel.img, boot.img, mkfs
    listen = 2333              # the guest listens there; the collector connects to it
    symbols = "build/app.dbg"  # ELF with DWARF for crash backtraces; default: the kernel
                               # if it has DWARF, else KERNEL.dbg or KERNEL's stem .dbg
    paused = false             # true: start halted at the first instruction, for
                               # 'umonitor debug' from boot ('umonitor cont' runs it)
    restart = "on-failure"     # no | on-failure | always
    backoff = 1.0              # first restart delay, seconds; doubles up to backoff_max
    backoff_max = 60.0
    count = 1
    accel = "auto"             # auto | kvm | tcg
    [[export]]                 # optional, repeatable: forward what is stored
    name = "central"
    url = "syslog+tcp://10.0.0.9:514"   # syslog+tls relp otlp+http otlp+https too
    start = "end"              # options as in docs/export.md: level, max_backlog, ca...
    [web]                      # optional: 'up' also serves the dashboard (docs/web.md)
    listen = "127.0.0.1:8321"  # not loopback: token or token_file is required
    token_file = "web.token"   # its first line is the token (or token = "...")
    [store]                    # optional: rotation, retention, quota (docs/storage.md)
    rotate_size = "64MiB"      # or a number of bytes; 0 = never rotate
    retain_files = 5           # rotated files kept per log file; 0 = all
    retain_days = 14           # 0 (default) = keep whatever its age
    quota = "10GiB"            # all log files together; 0 (default) = no quota
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from umonitor.assembly import WebSpec
from umonitor.collector.admission import is_local_host
from umonitor.collector.base import GuestLimits, parse_endpoint
from umonitor.debug.symbols_file import is_elf
from umonitor.errors import UsageError
from umonitor.export.config import ExportSpec, parse_export
from umonitor.fleet.flavors import FLAVORS, GuestNet, boot_spec, split_args
from umonitor.fleet.qemu import parse_memory
from umonitor.sizes import parse_size
from umonitor.store.retention import Limits

RESTART_POLICIES = ("no", "on-failure", "always")
DEFAULT_HOST = ipaddress.IPv4Interface("10.77.0.1/24")
ACCELS = ("auto", "kvm", "tcg")
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,47}")
# [collector] key: (GuestLimits field, least value, kind)
_LIMIT_KEYS = {
    "max_connections": ("max_connections", 1, "count"),
    "max_per_source": ("max_per_source", 1, "count"),
    "handshake_timeout": ("handshake_seconds", 0.001, "seconds"),
    "frame_timeout": ("frame_seconds", 0.001, "seconds"),
    "idle_timeout": ("idle_seconds", 0.0, "number"),
    "rate_limit": ("rate", 0.0, "number"),
    "pause_timeout": ("pause_seconds", 0.001, "seconds"),
}
# What a flavor is called with at load time, so that args and templates fail here, with
# their line, and not when the instance is launched.
PROBE_NET = GuestNet(
    "probe",
    ipaddress.IPv4Interface("10.0.0.2/24"),
    ipaddress.IPv4Address("10.0.0.1"),
    2333,
    "x" * 32,
)
_INSTANCE_KEYS = {
    "name", "kernel", "initrd", "flavor", "template", "memory", "cpus", "args", "restart",
    "backoff", "backoff_max", "count", "accel", "app_args", "nanos", "listen", "symbols",
    "paused",
}  # fmt: skip
# What the nanos flavor needs from a Nanos build (an ops release directory has the first
# two; mkfs must be copied in from a build).
NANOS_FILES = ("kernel.img", "boot.img", "mkfs")


@dataclass(frozen=True, slots=True)
class InstanceConfig:
    name: str
    kernel: Path
    initrd: Path | None = None
    flavor: str = "linux"
    template: str | None = None
    memory_mib: int = 256
    cpus: int = 1
    args: str = ""
    restart: str = "no"
    backoff: float = 1.0
    backoff_max: float = 60.0
    accel: str = "auto"
    app_args: str = ""
    nanos: Path | None = None  # flavor nanos: kernel.img, boot.img and mkfs are here
    listen: int | None = None  # a guest that listens (2018 API): the collector dials it
    symbols: Path | None = None  # given symbols file; None: debug/symbols_file.py's rule
    paused: bool = False  # QEMU -S: halted at the first instruction until gdb or cont


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    bridge: str = "umon0"
    address: ipaddress.IPv4Interface = DEFAULT_HOST


@dataclass(frozen=True, slots=True)
class FleetConfig:
    path: Path
    network: NetworkConfig
    collector_port: int
    instances: tuple[InstanceConfig, ...]
    syslog_port: int = 514  # syslog (UDP and TCP) on the bridge address; 0 = off
    exports: tuple[ExportSpec, ...] = ()
    open: bool = False  # accept unmanaged guests from the bridge (loopback always may)
    guest_limits: GuestLimits = field(default_factory=GuestLimits)
    store: Limits = field(default_factory=Limits)  # rotation, retention, quota
    web: WebSpec | None = None  # [web]: the dashboard as a helper process of `up`


class _Locator:
    """Line numbers for keys of ``[[instance]]`` tables and other sections."""

    def __init__(self, text: str) -> None:
        self._lines: dict[tuple[str, int, str], int] = {}
        self._headers: dict[tuple[str, int], int] = {}
        section, index = "", -1
        counts: dict[str, int] = {}
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if line.startswith("[["):
                section = line.strip("[] ")
                index = counts.get(section, -1) + 1
                counts[section] = index
                self._headers[section, index] = number
            elif line.startswith("["):
                section, index = line.strip("[] "), 0
                self._headers[section, index] = number
            else:
                match = re.match(r"([A-Za-z0-9_\-\"']+)\s*=", line)
                if match:
                    self._lines.setdefault((section, index, match.group(1).strip("\"'")), number)

    def line(self, section: str, index: int, key: str | None = None) -> int:
        if key is not None and (section, index, key) in self._lines:
            return self._lines[section, index, key]
        return self._headers.get((section, index), 1)


def load_config(path: Path) -> FleetConfig:
    """Read and validate ``path``; UsageError lists every problem with its line."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: {exc}") from exc
    return parse_config(data, text, path)


def parse_config(data: dict[str, Any], text: str, path: Path) -> FleetConfig:
    where = _Locator(text)
    errors: list[str] = []

    def problem(line: int, message: str) -> None:
        errors.append(f"{path.name}:{line}: {message}")

    base = path.parent
    for key in data:
        if key not in ("network", "collector", "syslog", "instance", "export", "store", "web"):
            problem(where.line(key, 0), f"unknown section [{key}]")
    network = NetworkConfig()
    net = data.get("network", {})
    if isinstance(net, dict):
        bridge = net.get("bridge", network.bridge)
        if not isinstance(bridge, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,15}", bridge):
            problem(where.line("network", 0, "bridge"), "bridge must be an interface name of "
                    "at most 15 letters, digits, '.', '_' or '-'")  # fmt: skip
            bridge = network.bridge
        address = network.address
        try:
            address = ipaddress.IPv4Interface(net.get("address", str(network.address)))
            if address.network.prefixlen > 30:
                raise ValueError("prefix too long")
        except (ValueError, TypeError):
            problem(
                where.line("network", 0, "address"),
                "address must be the host's IPv4 address with a prefix, e.g. 10.77.0.1/24",
            )
        network = NetworkConfig(bridge, address)
    port = 2333
    open_mode = False
    guest_limits = GuestLimits()
    collector = data.get("collector", {})
    if isinstance(collector, dict):
        port = collector.get("port", 2333)
        if not isinstance(port, int) or not 1 <= port <= 65535:
            problem(where.line("collector", 0, "port"), "port must be 1-65535")
            port = 2333
        open_mode = collector.get("open", False)
        if not isinstance(open_mode, bool):
            problem(where.line("collector", 0, "open"), "open must be true or false")
            open_mode = False
        limits: dict[str, float] = {}
        for key, value in collector.items():
            if key in ("port", "open"):
                continue
            field_name, least, kind = _LIMIT_KEYS.get(key, ("", 0.0, ""))
            if not field_name:
                problem(where.line("collector", 0, key), f"unknown key {key!r} in [collector]")
            elif (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or (kind == "count" and not isinstance(value, int))
                or value < least
            ):
                need = {"count": "a whole number of at least 1", "seconds": "seconds above 0"}
                problem(where.line("collector", 0, key),
                        f"{key} must be {need.get(kind, 'a number of at least 0')}")  # fmt: skip
            else:
                limits[field_name] = value
        guest_limits = GuestLimits(**limits)  # type: ignore[arg-type]
    syslog_port = 514
    syslog = data.get("syslog", {})
    if isinstance(syslog, dict):
        syslog_port = syslog.get("port", 514)
        if (
            not isinstance(syslog_port, int)
            or not 0 <= syslog_port <= 65535
            or (syslog_port == port)
        ):
            problem(where.line("syslog", 0, "port"),
                    "syslog port must be 0 (off) or 1-65535, not the collector's port")  # fmt: skip
            syslog_port = 514
    raw_instances = data.get("instance", [])
    if not isinstance(raw_instances, list) or not raw_instances:
        problem(1, "no [[instance]] tables: nothing to run")
        raw_instances = []
    instances: list[InstanceConfig] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(raw_instances):
        at = where.line("instance", i)
        label = f"instance {raw.get('name', i + 1)!r}" if isinstance(raw, dict) else "instance"

        def bad(key: str, message: str, label: str = label, i: int = i) -> None:
            problem(where.line("instance", i, key), f"{label}: {message}")

        if not isinstance(raw, dict):
            problem(at, "each [[instance]] must be a table")
            continue
        for key in raw:
            if key not in _INSTANCE_KEYS:
                bad(key, f"unknown key {key!r}")
        # After a problem, go on with a stand-in value: every problem of the instance
        # is reported, and nothing is built (errors end the load).
        name = raw.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            bad("name", "name must be 1-48 of a-z 0-9 . _ - (starting with a letter or digit)")
            name = None
        kernel_text = raw.get("kernel")
        if not isinstance(kernel_text, str) or not kernel_text:
            bad("kernel", "kernel (the image to boot) is required")
            kernel_text = None
        kernel = _image(base, kernel_text, "kernel", bad)
        initrd = None
        if "initrd" in raw:
            if not isinstance(raw["initrd"], str) or not raw["initrd"]:
                bad("initrd", "initrd must be a path")
            else:
                initrd = _image(base, raw["initrd"], "initrd", bad)
        flavor = raw.get("flavor", "linux")
        if not isinstance(flavor, str) or flavor not in FLAVORS:
            bad("flavor", f"unknown flavor {flavor!r}; use one of {', '.join(FLAVORS)}")
            flavor = None
        template = raw.get("template")
        if flavor == "generic":
            if not isinstance(template, str) or not template:
                bad("template", 'the generic flavor needs template = "... {ip} {collector} ..."')
            else:
                try:
                    boot_spec(flavor, PROBE_NET, "", template)
                except UsageError as exc:
                    bad("template", str(exc))
        memory = 256
        raw_memory = raw.get("memory", 256)
        try:
            if isinstance(raw_memory, bool) or not isinstance(raw_memory, int | str):
                raise ValueError
            memory = parse_memory(raw_memory)
        except UsageError as exc:
            bad("memory", str(exc))
        except ValueError:  # e.g. "²M": isdigit() but not int()
            bad("memory", f"bad memory size {raw_memory!r}; use e.g. 256M or 1G")
        cpus = raw.get("cpus", 1)
        if not isinstance(cpus, int) or not 1 <= cpus <= 64:
            bad("cpus", "cpus must be 1-64")
            cpus = 1
        args = raw.get("args", "")
        if not isinstance(args, str):
            bad("args", "args must be a string of kernel arguments")
            args = ""
        app_args = raw.get("app_args", "")
        if not isinstance(app_args, str):
            bad("app_args", "app_args must be a string of the application's arguments")
            app_args = ""
        # Each tried alone, with the instance's own flavor, so that each is reported at
        # its own line; split_args for every flavor, even the generic one's template.
        for key, extra, app in (("args", args, ""), ("app_args", "", app_args)):
            try:
                split_args(extra or app)
                if flavor is not None:
                    boot_spec(flavor, PROBE_NET, extra, "{ip}", app)
            except UsageError as exc:
                bad(key, str(exc))
        nanos_dir = None
        if flavor == "nanos":
            nanos_dir = _nanos_dir(base, raw.get("nanos"), bad)
        elif "nanos" in raw:
            bad("nanos", "nanos (the Nanos kernel directory) is for the nanos flavor only")
        listen = raw.get("listen")
        if listen is not None and (
            isinstance(listen, bool) or not isinstance(listen, int) or not 1 <= listen <= 65535
        ):
            bad("listen", "listen must be the TCP port the guest listens on, 1-65535")
            listen = None
        symbols = None
        if "symbols" in raw:
            if not isinstance(raw["symbols"], str) or not raw["symbols"]:
                bad("symbols", "symbols must be the path of an ELF file with DWARF")
            else:
                before = len(errors)
                symbols = _image(base, raw["symbols"], "symbols", bad)
                if symbols is not None and len(errors) == before and not is_elf(symbols):
                    bad("symbols", f"symbols {raw['symbols']!r} is not an ELF file")
        paused = raw.get("paused", False)
        if not isinstance(paused, bool):
            bad("paused", "paused must be true or false")
            paused = False
        restart = raw.get("restart", "no")
        if restart not in RESTART_POLICIES:
            bad("restart", f"restart must be one of {', '.join(RESTART_POLICIES)}")
            restart = "no"
        backoff, backoff_max = raw.get("backoff", 1.0), raw.get("backoff_max", 60.0)
        if not isinstance(backoff, int | float) or not 0 < backoff <= 3600:
            bad("backoff", "backoff must be a number of seconds, 0 < backoff <= 3600")
            backoff = 1.0
        if not isinstance(backoff_max, int | float) or not backoff <= backoff_max <= 86400:
            bad("backoff_max", "backoff_max must be at least backoff and at most 86400")
            backoff_max = 60.0
        accel = raw.get("accel", "auto")
        if accel not in ACCELS:
            bad("accel", f"accel must be one of {', '.join(ACCELS)}")
            accel = "auto"
        count = raw.get("count", 1)
        if not isinstance(count, int) or not 1 <= count <= 1000:
            bad("count", "count must be 1-1000")
            count = 1
        if name is None:
            continue  # reported above; a stand-in name would only add false duplicates
        names = [name] if count == 1 else [f"{name}-{n}" for n in range(1, count + 1)]
        for replica in names:
            if replica in seen:
                bad("name", f"{replica!r} is also defined at line {seen[replica]}")
                continue
            seen[replica] = at
            instances.append(
                InstanceConfig(
                    replica,
                    kernel or base,  # stand-ins never leave: problems end the load
                    initrd,
                    flavor or "linux",
                    template if isinstance(template, str) else None,
                    memory,
                    cpus,
                    args,
                    str(restart),
                    float(backoff),
                    float(backoff_max),
                    str(accel),
                    app_args,
                    nanos_dir,
                    listen,
                    symbols,
                    paused,
                )
            )
    exports: list[ExportSpec] = []
    raw_exports = data.get("export", [])
    if not isinstance(raw_exports, list):
        problem(where.line("export", 0), "exporters are [[export]] tables")
        raw_exports = []
    for i, raw in enumerate(raw_exports):
        if not isinstance(raw, dict) or not isinstance(raw.get("url"), str):
            problem(where.line("export", i), 'each [[export]] needs url = "KIND://HOST:PORT"')
            continue
        name = raw.get("name", f"export-{i + 1}")
        options = {k: v for k, v in raw.items() if k not in ("name", "url")}
        try:
            spec = parse_export(str(name), raw["url"], options)
        except UsageError as exc:
            problem(where.line("export", i), str(exc))
            continue
        if any(e.name == spec.name for e in exports):
            problem(where.line("export", i, "name"), f"two exporters are named {spec.name!r}")
            continue
        exports.append(spec)
    store = _store_limits(data.get("store", {}), where, problem)
    web = _web(data.get("web"), base, where, problem)
    if errors:
        raise UsageError("invalid configuration:\n  " + "\n  ".join(errors))
    return FleetConfig(
        path, network, port, tuple(instances), syslog_port, tuple(exports), open_mode,
        guest_limits, store, web,
    )  # fmt: skip


WEB_LISTEN = "127.0.0.1:8321"  # umonitor web's default
MAX_WEB_TOKEN = 4096


def _web(
    raw: object, base: Path, where: _Locator, problem: Callable[[int, str], None]
) -> WebSpec | None:
    """The [web] table: where the dashboard listens and its token; None without one."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        problem(where.line("web", 0), "[web] is a table: listen, token or token_file")
        return None
    for key in raw:
        if key not in ("listen", "token", "token_file"):
            problem(where.line("web", 0, key), f"unknown key {key!r} in [web]")
    listen = raw.get("listen", WEB_LISTEN)
    if not isinstance(listen, str):
        problem(where.line("web", 0, "listen"), 'listen is "HOST:PORT"')
        return None
    try:
        endpoint = parse_endpoint(listen, 8321)
    except UsageError as exc:
        problem(where.line("web", 0, "listen"), str(exc))
        return None
    if "token" in raw and "token_file" in raw:
        problem(where.line("web", 0, "token"), "give token or token_file, not both")
        return None
    token = raw.get("token")
    if "token_file" in raw:
        token = _token_file(base, raw["token_file"], where, problem)
    if token is not None and (not isinstance(token, str) or not 0 < len(token) <= MAX_WEB_TOKEN):
        problem(where.line("web", 0, "token"), f"the token must be 1 to {MAX_WEB_TOKEN} characters")
        return None
    if token is None and not is_local_host(endpoint.host):
        problem(
            where.line("web", 0, "listen"),
            f"the dashboard on {endpoint.host} (not loopback) needs token_file or token",
        )
        return None
    return WebSpec(listen, token)


def _token_file(
    base: Path, text: object, where: _Locator, problem: Callable[[int, str], None]
) -> str | None:
    """The first line of [web] token_file (relative to the config's directory)."""
    line = where.line("web", 0, "token_file")
    if not isinstance(text, str) or not text:
        problem(line, "token_file is the path of a file whose first line is the token")
        return None
    path = base / text
    try:
        first = path.read_text(errors="replace").split("\n", 1)[0].strip()
    except OSError as exc:
        problem(line, f"cannot read the token file {path}: {exc.strerror}")
        return None
    if not first:
        problem(line, f"the token file {path} holds no token on its first line")
        return None
    return first


def _image(base: Path, text: str | None, key: str, bad: Callable[[str, str], None]) -> Path | None:
    """The absolute path of a kernel, initrd or symbols file; ``bad`` unless it is an
    existing file."""
    if text is None:
        return None
    if "\0" in text:
        bad(key, f"{key} {text!r} is not a path (it has a NUL character)")
        return None
    path = base / text
    try:
        path = path.resolve()
        if not path.exists():
            bad(key, f"{key} {text!r} does not exist (looked at {path})")
        elif not path.is_file():
            bad(key, f"{key} {text!r} is not a file (looked at {path})")
    except (OSError, RuntimeError) as exc:  # a name too long; RuntimeError: a symlink loop
        bad(key, f"{key} {text!r} cannot be looked at: {getattr(exc, 'strerror', None) or exc}")
    return path


def _nanos_dir(base: Path, text: object, bad: Callable[[str, str], None]) -> Path | None:
    """The directory of a Nanos build the nanos flavor makes images with."""
    if not isinstance(text, str) or not text or "\0" in text:
        bad(
            "nanos",
            f'the nanos flavor needs nanos = "DIR", a directory with {", ".join(NANOS_FILES)} '
            "(a Nanos build's output, e.g. make guests puts one in build/unikernels/nanos-*)",
        )
        return None
    path = (base / Path(text).expanduser()).resolve()
    missing = [name for name in NANOS_FILES if not (path / name).is_file()]
    if missing:
        bad(
            "nanos",
            f"nanos {text!r} has no {', '.join(missing)} (looked in {path}); "
            "point it at a Nanos build's output (an ops release directory lacks mkfs)",
        )
    return path


def _store_limits(raw: object, where: _Locator, problem: Callable[[int, str], None]) -> Limits:
    """The ``[store]`` table: sizes as "64MiB" or a number of bytes."""
    default = Limits()
    if not isinstance(raw, dict):
        problem(where.line("store", 0), "[store] must be a table")
        return default
    values: dict[str, Any] = {}
    for key, value in raw.items():
        line = where.line("store", 0, key)
        if key in ("rotate_size", "quota"):
            try:
                if isinstance(value, bool) or not isinstance(value, int | str):
                    raise ValueError(f'{key} must be a size like "64MiB" or a number of bytes')
                values[key] = value if isinstance(value, int) else parse_size(value)
                if values[key] < 0:
                    raise ValueError(f"{key} cannot be negative")
            except ValueError as exc:
                problem(line, str(exc))
        elif key == "retain_files":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                problem(line, "retain_files must be a number of files, 0 or more")
            else:
                values[key] = value
        elif key == "retain_days":
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                problem(line, "retain_days must be a number of days, 0 or more")
            else:
                values[key] = float(value)
        else:
            problem(line, f"unknown key {key!r} in [store]: use rotate_size, retain_files, "
                    "retain_days or quota")  # fmt: skip
    limits = Limits(**{**asdict(default), **values})
    try:
        limits.check()
    except ValueError as exc:
        problem(where.line("store", 0), str(exc))
        return default
    return limits
