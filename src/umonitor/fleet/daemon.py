"""``umonitor up``: network, collector and supervisor in one process, and its control socket.

The control socket (collector/control.py: ``DATA/run/control.sock``, mode 0600, local
only) takes one JSON object per line — ``{"op": "ps"}``, ``{"op": "stop", "name": N}``,
``restart``, ``rm``, ``run`` (with an instance description), ``cont``, ``debug``,
``down``, and the guest control every collector answers, ``level`` and ``ping`` — and
answers one JSON object per line: ``{"ok": true, ...}`` or ``{"ok": false, "error":
"..."}``. The fleet is the part on top of the collector in the one assembly
(assembly.py): started once the collector listens, stopped before it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from umonitor import assembly
from umonitor.assembly import Assembly, Listeners
from umonitor.collector import control
from umonitor.collector.admission import LOCAL_TOOLS, FleetAdmission
from umonitor.collector.base import Dial, Endpoint
from umonitor.collector.server import Collector
from umonitor.errors import UmonitorError
from umonitor.fleet import accel as accel_mod
from umonitor.fleet import net, qemu
from umonitor.fleet.config import FleetConfig, InstanceConfig
from umonitor.fleet.instance import Instance, State
from umonitor.fleet.leases import Leases, leases_path
from umonitor.fleet.qemu import find_qemu
from umonitor.fleet.supervisor import Supervisor
from umonitor.store import layout
from umonitor.store.writer import FsyncPolicy, Store

NO_FLEET = "no fleet is running on {root} (start one with 'umonitor up')"


@dataclass
class Fleet:
    """One running fleet: what ``up`` started, reachable through the control socket."""

    root: Path
    config: FleetConfig
    netcfg: net.NetConfig
    leases: Leases
    store: Store
    collector: Collector
    supervisor: Supervisor
    stopping: asyncio.Event  # set: the assembly stops everything (``down``)
    accel: str | None = None  # up --accel: instead of each instance's own
    remove_network: bool = True  # on the way out (a ``down`` request may say network: false)
    started: bool = False

    # -- the assembly's part (assembly.py) ----------------------------------------

    async def start(self) -> None:
        self.started = True
        for cfg in self.config.instances:
            self.launch(replace(cfg, accel=self.accel or cfg.accel))

    def knows(self, name: str) -> bool:
        return name in self.supervisor.instances

    async def stop(self) -> None:
        await self.supervisor.stop_all()

    def instance_for(self, cfg: InstanceConfig) -> Instance:
        address = self.leases.lease(cfg.name)
        tap = self.leases.tap_name(cfg.name)
        net.add_tap(self.netcfg, tap)
        interface = ipaddress.IPv4Interface(f"{address}/{self.netcfg.network.prefixlen}")
        return Instance(
            cfg, interface, self.netcfg.host_address, tap, self.supervisor.run_dir(cfg.name)
        )

    def launch(self, cfg: InstanceConfig) -> Instance:
        inst = self.instance_for(cfg)
        self.supervisor.add(inst)
        self.supervisor.launch(inst)
        if cfg.listen is not None:
            # A guest of the 2018 API listens: the collector connects to its leased
            # address, and keeps trying while it boots and after each restart.
            endpoint = Endpoint(str(inst.address.ip), cfg.listen)
            self.collector.dial(Dial(cfg.name, endpoint))
        return inst

    async def handle(self, request: dict[str, Any]) -> dict[str, Any] | None:
        """The fleet's operations; None for guest control (``level``, ``trace``,
        ``ping``), which every collector answers, unless the instance's VM is stopped."""
        op = request.get("op")
        if op in control.GuestControl.OPS:
            held = self.supervisor.instances.get(str(request.get("name", "")))
            if held is None or not held.vm_held:
                return None
            # its library cannot answer while the VM is stopped: say so rather than wait
            return {"ok": False, "error": f"{held.name} is {held.shown_state()}: its VM is "
                    f"stopped ('umonitor cont {held.name}' or continue in gdb)"}  # fmt: skip
        sup = self.supervisor
        name = str(request.get("name", ""))
        if op == "ps":
            kvm = sup.chooser.unusable_reason() if sup.chooser is not None else None
            instances = sup.snapshot()
            live = self.collector.live_connections()
            for row in instances:  # the level its guest said it has, while connected
                conn = live.get(str(row["name"]))
                row["level"] = conn.level.label if conn and conn.level is not None else None
            return {"ok": True, "instances": instances, "kvm_unusable": kvm}
        if op == "down":
            self.remove_network = bool(request.get("network", True))
            self.stopping.set()
            return {"ok": True, "pid": os.getpid()}
        if op == "run":
            spec = request.get("instance", {})
            cfg = InstanceConfig(
                paused=bool(spec.get("paused", False)),
                name=str(spec["name"]),
                kernel=Path(spec["kernel"]),
                initrd=Path(spec["initrd"]) if spec.get("initrd") else None,
                flavor=str(spec.get("flavor", "linux")),
                memory_mib=int(spec.get("memory_mib", 256)),
                args=str(spec.get("args", "")),
                restart=str(spec.get("restart", "no")),
                app_args=str(spec.get("app_args", "")),
                nanos=Path(spec["nanos"]) if spec.get("nanos") else None,
                listen=int(spec["listen"]) if spec.get("listen") else None,
                symbols=Path(spec["symbols"]) if spec.get("symbols") else None,
            )
            if cfg.name in sup.instances and sup.instances[cfg.name].pid is not None:
                return {"ok": False, "error": f"instance {cfg.name} is already running"}
            self.launch(cfg)
            return {"ok": True}
        if name not in sup.instances:
            return {"ok": False, "error": f"no instance named {name!r}; see 'umonitor ps'"}
        inst = sup.instances[name]
        if op == "stop":
            await sup.stop(name)
            return {"ok": True}
        if op in ("cont", "debug") and (inst.state is not State.RUNNING or inst.pid is None):
            return {"ok": False, "error": f"{name} is {inst.shown_state()}, not running"}
        if op == "cont":
            if inst.debugged():
                return {"ok": False, "error": f"{name} is being debugged (gdb, pid "
                        f"{inst.debugger}): continue it there"}  # fmt: skip
            was = inst.vm_status
            try:
                await sup.command(inst, "cont")
            except (UmonitorError, OSError) as exc:  # QMP broke or timed out
                return {"ok": False, "error": f"{name}: QEMU did not take 'cont': {exc}"}
            return {"ok": True, "was": was}
        if op == "debug":
            if inst.debugged():
                return {"ok": False, "error": f"{name} is already being debugged (gdb, pid "
                        f"{inst.debugger}); one debugger at a time"}  # fmt: skip
            pid = request.get("pid")
            if isinstance(pid, int) and pid > 1:
                inst.debugger = pid  # ps shows "debugging" while this process lives
            symbols = inst.symbols()
            return {
                "ok": True,
                "socket": str(inst.run_dir / qemu.GDB_SOCKET),
                "symbols": str(symbols) if symbols is not None else None,
                "kernel": str(inst.config.kernel),
                "vm_status": inst.vm_status,
                "accel": inst.accel,
            }
        if op == "restart":
            await sup.stop(name)
            inst.restarts += 1
            sup.launch(inst)
            return {"ok": True}
        if op == "rm":
            await sup.stop(name)
            del sup.instances[name]
            self.collector.undial(name)
            if inst.tap:
                net.remove_tap(inst.tap)
            self.leases.release(name)
            return {"ok": True}
        return {"ok": False, "error": f"unknown operation {op!r}"}


