"""``umonitor trace``: switch a guest's function tracing, and show what it traced."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from umonitor.cli.app import data_dir, data_option, main
from umonitor.errors import UsageError

DEFAULT_LAST = 50_000  # records read from the end of the instance's log


@main.command("trace")
@click.argument("name")
@click.argument("switch", required=False, type=click.Choice(["on", "off"]))
@click.option(
    "-f",
    "--function",
    "globs",
    multiple=True,
    metavar="GLOB",
    help="With 'on': trace only functions whose name matches (repeatable; C++ names "
    "demangled, e.g. 'b*', 'Counter::*').",
)
@click.option("--since", metavar="TIME", help="Show events at or after TIME (10m, 2h, ISO).")
@click.option(
    "-n",
    "--last",
    type=int,
    default=DEFAULT_LAST,
    show_default=True,
    help="Show from at most the instance's last N records.",
)
@click.option(
    "-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.option(
    "--symbols",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The guest program's ELF file (default: the instance's symbols).",
)
@data_option
def trace(
    name: str,
    switch: str | None,
    globs: tuple[str, ...],
    since: str | None,
    last: int,
    output: str,
    symbols: Path | None,
    data: Path | None,
) -> None:
    """Switch function tracing of connected guest NAME on or off, or show its calls.

    'trace NAME on|off' asks the guest's C library (a program built with
    -finstrument-functions) to send, or stop sending, a record at each function's
    entry and return, and prints what the guest says is in force; --function limits
    it to the functions named, found in the program's symbols. Nothing is queued for
    a guest that is not connected. 'trace NAME' shows the calls recorded, as a tree
    per boot with the time each took (the guest's monotonic clock).
    """
    root = data_dir(data)
    if switch is None:
        if globs:
            raise UsageError("--function goes with 'on'")
        _show(root, name, since, last, output, symbols)
        return
    if since is not None or output != "text":
        raise UsageError("--since and -o go with showing a trace, not with on or off")
    if globs and switch == "off":
        raise UsageError("--function goes with 'on'")
    message: dict[str, Any] = {"op": "trace", "name": name, "on": switch == "on"}
    if globs:
        from umonitor.debug.record_stack import RecordStacks
        from umonitor.debug.trace_functions import trace_ranges

        program = symbols or RecordStacks(root).symbols(name)
        if program is None:
            raise UsageError(
                f"instance {name} has no symbols file to find functions in; pass --symbols"
            )
        anchor, ranges = trace_ranges(program, globs)
        message.update(anchor=anchor, ranges=[list(r) for r in ranges])
    from umonitor.collector.control import ANSWER_SECONDS, request

    reply = request(root, message, timeout=ANSWER_SECONDS + 5)
    state = "on" if reply.get("on") else "off"
    count = int(reply.get("ranges", 0))
    scope = f" for {count} address range{'s' * (count != 1)}" if reply.get("on") and count else ""
    click.echo(f"{name}: tracing {state}{scope}")


def _show(
    root: Path, name: str, since: str | None, last: int, output: str, symbols: Path | None
) -> None:
    from umonitor.cli.query import open_index
    from umonitor.debug import trace_tree
    from umonitor.debug.record_stack import RecordStacks
    from umonitor.debug.trace_functions import FunctionNames
    from umonitor.records import Origin
    from umonitor.store import index, index_query
    from umonitor.timeparse import parse_time

    if last < 1:
        raise UsageError("-n must be 1 or more")
    conn = open_index(root)
    if name not in set(index.instance_names(root)):
        raise UsageError(f"no instance named {name}; 'umonitor ls' lists the instances")
    query = index_query.Query(names=(name,), since_ns=parse_time(since) if since else None)
    rows = index_query.select(conn, root, query, last=last)
    events = [
        event
        for row in rows
        if (event := trace_tree.event_untrusted(row.stored.record, row.boot)) is not None
    ]
    if not events:
        click.echo(f"{name}: no function trace recorded (see 'umonitor trace {name} on')", err=True)
        return
    # The guest numbers every record it sends from its own library (app origin),
    # events included: a skip in those numbers is records it dropped.
    sent = [(row.boot, row.stored.record.seq) for row in rows if row.stored.origin is Origin.APP]
    program = symbols or RecordStacks(root).symbols(name)
    for boot in trace_tree.build(events, trace_tree.gaps(sent)):
        names = FunctionNames(program, boot.text)
        names.look_up(*trace_tree.addresses(boot))
        if output == "json":
            shown = trace_tree.to_json(boot, names.name, names.caller)
            click.echo(json.dumps({"instance": name, **shown}, ensure_ascii=False))
            continue
        click.echo(f"boot {boot.boot[:12]}: {boot.events} events")
        for line in trace_tree.render(boot, names.name, names.caller):
            click.echo(line)
