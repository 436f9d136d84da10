"""The host side of guest networking: one bridge with the host's address, a TAP per guest.

How this works: every device umonitor creates carries the interface alias
``umonitor:<bridge>`` (IFLA_IFALIAS; ``ip link`` shows it as "alias ..."). That mark
is how later calls tell umonitor's devices from everyone else's: ``net_up`` reuses a
bridge only if it carries the mark, ``net_down`` deletes marked devices and nothing
else. The kernel ignores an alias given with RTM_NEWLINK, so it is set right after
the device is created; if that fails, the new device is deleted again.

TAP devices are made as ``ip tuntap add NAME mode tap`` makes them: the TUNSETIFF
ioctl on /dev/net/tun (pyroute2 issues it for kind "tuntap"), persistent, without
packet information or virtio-net header, owned by uid 0.

Every pyroute2 call goes through ``_Netlink``, which turns pyroute2's errors into
umonitor's (``_translate``). pyroute2's synchronous socket drives its own event loop,
so it cannot run in a thread that is running one; ``_run`` then does the work in a
short-lived helper thread (netlink requests take milliseconds).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Any, TypeVar

from pyroute2 import IPRoute  # type: ignore[import-untyped]
from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped]

from umonitor.errors import EnvironmentProblem, UmonitorError, UsageError

MARK_PREFIX = "umonitor:"
TUN_DEVICE = "/dev/net/tun"
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_IFF_UP = 0x1
_IFF_TUN, _IFF_TAP = 1, 2  # IFLA_TUN_TYPE values
_AF_INET = 2
_ROOT_HINT = (
    "setting up guest networking needs root or CAP_NET_ADMIN; run it as root (e.g. with sudo)"
)

T = TypeVar("T")


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
    return _run(lambda nl: _net_up(nl, cfg))


def add_tap(cfg: NetConfig, tap_name: str) -> None:
    """Create TAP device ``tap_name`` if absent, attach it to the bridge, bring it up.

    An existing TAP device of that name is reused; if umonitor did not create it, it
    stays unmarked, so that ``remove_tap`` and ``net_down`` leave it alone.
    """
    _check_ifname(tap_name, "TAP device")
    _run(lambda nl: _add_tap(nl, cfg, tap_name))


def remove_tap(name: str) -> bool:
    """Delete TAP device ``name`` if umonitor created it; whether it was deleted.

    Anything else of that name (a TAP device of the user's, umonitor's bridge) stays.
    """
    _check_ifname(name, "TAP device")
    return _run(lambda nl: _remove_tap(nl, name))


def net_down(cfg: NetConfig) -> tuple[str, ...]:
    """Delete every device umonitor created for ``cfg``'s network; their names.

    Devices umonitor did not create survive, also when attached to the bridge: the
    kernel detaches them when the bridge goes.
    """
    return _run(lambda nl: _net_down(nl, cfg))


# -- the work, over one netlink socket ---------------------------------------------


def _net_up(nl: _Netlink, cfg: NetConfig) -> NetState:
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


def _add_tap(nl: _Netlink, cfg: NetConfig, name: str) -> None:
    mark = mark_of(cfg.bridge)
    bridge = nl.link(cfg.bridge)
    if bridge is None or bridge.alias != mark or bridge.kind != "bridge":
        raise UsageError(
            f"bridge {cfg.bridge} is not set up by umonitor; run 'umonitor net up' first"
        )
    tap = nl.link(name)
    if tap is None:
        if not os.path.exists(TUN_DEVICE):
            raise EnvironmentProblem(_no_tun(name))
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


def _remove_tap(nl: _Netlink, name: str) -> bool:
    tap = nl.link(name)
    if tap is None or tap.kind != "tap" or not tap.alias.startswith(MARK_PREFIX):
        return False
    return nl.delete(tap.index, name)


def _net_down(nl: _Netlink, cfg: NetConfig) -> tuple[str, ...]:
    mark = mark_of(cfg.bridge)
    doomed = [dev for dev in nl.links() if dev.alias == mark]
    doomed.sort(key=lambda dev: dev.name == cfg.bridge)  # the ports first, then the bridge
    return tuple(dev.name for dev in doomed if nl.delete(dev.index, dev.name))


def _status(nl: _Netlink, cfg: NetConfig) -> NetState:
    mark = mark_of(cfg.bridge)
    devices = nl.links()
    names = {dev.index: dev.name for dev in devices}

    def public(dev: _Device) -> Link:
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


def _marked(nl: _Netlink, name: str, mark: str) -> _Device:
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


def _check_bridge_is_ours(bridge: _Device, cfg: NetConfig) -> None:
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


def _check_subnet_free(nl: _Netlink, cfg: NetConfig, bridge_index: int | None) -> None:
    names = {dev.index: dev.name for dev in nl.links()}
    for index, address in nl.all_addresses():
        if index != bridge_index and address.network.overlaps(cfg.network):
            where = names.get(index, f"interface #{index}")
            raise UsageError(
                f"guest subnet {cfg.network} overlaps {address} on {where}; choose another "
                "host address for the guest network (e.g. 10.78.0.1/24) or remove that one"
            )


def _no_tun(name: str) -> str:
    return (
        f"cannot create TAP device {name}: {TUN_DEVICE} is missing or unusable; "
        "load the tun module ('modprobe tun') or, in a container, pass /dev/net/tun in"
    )


# -- pyroute2, behind one narrow typed face ----------------------------------------


@dataclass(frozen=True, slots=True)
class _Device:
    name: str
    index: int
    kind: str
    up: bool
    master: int  # 0: none
    alias: str


def _device(msg: Any) -> _Device:
    kind = str(msg.get(("linkinfo", "kind")) or "")
    if kind == "tun":
        tun_type = msg.get(("linkinfo", "data", "IFLA_TUN_TYPE"))
        kind = {_IFF_TAP: "tap", _IFF_TUN: "tun"}.get(tun_type, kind)
    return _Device(
        name=str(msg.get("ifname")),
        index=int(msg["index"]),
        kind=kind,
        up=bool(int(msg["flags"]) & _IFF_UP),
        master=int(msg.get("master") or 0),
        alias=str(msg.get("ifalias") or ""),
    )


def _interfaces(msg: Any) -> Iterator[IPv4Interface]:
    prefix = int(msg["prefixlen"])
    seen: set[str] = set()
    for key in ("local", "address"):  # they differ on point-to-point links
        value = msg.get(key)
        if value and value not in seen:
            seen.add(value)
            yield IPv4Interface(f"{value}/{prefix}")


@contextlib.contextmanager
def _translate(what: str, hints: dict[int, str] | None = None) -> Iterator[None]:
    """Turn whatever pyroute2 raises while doing ``what`` into an umonitor error.

    ``hints`` maps an errno to the whole message for it, where a generic one would
    not say what to do.
    """
    try:
        yield
    except NetlinkError as exc:
        code = int(exc.code)
        if hints and code in hints:
            raise EnvironmentProblem(hints[code]) from exc
        if code in (errno.EPERM, errno.EACCES):
            raise EnvironmentProblem(f"cannot {what}: permission denied; {_ROOT_HINT}") from exc
        reason = os.strerror(code) if code > 0 else str(exc)
        raise EnvironmentProblem(
            f"cannot {what}: {reason} (netlink error {code}); "
            "check the host's network setup with 'ip link' and 'ip addr'"
        ) from exc
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.EACCES):
            raise EnvironmentProblem(f"cannot {what}: permission denied; {_ROOT_HINT}") from exc
        raise EnvironmentProblem(
            f"cannot {what}: {exc.strerror or exc}; netlink is not usable here "
            "(check that this is Linux and that the process may open netlink sockets)"
        ) from exc
    except UmonitorError:
        raise
    except Exception as exc:
        if not type(exc).__module__.startswith("pyroute2"):
            raise
        raise EnvironmentProblem(
            f"cannot {what}: unexpected netlink reply ({exc!r}); "
            "check the host's network setup with 'ip link' and 'ip addr'"
        ) from exc


class _Netlink:
    """The few rtnetlink requests umonitor makes, typed and with translated errors."""

    def __init__(self, ipr: Any) -> None:
        self._ipr = ipr

    def _change(
        self,
        what: str,
        call: Callable[[], object],
        *,
        ok: tuple[int, ...] = (),
        hints: dict[int, str] | None = None,
    ) -> bool:
        """Make one change; False if the kernel refused it with an errno in ``ok``."""
        with _translate(what, hints):
            try:
                call()
            except NetlinkError as exc:
                if exc.code in ok:
                    return False
                raise
        return True

    def links(self) -> list[_Device]:
        with _translate("list network devices"):
            return [_device(msg) for msg in self._ipr.get_links()]

    def link(self, name: str) -> _Device | None:
        with _translate(f"look up network device {name}"):
            found = [_device(msg) for msg in self._ipr.get_links(ifname=name)]
        return next((dev for dev in found if dev.name == name), None)

    def all_addresses(self) -> list[tuple[int, IPv4Interface]]:
        with _translate("list IPv4 addresses"):
            return [
                (int(msg["index"]), iface)
                for msg in self._ipr.get_addr(family=_AF_INET)
                for iface in _interfaces(msg)
            ]

    def addresses(self, index: int) -> list[IPv4Interface]:
        with _translate("list IPv4 addresses"):
            msgs = self._ipr.get_addr(family=_AF_INET, index=index)
            return [IPv4Interface(f"{m.get('local')}/{int(m['prefixlen'])}") for m in msgs]

    def create_bridge(self, name: str) -> bool:
        """Create bridge ``name``; False if a device of that name exists."""
        no_bridge = (
            f"cannot create bridge {name}: this kernel has no bridge support; "
            "load the bridge module ('modprobe bridge')"
        )
        return self._change(
            f"create bridge {name}",
            lambda: self._ipr.link("add", ifname=name, kind="bridge"),
            ok=(errno.EEXIST,),
            hints={errno.EOPNOTSUPP: no_bridge},
        )

    def create_tap(self, name: str) -> None:
        flags = {"no_pi": True, "one_queue": False, "vnet_hdr": False, "multi_queue": False}
        no_tun = _no_tun(name)
        self._change(
            f"create TAP device {name}",
            lambda: self._ipr.link("add", ifname=name, kind="tuntap", mode="tap", uid=0, ifr=flags),
            hints={errno.ENOENT: no_tun, errno.ENODEV: no_tun, errno.ENXIO: no_tun},
        )

    def set_alias(self, index: int, alias: str) -> None:
        self._change(
            f"mark network device #{index}",
            lambda: self._ipr.link("set", index=index, ifalias=alias),
        )

    def set_up(self, index: int) -> None:
        self._change(
            f"bring up network device #{index}",
            lambda: self._ipr.link("set", index=index, state="up"),
        )

    def attach_up(self, index: int, master: int) -> None:
        self._change(
            f"attach network device #{index} to the bridge",
            lambda: self._ipr.link("set", index=index, master=master, state="up"),
        )

    def add_address(self, index: int, iface: IPv4Interface) -> None:
        self._change(
            f"add address {iface}",
            lambda: self._ipr.addr(
                "add", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen
            ),
            ok=(errno.EEXIST,),
        )

    def del_address(self, index: int, iface: IPv4Interface) -> None:
        self._change(
            f"remove address {iface}",
            lambda: self._ipr.addr(
                "del", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen
            ),
            ok=(errno.EADDRNOTAVAIL,),
        )

    def delete(self, index: int, name: str) -> bool:
        """Delete device ``index``; False if it was already gone."""
        return self._change(
            f"delete network device {name}",
            lambda: self._ipr.link("del", index=index),
            ok=(errno.ENODEV,),
        )


def _session(work: Callable[[_Netlink], T]) -> T:
    with _translate("open a netlink socket"):
        ipr = IPRoute(groups=0)
    try:
        return work(_Netlink(ipr))
    finally:
        with contextlib.suppress(Exception):
            ipr.close()


def _run(work: Callable[[_Netlink], T]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _session(work)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="umonitor-net") as pool:
        return pool.submit(_session, work).result()
