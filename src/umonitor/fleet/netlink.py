"""pyroute2 behind one narrow typed face: the few rtnetlink requests umonitor makes.

How this works: every pyroute2 call goes through ``Netlink``, whose methods are typed
and turn pyroute2's errors into umonitor's (``_translate``): a refusal the caller
expects (a device that already exists, an address already gone) is a False, anything
else an EnvironmentProblem that says what to do. pyroute2's synchronous socket drives
its own event loop, so it cannot run in a thread that is running one;
``run_netlink`` then does the work in a short-lived helper thread (netlink requests
take milliseconds).

TAP devices are made as ``ip tuntap add NAME mode tap`` makes them: the TUNSETIFF
ioctl on /dev/net/tun (pyroute2 issues it for kind "tuntap"), persistent, without
packet information or virtio-net header, owned by uid 0.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Interface
from typing import Any, TypeVar

from pyroute2 import IPRoute  # type: ignore[import-untyped]
from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped]

from umonitor.errors import EnvironmentProblem, UmonitorError

TUN_DEVICE = "/dev/net/tun"

_IFF_UP = 0x1
_IFF_TUN, _IFF_TAP = 1, 2  # IFLA_TUN_TYPE values
_AF_INET = 2
_ROOT_HINT = (
    "setting up guest networking needs root or CAP_NET_ADMIN; run it as root (e.g. with sudo)"
)

T = TypeVar("T")


def no_tun(name: str) -> str:
    """What to do when TAP device ``name`` cannot be made for want of the tun device."""
    return (
        f"cannot create TAP device {name}: {TUN_DEVICE} is missing or unusable; "
        "load the tun module ('modprobe tun') or, in a container, pass /dev/net/tun in"
    )


@dataclass(frozen=True, slots=True)
class Device:
    name: str
    index: int
    kind: str
    up: bool
    master: int  # 0: none
    alias: str


def _device(msg: Any) -> Device:
    kind = str(msg.get(("linkinfo", "kind")) or "")
    if kind == "tun":
        tun_type = msg.get(("linkinfo", "data", "IFLA_TUN_TYPE"))
        kind = {_IFF_TAP: "tap", _IFF_TUN: "tun"}.get(tun_type, kind)
    return Device(
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


class Netlink:
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

    def links(self) -> list[Device]:
        with _translate("list network devices"):
            return [_device(msg) for msg in self._ipr.get_links()]

    def link(self, name: str) -> Device | None:
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
        missing = no_tun(name)
        self._change(
            f"create TAP device {name}",
            lambda: self._ipr.link("add", ifname=name, kind="tuntap", mode="tap", uid=0, ifr=flags),
            hints={errno.ENOENT: missing, errno.ENODEV: missing, errno.ENXIO: missing},
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


def _session(work: Callable[[Netlink], T]) -> T:
    with _translate("open a netlink socket"):
        ipr = IPRoute(groups=0)
    try:
        return work(Netlink(ipr))
    finally:
        with contextlib.suppress(Exception):
            ipr.close()


def run_netlink(work: Callable[[Netlink], T]) -> T:
    """Do ``work`` over a netlink socket of its own; in a helper thread if this one runs
    an event loop (pyroute2's socket drives one of its own)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _session(work)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="umonitor-net") as pool:
        return pool.submit(_session, work).result()