def preflight(config: FleetConfig, root: Path, accel: str | None = None) -> accel_mod.AccelChooser:
    """Check, before anything starts, what can be checked: QEMU is there, and every
    accelerator asked for explicitly works (``kvm`` that does not is one clear error).
    ``auto`` is resolved here too, so that ``up`` can say at once when KVM is not used.
    """
    qemu_binary = find_qemu()
    chooser = accel_mod.AccelChooser(root, qemu_binary)
    wanted = {(accel or i.accel, i.memory_mib, i.cpus) for i in config.instances}
    for requested, memory_mib, cpus in sorted(wanted, key=lambda w: w[0] != "kvm"):
        chooser.choose(requested, memory_mib, cpus)
    return chooser


async def run_fleet(
    config: FleetConfig,
    root: Path,
    *,
    accel: str | None = None,
    chooser: accel_mod.AccelChooser | None = None,
) -> None:
    """Bring up network, collector and every instance; run until ``down`` or a signal.

    SIGINT/SIGTERM and ``down`` stop the instances and remove the network devices.
    If this process dies otherwise, the instances keep running and the next ``up``
    adopts them.
    """
    qemu_binary = find_qemu()
    control.check_no_collector(root)  # before the network is touched
    layout.prepare_data_dir(root)
    netcfg = net.NetConfig(config.network.bridge, str(config.network.address))
    net.net_up(netcfg)
    leases = Leases(leases_path(root), netcfg.network, netcfg.host_address)
    store = Store(root, FsyncPolicy.BATCH, config.store)

    supervisor: Supervisor | None = None

    def token_of(name: str) -> str | None:
        inst = supervisor.instances.get(name) if supervisor is not None else None
        return inst.token if inst is not None else None

    local = LOCAL_TOOLS | {str(netcfg.host_address)}  # the host's own tools, e.g. logger
    admission = FleetAdmission(leases.owner, token_of, open=config.open, local=local)
    collector = Collector(store, admission=admission, guest_limits=config.guest_limits)

    def commit() -> None:
        collector.want_commit(None)

    supervisor = Supervisor(
        root, store, config.collector_port, commit, qemu_binary,
        chooser=chooser or accel_mod.AccelChooser(root, qemu_binary),
        syslog_port=config.syslog_port, vm_held=collector.hold_instance,
    )  # fmt: skip
    stopping = asyncio.Event()
    fleet = Fleet(root, config, netcfg, leases, store, collector, supervisor, stopping, accel)
    hosts = (str(netcfg.host_address), "127.0.0.1")
    listeners = Listeners([Endpoint(host, config.collector_port) for host in hosts])
    if config.syslog_port:
        # Unikernels that already log over syslog (MirageOS, Nanos, ...) need no change.
        endpoint = Endpoint(str(netcfg.host_address), config.syslog_port)
        listeners.syslog += [("udp", endpoint), ("tcp", endpoint)]
    app = Assembly(
        root, collector, listeners, list(config.exports), part=fleet, web=config.web,
        stopping=stopping,
    )  # fmt: skip
    try:
        await assembly.run(app)
    finally:
        # Signals and ``down`` remove the network; a fleet that never started leaves
        # it as it found it (guests of an earlier ``up`` may be using it).
        if fleet.started and fleet.remove_network:
            net.net_down(netcfg)


def request(root: Path, message: dict[str, Any], timeout: float = 120.0) -> dict[str, Any]:
    """Send one control request to the fleet running on ``root``."""
    return control.request(root, message, timeout, absent=NO_FLEET)
