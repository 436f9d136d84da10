"""The fleet: ``up``, ``down``, ``run``, ``ps``, ``stop``, ``restart``, ``rm``; ``net`` and
``image``, which it is made of."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from umonitor.errors import EnvironmentProblem, UsageError
from umonitor.store import index_query, layout

if TYPE_CHECKING:
    pass

from umonitor.cli.app import data_dir, data_option, main
from umonitor.cli.query import open_index
from umonitor.cli.render import print_table

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
    root = layout.prepare_data_dir(data_dir(data))
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

    root = data_dir(data)
    pid = int(request(root, {"op": "down"})["pid"])
    for _ in range(1200):
        if not process_running(pid):
            return
        time.sleep(0.1)
    raise EnvironmentProblem("the fleet did not stop within 120 s")


def _fleet_request(data: Path | None, op: str, name: str) -> None:
    from umonitor.fleet.daemon import request

    request(data_dir(data), {"op": op, "name": name})


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
    request(data_dir(data), {"op": "run", "instance": instance})


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

    root = data_dir(data)
    reply = request(root, {"op": "ps"}, timeout=10)
    instances = reply["instances"]
    if reply.get("kvm_unusable") and output == "text":
        from umonitor.fleet.accel import VERDICT_FILE, notice

        click.echo(f"umonitor: {notice(reply['kvm_unusable'])}; remove "
                   f"{root / VERDICT_FILE} to try KVM again", err=True)  # fmt: skip
    counts: dict[str, int] = {}
    if (root / layout.INSTANCES).is_dir():
        conn = open_index(root)
        counts = {i.name: sum(i.counts) for i in index_query.instances(conn, root)}
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
    print_table(table)


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
@click.option(
    "--cflag",
    "cflags",
    multiple=True,
    metavar="FLAG",
    help="Extra compiler flag for SOURCES, e.g. --cflag=-finstrument-functions (repeatable; "
    "not for the guest library).",
)
@click.option(
    "--ldflag",
    "ldflags",
    multiple=True,
    metavar="FLAG",
    help="Extra link flag, after the objects: libraries such as --ldflag=-lm (repeatable).",
)
def image_build(
    sources: tuple[Path, ...],
    out: Path,
    kernel_version: str | None,
    cflags: tuple[str, ...],
    ldflags: tuple[str, ...],
) -> None:
    """Build a bootable single-application guest from C or C++ SOURCES (kernel + initramfs).

    Sources ending in .cc, .cpp or .cxx are compiled with g++ (which then links),
    the others with gcc; all are linked statically with umonitor's C guest library.
    OUT/app is the program with its debug information, for symbolizing.
    """
    from umonitor.image.linux import build_image

    built = build_image(
        list(sources), out, kernel_version=kernel_version, cflags=cflags, ldflags=ldflags
    )
    click.echo(f"kernel {built.kernel}\ninitrd {built.initrd}")
    if built.pvh_kernel is not None:
        click.echo(f"vmlinux {built.pvh_kernel} (the same kernel uncompressed: boots faster)")
