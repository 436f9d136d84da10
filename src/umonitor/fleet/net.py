"""The host side of guest networking: one bridge with the host's address, a TAP per guest.

How this works: every device umonitor creates carries the interface alias
``umonitor:<bridge>`` (IFLA_IFALIAS; ``ip link`` shows it as "alias ..."). That mark
is how later calls tell umonitor's devices from everyone else's: ``net_up`` reuses a
bridge only if it carries the mark, ``net_down`` deletes marked devices and nothing
else. The kernel ignores an alias given with RTM_NEWLINK, so it is set right after
the device is created; if that fails, the new device is deleted again.

Every request goes to the kernel through netlink.py's ``Netlink`` (pyroute2, its
errors translated into umonitor's), over one socket per operation.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from umonitor.errors import EnvironmentProblem, UmonitorError, UsageError
from umonitor.fleet.netlink import TUN_DEVICE, Device, Netlink, no_tun, run_netlink

MARK_PREFIX = "umonitor:"
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")


def mark_of(bridge: str) -> str:
    """The alias umonitor puts on every device it creates for ``bridge``'s network."""
    return MARK_PREFIX + bridge


def _check_ifname(name: str, what: str) -> None:
    if not _IFNAME.fullmatch(name) or name in (".", ".."):
        raise UsageError(
            f"{what} name {name!r} is not a usable interface name; use at most 15 "
            "letters, digits, '.', '_' or '-'"
        )


@dataclass(frozen=True, slots=True)
class NetConfig:
    """The guest network: a bridge and the host's address on it (which fixes the subnet)."""

    bridge: str = "umon0"
    host_cidr: str = "10.77.0.1/24"

    def __post_init__(self) -> None:
        _check_ifname(self.bridge, "bridge")
        try:
            iface = IPv4Interface(self.host_cidr)
        except ValueError as exc:
            raise UsageError(
                f"host address {self.host_cidr!r} is not an IPv4 address with a prefix; "
                "write it like 10.77.0.1/24"
            ) from exc
        net = iface.network
        if net.prefixlen > 30 or iface.ip in (net.network_address, net.broadcast_address):
            raise UsageError(
                f"host address {self.host_cidr} leaves no room for guests; use a host "
                "address inside a subnet of /30 or larger, e.g. 10.77.0.1/24"
            )

    @property
    def host_interface(self) -> IPv4Interface:
        """The host's address with its prefix, as put on the bridge."""
        return IPv4Interface(self.host_cidr)

    @property
    def host_address(self) -> IPv4Address:
        """The host's address on the bridge: the guests' gateway and collector address."""
        return self.host_interface.ip

    @property
    def network(self) -> IPv4Network:
        """The guest subnet."""
        return self.host_interface.network


@dataclass(frozen=True, slots=True)
class Link:
    """A network device as the kernel reports it."""

    name: str
    index: int
    kind: str  # "bridge", "tap", "tun", "dummy", ...; "" when the kernel names none
    up: bool  # administratively up
    master: str | None  # the bridge it is attached to
    ours: bool  # carries umonitor's mark for this network


@dataclass(frozen=True, slots=True)
class NetState:
    """What exists of one guest network."""

    bridge: Link | None
    addresses: tuple[IPv4Interface, ...]  # IPv4 addresses on the bridge
    ports: tuple[Link, ...]  # devices attached to the bridge or marked for it

    @property
    def ready(self) -> bool:
        """Whether the bridge exists, is umonitor's and is up."""
        return self.bridge is not None and self.bridge.ours and self.bridge.up


# -- the public operations ---------------------------------------------------------


def net_up(cfg: NetConfig) -> NetState:
    """Create the bridge if absent, give it the host address, bring it up.

    Running it again changes nothing, so it then needs no privileges. Other IPv4
    addresses on umonitor's bridge (left from an earlier host address) are removed, so
    the bridge matches ``cfg``.
    """
    return run_netlink(lambda nl: _net_up(nl, cfg))


def add_tap(cfg: NetConfig, tap_name: str) -> None:
    """Create TAP device ``tap_name`` if absent, attach it to the bridge, bring it up.

    An existing TAP device of that name is reused; if umonitor did not create it, it
    stays unmarked, so that ``remove_tap`` and ``net_down`` leave it alone.
    """
    _check_ifname(tap_name, "TAP device")
    run_netlink(lambda nl: _add_tap(nl, cfg, tap_name))


def remove_tap(name: str) -> bool:
    """Delete TAP device ``name`` if umonitor created it; whether it was deleted.

    Anything else of that name (a TAP device of the user's, umonitor's bridge) stays.
    """
    _check_ifname(name, "TAP device")
    return run_netlink(lambda nl: _remove_tap(nl, name))


def net_down(cfg: NetConfig) -> tuple[str, ...]:
    """Delete every device umonitor created for ``cfg``'s network; their names.

    Devices umonitor did not create survive, also when attached to the bridge: the
    kernel detaches them when the bridge goes.
    """
    return run_netlink(lambda nl: _net_down(nl, cfg))


# -- the work, over one netlink socket ---------------------------------------------


