"""Reading what was collected: ``ls`` (instances, losses, limits, exporters) and ``logs``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from umonitor import overview
from umonitor.debug.record_stack import RecordStacks
from umonitor.errors import UsageError
from umonitor.records import Severity
from umonitor.store import index, index_query
from umonitor.store.logfile import escape
from umonitor.timeparse import format_age, format_time, parse_time

if TYPE_CHECKING:
    pass

from umonitor.cli.app import data_dir, data_option, main
from umonitor.cli.render import emit, format_bytes, print_table


def open_index(root: Path) -> Any:
    """The index of ``root`` (overview.py), a stale one said on stderr."""
    return overview.open_index(root, lambda text: click.echo(f"umonitor: {text}", err=True))


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
    root = data_dir(data)
    conn = open_index(root)
    seen = overview.read_overview(conn, root)
    instances, exporters, guard = seen.instances, seen.exporters, seen.guard
    connected, levels, losses, refused = seen.connected, seen.levels, seen.losses, seen.refused
    store, disk_full, throttled = seen.store, seen.disk_full, seen.throttled
    if seen.behind:
        click.echo(
            f"umonitor: {format_bytes(seen.behind)} of log not indexed yet; "
            "counts are as far as the index goes",
            err=True,
        )
    if output == "json":
        for inst in instances:
            click.echo(json.dumps(seen.row(inst)))
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
        print_table(table)
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
        print_table(table)


FOLLOW_POLL = 0.02  # seconds between looks for new records under `logs -f`

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
    help="Records whose message contains TEXT (ASCII case-insensitive).",
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
    root = data_dir(data)
    stacks = RecordStacks(root, symbols)
    conn = open_index(root)
    if names:
        known = set(index.instance_names(root))
        unknown = [n for n in names if n not in known]
        if unknown:
            raise UsageError(
                f"no instance named {', '.join(unknown)}; 'umonitor ls' lists the instances"
            )
    try:
        max_sev = int(Severity.parse(priority)) if priority else 7
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    query = index_query.Query(
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
    rows, follower = index_query.select_then_follow(conn, root, query, last=last)
    emit(rows, output, with_name, colour, stacks)
    if not follow:
        return
    try:
        while True:
            # The files themselves, often: a line is on disk before its ACK.
            time.sleep(FOLLOW_POLL)
            emit(follower.poll(), output, with_name, colour, stacks)
            sys.stdout.flush()
    except KeyboardInterrupt:
        return
