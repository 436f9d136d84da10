"""Guests at run time: ``level``, ``ping``, ``cont`` and ``debug`` (gdb)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from umonitor.errors import EnvironmentProblem, UsageError

if TYPE_CHECKING:
    pass

from umonitor.cli.app import data_dir, data_option, main


@main.command()
@click.argument("name")
@data_option
def cont(name: str, data: Path | None) -> None:
    """Let paused instance NAME run (started with --paused or 'paused = true', or
    stopped over QMP), without a debugger."""
    from umonitor.fleet.daemon import request

    reply = request(data_dir(data), {"op": "cont", "name": name})
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
    reply = request(data_dir(data), message)
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

    return request(data_dir(data), message, timeout=ANSWER_SECONDS + 5)


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
    from umonitor.collector.control import set_level

    reply = set_level(data_dir(data), name, level_name)
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
