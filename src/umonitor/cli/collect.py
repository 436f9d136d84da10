"""Collecting: ``serve`` (a collector on its own), ``send``, ``reindex``."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from umonitor.errors import NotAcknowledged, UsageError
from umonitor.records import Severity
from umonitor.store import layout

if TYPE_CHECKING:
    from umonitor.collector.base import GuestLimits
    from umonitor.export.config import ExportSpec

from umonitor.cli.app import data_dir, data_option, main


def _unique_exports(specs: list[ExportSpec]) -> list[ExportSpec]:
    names = [s.name for s in specs]
    for name in names:
        if names.count(name) > 1:
            raise UsageError(f"two --export options are named {name!r}; name them NAME=URL")
    return specs


@main.command()
@click.option(
    "--listen",
    "-l",
    "listen",
    multiple=True,
    metavar="HOST:PORT",
    help="Address for the native protocol, TCP and UDP (repeatable; default 127.0.0.1:2333).",
)
@click.option("--udp/--no-udp", default=True, show_default=True, help="Also listen on UDP.")
@click.option(
    "--dial",
    multiple=True,
    metavar="NAME=HOST:PORT",
    help="Connect out to a guest that listens, as the original Umonitor did (repeatable).",
)
@click.option(
    "--fsync",
    type=click.Choice(["always", "batch", "never"]),
    default="batch",
    show_default=True,
    help="always: fsync before every ACK; batch: ACK after write, fsync every second; "
    "never: leave it to the OS.",
)
@click.option("--max-frame", default=65536, show_default=True, help="Largest frame or line, bytes.")
@click.option("--no-index", is_flag=True, help="Do not run the indexer (logs/ls index on demand).")
@click.option(
    "--syslog",
    "syslog_default",
    is_flag=True,
    help="Also take syslog on UDP and TCP at the first --listen host: port 514 as root, else 5514.",
)
@click.option("--syslog-udp", multiple=True, metavar="HOST:PORT", help="Syslog over UDP.")
@click.option("--syslog-tcp", multiple=True, metavar="HOST:PORT", help="Syslog over TCP.")
@click.option("--syslog-tls", multiple=True, metavar="HOST:PORT", help="Syslog over TLS.")
@click.option(
    "--syslog-relp",
    multiple=True,
    metavar="HOST:PORT",
    help="Syslog over RELP (e.g. rsyslog's omrelp): each message answered once written.",
)
@click.option("--tls-cert", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--tls-key", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--export",
    "exports",
    multiple=True,
    metavar="[NAME=]URL",
    help="Forward what is stored (repeatable): syslog+tcp://HOST:PORT, syslog+tls://, "
    "relp://, otlp+http://HOST:PORT[/v1/logs], otlp+https://; options as ?start=beginning"
    "&level=warning&max_backlog=256MiB&ca=PATH&header=NAME:VALUE (docs/export.md). Keep "
    "secrets off the command line with header=NAME:env:VAR (the value of environment "
    "variable VAR).",
)
@click.option(
    "--open",
    "open_mode",
    is_flag=True,
    help="Allow listening beyond loopback, where any host may log under any name.",
)
@click.option(
    "--rotate-size",
    default="64MiB",
    show_default=True,
    metavar="SIZE",
    help="Rotate a log file (app.log -> app.log.N) when it reaches SIZE; 0: never.",
)
@click.option(
    "--retain-files",
    default=5,
    show_default=True,
    metavar="N",
    help="Keep N rotated files per log file and instance, delete older ones; 0: all.",
)
@click.option(
    "--retain-days",
    default=0.0,
    metavar="DAYS",
    help="Delete rotated files last written more than DAYS ago; 0 (default): keep.",
)
@click.option(
    "--quota",
    default="0",
    metavar="SIZE",
    help="Most space all log files may take: over it, the oldest rotated files of the "
    "biggest instances go first, then that instance's new records are refused; 0 "
    "(default): none.",
)
@click.option(
    "--max-connections",
    default=16384,
    show_default=True,
    help="Connections in all: native guests, syslog TCP/TLS, RELP.",
)
@click.option(
    "--max-per-source", default=1024, show_default=True, help="Connections from one address."
)
@click.option(
    "--handshake-timeout",
    default=10.0,
    show_default=True,
    help="Seconds a new connection has to say who it is.",
)
@click.option(
    "--frame-timeout",
    default=30.0,
    show_default=True,
    help="Seconds a started frame or line has to arrive whole (slow senders), and a "
    "guest that stopped reading its ACKs has before it is cut.",
)
@click.option("--idle-timeout", default=0.0, help="Close connections silent this long; 0: never.")
@click.option(
    "--rate-limit",
    default=0.0,
    metavar="N",
    help="Records/s per instance (burst 2N); above it its connections are read slower "
    "and its datagrams (native or syslog) dropped.",
)
@click.option(
    "--pause-timeout",
    default=3600.0,
    show_default=True,
    help="Seconds a guest that does not answer (e.g. stopped in gdb) keeps its connection.",
)
@data_option
def serve(
    listen: tuple[str, ...],
    udp: bool,
    dial: tuple[str, ...],
    fsync: str,
    max_frame: int,
    no_index: bool,
    syslog_default: bool,
    syslog_udp: tuple[str, ...],
    syslog_tcp: tuple[str, ...],
    syslog_tls: tuple[str, ...],
    syslog_relp: tuple[str, ...],
    tls_cert: Path | None,
    tls_key: Path | None,
    exports: tuple[str, ...],
    open_mode: bool,
    rotate_size: str,
    retain_files: int,
    retain_days: float,
    quota: str,
    max_connections: int,
    max_per_source: int,
    handshake_timeout: float,
    frame_timeout: float,
    idle_timeout: float,
    rate_limit: float,
    pause_timeout: float,
    data: Path | None,
) -> None:
    """Run the collector: receive guests' records (and syslog), store them, forward them.

    Stops on SIGTERM or Ctrl-C after storing and acknowledging what arrived.
    """
    from umonitor import assembly
    from umonitor.collector.base import GuestLimits, parse_dial, parse_endpoint
    from umonitor.collector.server import Collector
    from umonitor.collector.syslog_listeners import tls_context
    from umonitor.export.config import parse_export_option
    from umonitor.store.writer import FsyncPolicy, Store

    if max_frame < 4096 or max_frame > 16 << 20:
        raise UsageError("--max-frame must be between 4096 and 16777216")
    limits = _store_limits(rotate_size, retain_files, retain_days, quota)
    root = layout.prepare_data_dir(data_dir(data))
    endpoints = [parse_endpoint(x) for x in listen] or [parse_endpoint("127.0.0.1:2333")]
    default_port = 514 if os.geteuid() == 0 else 5514
    extra_udp = [parse_endpoint(x, default_port) for x in syslog_udp]
    extra_tcp = [parse_endpoint(x, default_port) for x in syslog_tcp]
    if syslog_default:
        host = endpoints[0].host
        extra_udp.append(parse_endpoint(f"{host}:{default_port}"))
        extra_tcp.append(parse_endpoint(f"{host}:{default_port}"))
    syslog_tls_endpoints = [
        parse_endpoint(x, 6514 if os.geteuid() == 0 else 6515) for x in syslog_tls
    ]
    syslog_relp_endpoints = [parse_endpoint(x, 2514) for x in syslog_relp]
    everywhere = [*endpoints, *extra_udp, *extra_tcp, *syslog_tls_endpoints, *syslog_relp_endpoints]
    from umonitor.collector.admission import is_local_host

    exposed = sorted({e.host for e in everywhere if not is_local_host(e.host)})
    if exposed and not open_mode:
        raise UsageError(
            f"listening on {', '.join(exposed)} lets any host there log under any name; "
            "add --open to mean it (serve has no guest tokens; `umonitor up` authenticates "
            "its instances)"
        )
    guest_limits = _guest_limits(
        GuestLimits(
            max_connections,
            max_per_source,
            handshake_timeout,
            frame_timeout,
            idle_timeout,
            rate_limit,
            pause_timeout,
        )
    )
    exports_given = _unique_exports([parse_export_option(x) for x in exports])
    if syslog_tls_endpoints and (tls_cert is None or tls_key is None):
        raise UsageError("--syslog-tls needs --tls-cert and --tls-key")
    syslog = [
        *(("udp", e) for e in extra_udp),
        *(("tcp", e) for e in extra_tcp),
        *(("relp", e) for e in syslog_relp_endpoints),
        *(("tls", e) for e in syslog_tls_endpoints),
    ]
    tls = (
        tls_context(tls_cert, tls_key)
        if syslog_tls_endpoints and tls_cert is not None and tls_key is not None
        else None
    )

    async def main() -> None:
        store = Store(root, FsyncPolicy(fsync), limits)
        collector = Collector(store, max_frame=max_frame, guest_limits=guest_limits)
        await assembly.run(
            assembly.Assembly(
                root,
                collector,
                assembly.Listeners(endpoints, udp, syslog, tls),
                exports=exports_given,
                dials=[parse_dial(x) for x in dial],
                indexer=not no_index,
                ready=lambda where: click.echo(
                    f"umonitor: collecting into {root}, listening on {', '.join(where)}",
                    err=True,
                ),
            )
        )

    assembly.run_loop(main())


def _guest_limits(limits: GuestLimits) -> GuestLimits:
    if limits.max_connections < 1 or limits.max_per_source < 1:
        raise UsageError("--max-connections and --max-per-source must be at least 1")
    if limits.handshake_seconds <= 0 or limits.frame_seconds <= 0:
        raise UsageError("--handshake-timeout and --frame-timeout must be above 0")
    if limits.idle_seconds < 0 or limits.rate < 0:
        raise UsageError("--idle-timeout and --rate-limit must not be negative")
    if limits.pause_seconds <= 0:
        raise UsageError("--pause-timeout must be above 0")
    return limits


def _store_limits(rotate_size: str, retain_files: int, retain_days: float, quota: str) -> Any:
    from umonitor.sizes import parse_size
    from umonitor.store.retention import Limits

    try:
        limits = Limits(parse_size(rotate_size), retain_files, retain_days, parse_size(quota))
        limits.check()
    except ValueError as exc:
        raise UsageError(f"{exc} (--rotate-size, --retain-files, --retain-days, --quota)") from None
    return limits


@main.command()
@click.argument("names", nargs=-1)
@data_option
def reindex(names: tuple[str, ...], data: Path | None) -> None:
    """Rebuild the index of NAMES (default: every instance) from the log files.

    Safe while a collector runs: every instance is rebuilt in a new file that then
    replaces the index's content in one transaction; named instances are dropped from
    the index and indexed again (docs/storage.md).
    """
    from umonitor.store.reindex import reindex as rebuild

    root = data_dir(data)
    done = rebuild(root, names)
    rate = done.records / done.seconds if done.seconds > 0 else 0.0
    click.echo(
        f"reindexed {done.instances} instance{'s' if done.instances != 1 else ''}: "
        f"{done.records} records from {done.files} file{'s' if done.files != 1 else ''} "
        f"in {done.seconds:.2f} s ({rate:.0f} records/s)"
    )


@main.command()
@click.argument("message", nargs=-1, required=True)
@click.option("--to", "to", default="127.0.0.1:2333", show_default=True, metavar="HOST:PORT")
@click.option("--name", required=True, help="Instance name to log as.")
@click.option("-p", "--priority", default="info", show_default=True, metavar="LEVEL")
@click.option(
    "-F", "--field", "fields", multiple=True, metavar="KEY=VALUE", help="Add a field (repeatable)."
)
@click.option("--timeout", default=5.0, show_default=True, help="Seconds to wait for the ACK.")
def send(
    message: tuple[str, ...],
    to: str,
    name: str,
    priority: str,
    fields: tuple[str, ...],
    timeout: float,
) -> None:
    """Send one record, like logger(1); fails unless the collector acknowledges it.

    MESSAGE '-' reads the message from standard input.
    """
    from umonitor.collector.base import parse_endpoint
    from umonitor.guest.client import Client

    try:
        severity = Severity.parse(priority)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    pairs = []
    for item in fields:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"bad field {item!r}: use KEY=VALUE")
        pairs.append((key, value))
    text = sys.stdin.read().rstrip("\n") if message == ("-",) else " ".join(message)
    endpoint = parse_endpoint(to)
    client = Client(endpoint.host, endpoint.port, name)
    try:
        client.log(severity, text, fields=pairs)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not client.close(timeout):
        raise NotAcknowledged(
            f"the collector at {endpoint} did not acknowledge the record within {timeout:g}s "
            "(is 'umonitor serve' running there?)"
        )