def _net_up(nl: Netlink, cfg: NetConfig) -> NetState:
    mark = mark_of(cfg.bridge)
    bridge = nl.link(cfg.bridge)
    if bridge is not None:
        _check_bridge_is_ours(bridge, cfg)
    _check_subnet_free(nl, cfg, bridge.index if bridge is not None else None)
    if bridge is None:
        if nl.create_bridge(cfg.bridge):
            bridge = _marked(nl, cfg.bridge, mark)
        else:  # another process created it after our lookup
            bridge = nl.link(cfg.bridge)
            if bridge is None:
                raise EnvironmentProblem(
                    f"bridge {cfg.bridge} appeared and vanished while it was being set up; "
                    "check what else manages network devices on this host and retry"
                )
            _check_bridge_is_ours(bridge, cfg)
    present = nl.addresses(bridge.index)
    for address in present:
        if address != cfg.host_interface:
            nl.del_address(bridge.index, address)
    if cfg.host_interface not in present:
        nl.add_address(bridge.index, cfg.host_interface)
    if not bridge.up:
        nl.set_up(bridge.index)
    return _status(nl, cfg)


def _add_tap(nl: Netlink, cfg: NetConfig, name: str) -> None:
    mark = mark_of(cfg.bridge)
    bridge = nl.link(cfg.bridge)
    if bridge is None or bridge.alias != mark or bridge.kind != "bridge":
        raise UsageError(
            f"bridge {cfg.bridge} is not set up by umonitor; run 'umonitor net up' first"
        )
    tap = nl.link(name)
    if tap is None:
        if not os.path.exists(TUN_DEVICE):
            raise EnvironmentProblem(no_tun(name))
        nl.create_tap(name)
        tap = _marked(nl, name, mark)
    elif tap.kind != "tap":
        raise UsageError(
            f"network device {name} exists and is not a TAP device; remove it "
            f"('ip link del {name}') or give the instance another name"
        )
    elif tap.alias.startswith(MARK_PREFIX) and tap.alias != mark:
        nl.set_alias(tap.index, mark)  # umonitor's, from another network: move it here
    nl.attach_up(tap.index, bridge.index)


def _remove_tap(nl: Netlink, name: str) -> bool:
    tap = nl.link(name)
    if tap is None or tap.kind != "tap" or not tap.alias.startswith(MARK_PREFIX):
        return False
    return nl.delete(tap.index, name)


def _net_down(nl: Netlink, cfg: NetConfig) -> tuple[str, ...]:
    mark = mark_of(cfg.bridge)
    doomed = [dev for dev in nl.links() if dev.alias == mark]
    doomed.sort(key=lambda dev: dev.name == cfg.bridge)  # the ports first, then the bridge
    return tuple(dev.name for dev in doomed if nl.delete(dev.index, dev.name))


def _status(nl: Netlink, cfg: NetConfig) -> NetState:
    mark = mark_of(cfg.bridge)
    devices = nl.links()
    names = {dev.index: dev.name for dev in devices}

    def public(dev: Device) -> Link:
        master = names.get(dev.master) if dev.master else None
        return Link(dev.name, dev.index, dev.kind, dev.up, master, dev.alias == mark)

    bridge = next((dev for dev in devices if dev.name == cfg.bridge), None)
    if bridge is None:
        ports = [dev for dev in devices if dev.alias == mark]
        return NetState(None, (), tuple(public(dev) for dev in ports))
    ports = [
        dev
        for dev in devices
        if dev.index != bridge.index and (dev.master == bridge.index or dev.alias == mark)
    ]
    return NetState(
        public(bridge),
        tuple(nl.addresses(bridge.index)),
        tuple(public(dev) for dev in ports),
    )


def _marked(nl: Netlink, name: str, mark: str) -> Device:
    """Mark the device just created as ``name``; delete it again if that fails."""
    dev = nl.link(name)
    if dev is None:
        raise EnvironmentProblem(
            f"network device {name} vanished right after it was created; "
            "check what else manages network devices on this host and retry"
        )
    try:
        nl.set_alias(dev.index, mark)
    except UmonitorError:
        with contextlib.suppress(UmonitorError):
            nl.delete(dev.index, name)
        raise
    return dev


def _check_bridge_is_ours(bridge: Device, cfg: NetConfig) -> None:
    if bridge.alias != mark_of(cfg.bridge):
        raise UsageError(
            f"network device {bridge.name} exists and was not created by umonitor; "
            f"choose another bridge name or remove it ('ip link del {bridge.name}')"
        )
    if bridge.kind != "bridge":
        raise UsageError(
            f"network device {bridge.name} is not a bridge (it is {bridge.kind or 'unknown'}); "
            f"remove it ('ip link del {bridge.name}') and run 'umonitor net up' again"
        )


def _check_subnet_free(nl: Netlink, cfg: NetConfig, bridge_index: int | None) -> None:
    names = {dev.index: dev.name for dev in nl.links()}
    for index, address in nl.all_addresses():
        if index != bridge_index and address.network.overlaps(cfg.network):
            where = names.get(index, f"interface #{index}")
            raise UsageError(
                f"guest subnet {cfg.network} overlaps {address} on {where}; choose another "
                "host address for the guest network (e.g. 10.78.0.1/24) or remove that one"
            )
