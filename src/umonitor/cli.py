"""The ``umonitor`` command: thin commands over the library.

Every error a user can cause is a ``UmonitorError``; ``main`` turns it into one line
on stderr and its exit code. Nothing else prints a traceback to a user.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from umonitor import __version__
from umonitor.debug.record_stack import RecordStacks
from umonitor.errors import EnvironmentProblem, NotAcknowledged, UmonitorError, UsageError
from umonitor.records import SEVERITY_NAMES, Severity
from umonitor.store import index, layout
from umonitor.store.logfile import escape, format_fields
from umonitor.timeparse import format_age, format_time, parse_time

if TYPE_CHECKING:
    from umonitor.collector.base import GuestLimits
    from umonitor.export.config import ExportSpec

_COLOURS = {
    0: "red",
    1: "red",
    2: "red",
    3: "red",
    4: "yellow",
    5: "cyan",
    6: None,
    7: "bright_black",
}

data_option = click.option(
    "--data",
    "data",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="UMONITOR_DATA",
    help="Data directory (default: $UMONITOR_DATA, else ~/.local/share/umonitor).",
)


def _is_local(host: str) -> bool:
    from umonitor.collector.admission import is_loopback

    return host == "localhost" or is_loopback(host)


def _unique_exports(specs: list[ExportSpec]) -> list[ExportSpec]:
    names = [s.name for s in specs]
    for name in names:
        if names.count(name) > 1:
            raise UsageError(f"two --export options are named {name!r}; name them NAME=URL")
    return specs


def _data_dir(data: Path | None) -> Path:
    return data if data is not None else layout.default_data_dir()


class _Group(click.Group):
    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            return super().main(*args, **kwargs)
        except UmonitorError as exc:
            click.echo(f"umonitor: {exc}", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("umonitor: aborted", err=True)
            sys.exit(130)
        except click.UsageError as exc:
            command = exc.ctx.command_path if exc.ctx is not None else "umonitor"
            click.echo(f"umonitor: {exc.format_message()} (see '{command} --help')", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            sys.exit(130)
        except BrokenPipeError:
            sys.stderr.close()
            sys.exit(0)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="umonitor")
def main() -> None:
    """Monitor unikernels from the host: collect, keep and show their logs."""


# -- serve ---------------------------------------------------------------------------


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
@click.option("--max-connections", default=16384, show_default=True, help="Guest connections.")
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
    help="Records/s per instance (burst 2N); above it its connections are read slower.",
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
    root = layout.prepare_data_dir(_data_dir(data))
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
    exposed = sorted({e.host for e in everywhere if not _is_local(e.host)})
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
    from umonitor.store.retention import Limits, parse_size

    try:
        limits = Limits(parse_size(rotate_size), retain_files, retain_days, parse_size(quota))
        limits.check()
    except ValueError as exc:
        raise UsageError(f"{exc} (--rotate-size, --retain-files, --retain-days, --quota)") from None
    return limits


# -- ls ------------------------------------------------------------------------------


def _collector_status(root: Path) -> dict[str, Any] | None:
    for _ in range(3):  # on a full disk it is rewritten in place: a read may see a mix
        try:
            status = json.loads((root / layout.STATUS).read_text())
            os.kill(int(status["pid"]), 0)
        except ValueError:
            time.sleep(0.05)
            continue
        except (OSError, KeyError, TypeError):
            return None
        return status if isinstance(status, dict) else None
    return None


def _open_index(root: Path) -> Any:
    import sqlite3

    if not (root / layout.INSTANCES).is_dir():
        raise UsageError(f"no umonitor data in {root}; start 'umonitor serve' or pass --data DIR")
    try:
        conn = index.connect(root)
    except UsageError as exc:  # a full disk, say: show what the index has
        conn = index.connect_as_it_is(root)
        click.echo(f"umonitor: {exc}; the index may not be up to date", err=True)
        return conn
    try:
        index.catch_up(conn, root)
    except sqlite3.Error as exc:
        click.echo(f"umonitor: the index is not up to date ({exc})", err=True)
    return conn


def _store_state(root: Path, status: dict[str, Any]) -> dict[str, Any]:
    """The store's state from the running collector, else the counters on disk."""
    store = status.get("store")
    if isinstance(store, dict):
        return store
    from dataclasses import asdict

    from umonitor.store.retention import DiskUsage, Limits

    usage = DiskUsage(root, Limits())
    return {
        "state": "ok",
        "losses": {n: asdict(v) for n, v in usage.losses.items() if v.any()},
    }


def _losses_and_refused(store: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    losses = store.get("losses")
    refused = store.get("refused")
    return losses if isinstance(losses, dict) else {}, refused if isinstance(refused, str) else None


@main.command("ls")
@click.option(
    "-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@data_option
def ls_command(output: str, data: Path | None) -> None:
    """List every instance seen, connected or not.

    LEVEL is the minimum level a connected guest library said it has (at connect, and
    in its answer to 'umonitor level'); '-' when it is not connected or does not say.
    """
    root = _data_dir(data)
    conn = _open_index(root)
    status = _collector_status(root) or {}
    connected: dict[str, list[str]] = status.get("connected", {})
    levels: dict[str, str] = status.get("levels", {})  # what each connected guest said
    instances = index.instances(conn)
    from umonitor.export.runner import read_statuses

    exporters = read_statuses(root)
    store = _store_state(root, status)
    losses, refused = _losses_and_refused(store)
    disk_full = store.get("state") == "disk"
    throttled: dict[str, int] = status.get("throttled", {})
    guard = {
        k: v
        for k, v in (
            ("refused", status.get("refused", 0)),
            ("protocol_errors", status.get("protocol_errors", 0)),
            *status.get("limits", {}).items(),
        )
        if v
    }  # refused guests, broken protocols, limits hit (admission.py, GuestLimits): what happened
    if output == "json":
        for inst in instances:
            peers = connected.get(inst.name, [])
            lost = losses.get(inst.name, {})
            row = {
                "name": inst.name,
                "connected": bool(peers),
                "level": levels.get(inst.name) if peers else None,
                "address": peers[0] if peers else inst.peer,
                "library": inst.library,
                "first_seen": format_time(inst.first_ns) if inst.first_ns else None,
                "last_seen": format_time(inst.last_ns) if inst.last_ns else None,
                "records": sum(inst.counts),
                "counts": dict(zip(SEVERITY_NAMES, inst.counts, strict=True)),
                "dropped": inst.dropped,
                "boots": inst.boots,
                "store": "disk" if disk_full else "refused" if inst.name == refused else "ok",
                "deleted_files": int(lost.get("deleted_files", 0)),
                "deleted_bytes": int(lost.get("deleted_bytes", 0)),
                "deleted_records": int(lost.get("deleted_records", 0)),
                "refused_records": int(lost.get("refused", 0)),
                "throttled": int(throttled.get(inst.name, 0)),
            }
            click.echo(json.dumps(row))
        for status in exporters:
            click.echo(json.dumps(status))
        if guard:
            click.echo(json.dumps({"collector": guard}))
        return
    if disk_full:
        since = store.get("since")
        click.echo(
            f"collector: cannot write ({store.get('error')})"
            + (f" since {format_time(int(float(since) * 1e9))}" if since else "")
            + f"; not acknowledging, {format_bytes(int(store.get('unwritten_bytes') or 0))} "
            "queued, retrying every second"
        )
    if not instances:
        click.echo("no instances yet", err=True)
    else:
        header: tuple[str, ...] = ("NAME", "STATE", "LEVEL", "ADDRESS", "LAST SEEN", "RECORDS")
        header += ("CRIT+",)
        header += ("ERR", "WARN", "NOTICE", "INFO", "DEBUG", "DROPPED")
        # Only when retention or the quota took something: DELETED records, REFUSED records.
        lossy = any(losses.get(i.name) for i in instances)
        if lossy:
            header += ("DELETED", "REFUSED")
        table: list[tuple[str, ...]] = [header]
        for inst in instances:
            peers = connected.get(inst.name, [])
            c = inst.counts
            state = "connected" if peers else "-"
            if inst.name == refused:
                state = "refused (quota)"
            lost = losses.get(inst.name, {})
            table.append(
                (
                    inst.name,
                    state,
                    levels.get(inst.name, "-") if peers else "-",
                    (peers[0] if peers else inst.peer) or "-",
                    format_age(inst.last_ns),
                    str(sum(c)),
                    str(c[0] + c[1] + c[2]),
                    *(str(n) for n in c[3:]),
                    str(inst.dropped),
                    *(
                        (str(lost.get("deleted_records", 0)), str(lost.get("refused", 0)))
                        if lossy
                        else ()
                    ),
                )
            )
        _print_table(table)
    if guard:
        click.echo(
            "collector: "
            + ", ".join(f"{LIMIT_WORDS.get(k, k)} {v}" for k, v in guard.items())
            + (
                " (throttled: " + ", ".join(f"{k} {v}" for k, v in sorted(throttled.items())) + ")"
                if throttled
                else ""
            )
        )
    if exporters:
        click.echo()
        table = [("EXPORTER", "TARGET", "STATE", "BACKLOG", "SENT", "DROPPED", "LAST ERROR")]
        for e in exporters:
            table.append(
                (
                    str(e.get("exporter", "?")),
                    str(e.get("target", "?")),
                    str(e.get("state", "?")),
                    format_bytes(int(str(e.get("backlog_bytes", 0)))),
                    str(e.get("sent", 0)),
                    str(e.get("dropped", 0)),
                    escape(str(e.get("error", "")))[:80] or "-",
                )
            )
        _print_table(table)


LIMIT_WORDS = {
    "refused": "guests refused",
    "protocol_errors": "connections closed for protocol errors",
    "connections": "connections over --max-connections",
    "per_source": "over --max-per-source",
    "handshake": "handshake timeouts",
    "slow": "slow-sender timeouts",
    "unread": "guests cut for not reading",
    "idle": "idle timeouts",
    "rate": "rate limit hits",
}


def _print_table(table: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for r in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())


def format_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    size = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024 or unit == "GiB":
            break
    return f"{size:.1f} {unit}"


# -- logs ----------------------------------------------------------------------------


def _format_text(row: index.Row, with_name: bool, colour: bool) -> str:
    stored = row.stored
    rec = stored.record
    parts = [format_time(stored.time_ns)]
    if with_name:
        parts.append(click.style(stored.instance, bold=True) if colour else stored.instance)
    level = SEVERITY_NAMES[rec.severity]
    if stored.origin.value != "app":
        level = f"{level}/{stored.origin.value}"
    parts.append(click.style(level, fg=_COLOURS[rec.severity]) if colour else level)
    if rec.kind:
        parts.append(f"[{rec.kind.name.lower()}]")
    if rec.file or rec.function:
        where = f"{rec.file}:{rec.line}" if rec.line else rec.file
        parts.append(f"{where} {rec.function}:" if rec.function else f"{where}:")
    # Guest text never reaches the terminal with its own escape sequences.
    parts.append(escape(rec.message))
    if rec.fields:
        parts.append(format_fields(rec.fields))
    return " ".join(p for p in parts if p)


def _format_json(row: index.Row, stack: list[dict[str, Any]] | None = None) -> str:
    stored = row.stored
    rec = stored.record
    return json.dumps(
        {
            "instance": stored.instance,
            "time": format_time(stored.time_ns),
            "severity": SEVERITY_NAMES[rec.severity],
            "seq": rec.seq,
            "origin": stored.origin.value,
            "kind": rec.kind.name.lower(),
            "file": rec.file,
            "line": rec.line,
            "function": rec.function,
            "message": rec.message,
            "fields": dict(rec.fields),
            "boot": row.boot,
            **({"stack": stack} if stack is not None else {}),
        },
        ensure_ascii=False,
    ).translate(_LINE_BREAKS_ESCAPED)


# JSON allows these raw in strings, but many line readers (Python's splitlines, older
# JavaScript) break lines there: escaped, one record stays one line.
_LINE_BREAKS_ESCAPED = {0x85: "\\u0085", 0x2028: "\\u2028", 0x2029: "\\u2029"}


def _emit(
    rows: Iterable[index.Row], output: str, with_name: bool, colour: bool, stacks: RecordStacks
) -> int:
    """Print ``rows`` (in time order); the highest index id among them, 0 if none.

    The highest, not the last: rows indexed in one round are printed by time, which
    need not be their index order, and --follow goes on after this id. A record's call
    stack (the C library's ``umon.stack``) follows it, one frame a line.
    """
    highest = 0
    for row in rows:
        name, fields = row.stored.instance, row.stored.record.fields
        if output == "json":
            line = _format_json(row, stacks.json_stack(name, fields))
        else:
            line = "\n".join([_format_text(row, with_name, colour),
                              *stacks.text_lines(name, fields)])  # fmt: skip
        click.echo(line, color=colour)
        highest = max(highest, row.id)
    return highest


@main.command()
@click.argument("names", nargs=-1)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new records as they arrive.")
@click.option(
    "-n",
    "--lines",
    "lines",
    type=int,
    default=None,
    help="Only the last N records (default: all; 10 with --follow).",
)
@click.option("--since", metavar="TIME", help="Records at or after TIME (10m, 2h, today, ISO).")
@click.option("--until", metavar="TIME", help="Records at or before TIME.")
@click.option(
    "-p",
    "--priority",
    metavar="LEVEL",
    help="This level and worse: emerg alert crit err warning notice info debug, or 0-7.",
)
@click.option(
    "-g",
    "--grep",
    metavar="TEXT",
    help="Records whose message contains TEXT (case-insensitive; full-text indexed).",
)
@click.option(
    "--origin",
    type=click.Choice(["app", "console", "syslog", "all"]),
    default="all",
    show_default=True,
    help="Only what the guest library sent (app), what its console printed, or syslog.",
)
@click.option(
    "-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.option(
    "--symbols",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="ELF file with DWARF for the records' call stacks (default: the instance's).",
)
@data_option
def logs(
    names: tuple[str, ...],
    follow: bool,
    lines: int | None,
    since: str | None,
    until: str | None,
    priority: str | None,
    grep: str | None,
    origin: str,
    output: str,
    symbols: Path | None,
    data: Path | None,
) -> None:
    """Show the records of NAMES (default: every instance), oldest first."""
    root = _data_dir(data)
    stacks = RecordStacks(root, symbols)
    conn = _open_index(root)
    if names:
        known = {i.name for i in index.instances(conn)}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise UsageError(
                f"no instance named {', '.join(unknown)}; 'umonitor ls' lists the instances"
            )
    try:
        max_sev = int(Severity.parse(priority)) if priority else 7
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    query = index.Query(
        names=names,
        since_ns=parse_time(since) if since else None,
        until_ns=parse_time(until) if until else None,
        max_severity=max_sev,
        grep=grep,
        origins=() if origin == "all" else (origin,),
    )
    if lines is not None and lines < 0:
        raise UsageError("-n must be 0 or more")
    last = 10 if follow and lines is None else lines
    with_name = len(names) != 1
    colour = output == "text" and sys.stdout.isatty()
    newest = index.max_record_id(conn)
    shown = _emit(index.select(conn, query, last=last), output, with_name, colour, stacks)
    after = max(shown, newest)
    if not follow:
        return
    try:
        while True:
            time.sleep(0.25)
            index.catch_up(conn, root)
            shown = _emit(
                index.select(conn, query, after_id=after), output, with_name, colour, stacks
            )
            after = max(after, shown)
            sys.stdout.flush()
    except KeyboardInterrupt:
        return


# -- reindex -------------------------------------------------------------------------


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

    root = _data_dir(data)
    done = rebuild(root, names)
    rate = done.records / done.seconds if done.seconds > 0 else 0.0
    click.echo(
        f"reindexed {done.instances} instance{'s' if done.instances != 1 else ''}: "
        f"{done.records} records from {done.files} file{'s' if done.files != 1 else ''} "
        f"in {done.seconds:.2f} s ({rate:.0f} records/s)"
    )


# -- send ----------------------------------------------------------------------------


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
    from umonitor.client import Client
    from umonitor.collector.base import parse_endpoint

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


# -- fleet ---------------------------------------------------------------------------


config_option = click.option(
    "-f",
    "--file",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default="umonitor.toml",
    show_default=True,
    help="The fleet's configuration.",
)
accel_option = click.option(
    "--accel",
    type=click.Choice(["auto", "kvm", "tcg"]),
    default=None,
    help="QEMU accelerator for every instance (default: each instance's, auto: KVM only "
    "where a probe and the first guests show it works, else TCG; see docs/launching.md).",
)


def _detach(log_path: Path) -> bool:
    """Fork into the background; True in the child, which goes on to run the fleet."""
    child = os.fork()
    if child > 0:
        os.waitpid(child, 0)  # it exits at once, leaving the grandchild to run the fleet
        return False
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    return True


@main.command()
@config_option
@click.option("-d", "--detach", is_flag=True, help="Run in the background.")
@accel_option
@data_option
def up(config_file: Path, detach: bool, accel: str | None, data: Path | None) -> None:
    """Bring up the network, the collector and every instance of the fleet.

    In the foreground, Ctrl-C stops the instances and removes the network devices.
    Instances already running from an earlier 'up' are adopted, not started again.
    """
    import asyncio

    from umonitor.collector.control import check_no_collector
    from umonitor.fleet.accel import notice
    from umonitor.fleet.config import load_config
    from umonitor.fleet.daemon import preflight, run_fleet

    config = load_config(config_file)
    root = layout.prepare_data_dir(_data_dir(data))
    if _fleet_answers(root):
        raise UsageError(f"a fleet is already running on {root}; 'umonitor down' stops it")
    check_no_collector(root)  # 'umonitor serve' runs there
    if os.geteuid() != 0:
        raise EnvironmentProblem(
            "umonitor up creates network devices and needs root (or CAP_NET_ADMIN); "
            "run it with sudo"
        )
    chooser = preflight(config, root, accel)
    kvm_unusable = chooser.unusable_reason()
    if kvm_unusable is not None:
        click.echo(f"umonitor: {notice(kvm_unusable)}", err=True)
        chooser.shown = True  # said here; the fleet still records it once
    (root / "run").mkdir(exist_ok=True)
    if detach and not _detach(root / "run" / "fleet.log"):
        for _ in range(600):
            if _fleet_answers(root):
                click.echo(f"umonitor: fleet running in the background on {root}", err=True)
                return
            time.sleep(0.1)
        raise EnvironmentProblem(f"the fleet did not come up; see {root / 'run' / 'fleet.log'}")
    names = ", ".join(i.name for i in config.instances)
    click.echo(f"umonitor: starting {names} on bridge {config.network.bridge}", err=True)
    try:
        asyncio.run(run_fleet(config, root, accel=accel, chooser=chooser))
    finally:
        if detach:
            os._exit(0)


def _fleet_answers(root: Path) -> bool:
    from umonitor.collector.control import control_path
    from umonitor.fleet.daemon import request

    if not control_path(root).exists():
        return False
    try:
        request(root, {"op": "ps"}, timeout=5)
    except UsageError:
        return False  # a socket left behind by a fleet that died
    return True


@main.command()
@data_option
def down(data: Path | None) -> None:
    """Stop every instance, the collector and the network devices of the running fleet."""
    from umonitor.fleet.daemon import request
    from umonitor.procs import process_running

    root = _data_dir(data)
    pid = int(request(root, {"op": "down"})["pid"])
    for _ in range(1200):
        if not process_running(pid):
            return
        time.sleep(0.1)
    raise EnvironmentProblem("the fleet did not stop within 120 s")


def _fleet_request(data: Path | None, op: str, name: str) -> None:
    from umonitor.fleet.daemon import request

    request(_data_dir(data), {"op": op, "name": name})


@main.command()
@click.argument("name")
@data_option
def stop(name: str, data: Path | None) -> None:
    """Stop instance NAME (ACPI power-down, then quit, then kill); no restart."""
    _fleet_request(data, "stop", name)


@main.command()
@click.argument("name")
@data_option
def restart(name: str, data: Path | None) -> None:
    """Stop instance NAME and start it again."""
    _fleet_request(data, "restart", name)


@main.command()
@click.argument("name")
@data_option
def rm(name: str, data: Path | None) -> None:
    """Stop instance NAME and remove it from the fleet (its TAP and address lease too)."""
    _fleet_request(data, "rm", name)


@main.command()
@click.argument("name")
@data_option
def cont(name: str, data: Path | None) -> None:
    """Let paused instance NAME run (started with --paused or 'paused = true', or
    stopped over QMP), without a debugger."""
    from umonitor.fleet.daemon import request

    reply = request(_data_dir(data), {"op": "cont", "name": name})
    click.echo(f"{name}: running (was {reply.get('was', '?')})")


@main.command()
@click.argument("name")
@click.option(
    "--print-command",
    is_flag=True,
    help="Print the gdb command line, and what an IDE's remote session needs; attach nothing.",
)
@click.option(
    "--batch",
    "script",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Run this gdb script, detach, and exit: 1 if the script failed.",
)
@data_option
def debug(name: str, print_command: bool, script: Path | None, data: Path | None) -> None:
    """Attach gdb to running fleet instance NAME through QEMU's gdbstub, symbols loaded.

    Breakpoints, stepping and inspection work as in any remote gdb session; Ctrl-C
    stops the guest, 'continue' lets it run, and quitting gdb (or 'detach') leaves it
    running. While gdb holds it, ps shows the instance 'debugging', and the fleet
    neither takes a stopped guest for hung nor cuts its connection to the collector
    (for up to [collector] pause_timeout). Start an instance with 'umonitor run
    --paused' (or 'paused = true') to debug it from its first instruction. Symbols: the
    instance's 'symbols' (or --symbols), else the kernel's own (see docs/debugging.md).
    Needs Debian's gdb.
    """
    import shutil

    from umonitor.debug.gdb import GDB, SCRIPT_ENV, Target, attach_argv, batch_argv, describe
    from umonitor.fleet.daemon import request

    if print_command and script is not None:
        raise UsageError("--print-command and --batch go separately")
    gdb = shutil.which(GDB)
    if gdb is None and not print_command:
        raise EnvironmentProblem("gdb is not installed; install it with 'apt-get install gdb'")
    message: dict[str, Any] = {"op": "debug", "name": name}
    if not print_command:
        message["pid"] = os.getpid()  # exec keeps it: the fleet shows gdb's life
    reply = request(_data_dir(data), message)
    symbols = Path(reply["symbols"]) if reply.get("symbols") else None
    target = Target(name, Path(reply["socket"]), symbols, Path(reply["kernel"]))
    if symbols is None:
        click.echo(f"umonitor: {name} has no symbols file with DWARF: gdb gets the kernel's "
                   "symbols only (set 'symbols' or run --symbols)", err=True)  # fmt: skip
    if reply.get("accel") == "kvm" and reply.get("vm_status") == "prelaunch":
        click.echo("umonitor: under KVM a software breakpoint set before the kernel is "
                   "loaded is overwritten; use 'hbreak'", err=True)  # fmt: skip
    if print_command:
        click.echo(describe(target, attach_argv(target)))
        return
    argv = (
        attach_argv(target, gdb=gdb or GDB)
        if script is None
        else batch_argv(target, gdb=gdb or GDB)
    )
    if script is not None:
        os.environ[SCRIPT_ENV] = str(script.resolve())
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)


def _control_request(data: Path | None, message: dict[str, Any]) -> dict[str, Any]:
    from umonitor.collector.control import ANSWER_SECONDS, request

    return request(_data_dir(data), message, timeout=ANSWER_SECONDS + 5)


@main.command("level")
@click.argument("name")
@click.argument("level_name", metavar="LEVEL")
@data_option
def level_command(name: str, level_name: str, data: Path | None) -> None:
    """Set the minimum level of connected guest NAME; print what the guest says it has.

    LEVEL: emerg alert crit err warning notice info debug, or 0-7; the guest then
    sends only records of this level and worse. Works for fleet instances ('umonitor
    up') and guests of 'umonitor serve'. Nothing is queued: a guest that is not
    connected is left alone and starts at its own level (umon.level) when it
    connects. Guests of the 2018 format and plain text have no control channel.
    """
    try:
        severity = Severity.parse(level_name)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    reply = _control_request(data, {"op": "level", "name": name, "level": severity.label})
    was = f" (was {reply['was']})" if reply.get("was") else ""
    said = "" if reply.get("confirmed") else "; its library does not confirm levels (older)"
    click.echo(f"{name}: level {reply['level']}{was}{said}")


@main.command()
@click.argument("name")
@data_option
def ping(name: str, data: Path | None) -> None:
    """Ping connected guest NAME through its library and print the round trip.

    The time covers the network and the guest library's next chance to answer (a
    guest that neither logs nor calls umon_poll() answers late). Works for fleet
    instances and guests of 'umonitor serve'.
    """
    reply = _control_request(data, {"op": "ping", "name": name})
    click.echo(f"{name}: round trip {float(reply['rtt_ms']):.2f} ms")


@main.command()
@click.argument("kernel", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--name", required=True, help="Instance name.")
@click.option("--initrd", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--flavor", default="linux", show_default=True)
@click.option("--mem", default="256M", show_default=True, help="Memory, e.g. 256M or 1G.")
@click.option("--args", "args", default="", help="Extra kernel arguments.")
@click.option(
    "--app-args",
    default="",
    help="The application's own arguments, what its main() gets (unikraft, rumprun, nanos).",
)
@click.option(
    "--nanos",
    "nanos_dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Flavor nanos: the directory with Nanos' kernel.img, boot.img and mkfs "
    "(KERNEL is then the program).",
)
@click.option(
    "--listen",
    type=click.IntRange(1, 65535),
    help="The guest listens on this TCP port (2018 API): the collector connects to it.",
)
@click.option(
    "--symbols",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="ELF file with DWARF for crash backtraces (default: KERNEL if it has DWARF, "
    "else KERNEL.dbg or KERNEL's stem .dbg beside it).",
)
@click.option(
    "--paused",
    is_flag=True,
    help="Start halted at the first instruction, for 'umonitor debug NAME' from boot "
    "('umonitor cont NAME' runs it without a debugger).",
)
@click.option(
    "--restart", type=click.Choice(["no", "on-failure", "always"]), default="no", show_default=True
)
@data_option
def run(
    kernel: Path,
    name: str,
    initrd: Path | None,
    flavor: str,
    mem: str,
    args: str,
    app_args: str,
    nanos_dir: Path | None,
    listen: int | None,
    symbols: Path | None,
    paused: bool,
    restart: str,
    data: Path | None,
) -> None:
    """Start one more instance in the running fleet ('umonitor up' first)."""
    from umonitor.debug.symbols_file import is_elf
    from umonitor.fleet.config import PROBE_NET
    from umonitor.fleet.daemon import request
    from umonitor.fleet.flavors import FLAVORS, boot_spec
    from umonitor.fleet.qemu import parse_memory
    from umonitor.store.names import is_instance_name

    if not is_instance_name(name):
        raise UsageError(f"bad instance name {name!r}: use a-z 0-9 . _ -")
    if flavor not in FLAVORS:
        raise UsageError(f"unknown flavor {flavor!r}; use one of {', '.join(FLAVORS)}")
    if (flavor == "nanos") != (nanos_dir is not None):
        raise UsageError("--nanos DIR goes with --flavor nanos, and only with it")
    if symbols is not None and not is_elf(symbols):
        raise UsageError(f"--symbols {symbols}: not an ELF file")
    # Words no command line can hold, args where there is no kernel command line:
    # one clear error now rather than a failed start.
    boot_spec(flavor, PROBE_NET, args, "{ip}", app_args)
    instance = {
        "name": name,
        "kernel": str(kernel.resolve()),
        "initrd": str(initrd.resolve()) if initrd else None,
        "flavor": flavor,
        "memory_mib": parse_memory(mem),
        "args": args,
        "app_args": app_args,
        "nanos": str(nanos_dir.resolve()) if nanos_dir else None,
        "listen": listen,
        "symbols": str(symbols.resolve()) if symbols else None,
        "paused": paused,
        "restart": restart,
    }
    request(_data_dir(data), {"op": "run", "instance": instance})


@main.command()
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
@data_option
def ps(output: str, data: Path | None) -> None:
    """List the fleet's instances: state, level, address, uptime, restarts, last exit, records.

    LEVEL is the minimum level the guest library said it has (at connect, and in its
    answer to 'umonitor level'); '-' while it is not connected or does not say.

    States: starting, running, paused (its VM stopped: --paused, or stopped in gdb),
    debugging ('umonitor debug' attached), stopping, stopped, exited, crashed,
    restarting, failed (gave up: the reason is in LAST EXIT). When KVM is not usable
    on this host, one line on stderr says why. JSON adds pid, accel, tap, vm_status
    (QEMU's: running, prelaunch, debug, paused...) and the last exit's stderr.
    """
    from umonitor.fleet.daemon import request

    root = _data_dir(data)
    reply = request(root, {"op": "ps"}, timeout=10)
    instances = reply["instances"]
    if reply.get("kvm_unusable") and output == "text":
        from umonitor.fleet.accel import VERDICT_FILE, notice

        click.echo(f"umonitor: {notice(reply['kvm_unusable'])}; remove "
                   f"{root / VERDICT_FILE} to try KVM again", err=True)  # fmt: skip
    counts: dict[str, int] = {}
    if (root / layout.INSTANCES).is_dir():
        conn = _open_index(root)
        counts = {i.name: sum(i.counts) for i in index.instances(conn)}
    for inst in instances:
        inst["records"] = counts.get(inst["name"], 0)
    if output == "json":
        for inst in instances:
            click.echo(json.dumps(inst))
        return
    table: list[tuple[str, ...]] = [
        ("NAME", "STATE", "LEVEL", "ADDRESS", "UPTIME", "RESTARTS", "RECORDS", "LAST EXIT")
    ]
    for inst in instances:
        last = inst.get("last_exit") or {}
        exit_text = f"{last.get('outcome', '')}: {last.get('reason', '')}" if last else "-"
        uptime = inst.get("uptime_s")
        table.append(
            (
                inst["name"],
                inst["state"],
                inst.get("level") or "-",
                inst["address"],
                f"{uptime:.0f}s" if uptime is not None else "-",
                str(inst["restarts"]),
                str(inst["records"]),
                exit_text,
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for r in table:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


@main.group()
def net() -> None:
    """The guest network: a bridge and TAP devices (needs root)."""


def _net_config(bridge: str, address: str) -> Any:
    from umonitor.fleet.net import NetConfig

    return NetConfig(bridge, address)


bridge_option = click.option("--bridge", default="umon0", show_default=True)
address_option = click.option(
    "--address", default="10.77.0.1/24", show_default=True, help="The host's address on it."
)


@net.command("up")
@bridge_option
@address_option
def net_up_command(bridge: str, address: str) -> None:
    """Create the bridge with the host address (idempotent)."""
    from umonitor.fleet.net import net_up

    state = net_up(_net_config(bridge, address))
    addresses = ", ".join(str(a) for a in state.addresses)
    click.echo(f"{bridge}: up, {addresses}")


@net.command("down")
@bridge_option
@address_option
def net_down_command(bridge: str, address: str) -> None:
    """Remove every device umonitor created for this bridge, and nothing else."""
    from umonitor.fleet.net import net_down

    removed = net_down(_net_config(bridge, address))
    click.echo("removed " + (", ".join(removed) if removed else "nothing"))


@main.group()
def image() -> None:
    """Demo unikernel images."""


@image.command("build")
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "-o", "--output", "out", required=True, type=click.Path(file_okay=False, path_type=Path)
)
@click.option("--kernel-version", default=None, help="Debian kernel version (default: newest).")
def image_build(sources: tuple[Path, ...], out: Path, kernel_version: str | None) -> None:
    """Build a bootable single-application guest from C SOURCES (kernel + initramfs)."""
    from umonitor.fleet.image import build_image

    built = build_image(list(sources), out, kernel_version=kernel_version)
    click.echo(f"kernel {built.kernel}\ninitrd {built.initrd}")
    if built.pvh_kernel is not None:
        click.echo(f"vmlinux {built.pvh_kernel} (the same kernel uncompressed: boots faster)")
