"""The bridge and TAP devices, through real netlink in the root namespace.

These tests need root (CI runs them as root) and fail without it. Every device gets
a test-unique name and the guest subnet is a random unused 10.250.X.0/24; whatever a
test creates is deleted afterwards with iproute2, whether the test passed or not.
Devices umonitor must leave alone are dummies (ifb where the kernel has no dummy
driver). iproute2 (``ip -j``) is also the independent witness of what the code did.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import multiprocessing
import os
import random
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from pyroute2 import IPRoute

from umonitor.errors import EnvironmentProblem, UsageError
from umonitor.fleet import net
from umonitor.fleet.net import NetConfig, add_tap, net_down, net_up, remove_tap

NOBODY = 65534


def ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


def ip_ok(*args: str) -> str:
    out = ip(*args)
    assert out.returncode == 0, f"ip {' '.join(args)}: {out.stderr}"
    return out.stdout


def link_json(name: str) -> dict[str, Any] | None:
    out = ip("-j", "-d", "link", "show", "dev", name)
    if out.returncode != 0:
        return None
    (link,) = json.loads(out.stdout)
    return dict(link)


def exists(name: str) -> bool:
    return ip("link", "show", "dev", name).returncode == 0


def ipv4_of(name: str) -> list[str]:
    links = json.loads(ip_ok("-j", "-4", "addr", "show", "dev", name))
    return [f"{a['local']}/{a['prefixlen']}" for link in links for a in link["addr_info"]]


def used_networks() -> list[ipaddress.IPv4Network]:
    nets = []
    for link in json.loads(ip_ok("-j", "-4", "addr", "show")):
        for a in link.get("addr_info", []):
            nets.append(ipaddress.IPv4Network(f"{a['local']}/{a['prefixlen']}", strict=False))
    for route in json.loads(ip_ok("-j", "-4", "route", "show", "table", "all")):
        if route.get("dst") not in (None, "default"):
            nets.append(ipaddress.IPv4Network(route["dst"], strict=False))
    return nets


def free_subnet(avoid: ipaddress.IPv4Network | None = None) -> ipaddress.IPv4Network:
    used = [*used_networks(), *([avoid] if avoid else [])]
    for _ in range(100):
        candidate = ipaddress.IPv4Network(f"10.250.{random.randrange(1, 255)}.0/24")
        if not any(candidate.overlaps(other) for other in used):
            return candidate
    raise AssertionError("no unused 10.250.X.0/24 subnet on this host")


@dataclass
class Sandbox:
    """Test-unique device names and a free subnet; deletes every name it handed out."""

    suffix: str
    subnet: ipaddress.IPv4Network
    handed_out: list[str] = field(default_factory=list)

    def name(self, role: str) -> str:
        name = f"umt{role}{self.suffix}{len(self.handed_out)}"
        assert len(name) <= 15 and not exists(name), name
        self.handed_out.append(name)
        return name

    @property
    def bridge(self) -> str:
        return self.handed_out[0]

    def host(self, offset: int = 1) -> str:
        return f"{self.subnet.network_address + offset}/{self.subnet.prefixlen}"

    def cfg(self) -> NetConfig:
        return NetConfig(bridge=self.bridge, host_cidr=self.host())

    def dummy(self, name: str | None = None) -> str:
        """A device umonitor did not create: a dummy, or ifb on kernels without dummy."""
        name = name or self.name("d")
        if ip("link", "add", name, "type", "dummy").returncode != 0:
            ip_ok("link", "add", name, "type", "ifb")
        return name

    def cleanup(self) -> None:
        for name in reversed(self.handed_out):
            if exists(name):
                ip("link", "del", name)
        leftover = [name for name in self.handed_out if exists(name)]
        assert not leftover, f"could not delete test devices {leftover}"


@pytest.fixture
def box() -> Iterator[Sandbox]:
    assert os.geteuid() == 0, "the network tests need root (CI runs them as root); use sudo"
    sandbox = Sandbox(secrets.token_hex(2), free_subnet())
    sandbox.name("b")  # the bridge: handed_out[0]
    try:
        yield sandbox
    finally:
        sandbox.cleanup()


def pyroute2_link(name: str) -> Any:
    with IPRoute() as ipr:
        (link,) = ipr.get_links(ifname=name)
        return link


# -- the bridge ----------------------------------------------------------------------


def test_net_up_creates_a_marked_bridge_with_the_host_address(box: Sandbox) -> None:
    cfg = box.cfg()
    state = net_up(cfg)
    assert state.ready
    assert state.bridge is not None and state.bridge.name == box.bridge
    assert state.bridge.kind == "bridge"
    assert [str(a) for a in state.addresses] == [box.host()]
    link = link_json(box.bridge)
    assert link is not None
    assert link["linkinfo"]["info_kind"] == "bridge"
    assert link["ifalias"] == f"umonitor:{box.bridge}"
    assert "UP" in link["flags"]
    assert ipv4_of(box.bridge) == [box.host()]


def test_net_up_twice_changes_nothing(box: Sandbox) -> None:
    cfg = box.cfg()
    first = net_up(cfg)
    second = net_up(cfg)
    assert first == second
    assert ipv4_of(box.bridge) == [box.host()]


def test_net_up_replaces_a_stale_address_on_its_own_bridge(box: Sandbox) -> None:
    net_up(NetConfig(box.bridge, box.host(1)))
    state = net_up(NetConfig(box.bridge, box.host(9)))
    assert [str(a) for a in state.addresses] == [box.host(9)]
    assert ipv4_of(box.bridge) == [box.host(9)]


def test_works_inside_a_running_event_loop(box: Sandbox) -> None:
    async def main() -> bool:
        return net_up(box.cfg()).ready

    assert asyncio.run(main())


# -- TAP devices ---------------------------------------------------------------------


def test_add_tap_attaches_a_persistent_tap_to_the_bridge(box: Sandbox) -> None:
    cfg = box.cfg()
    net_up(cfg)
    tap = box.name("t")
    add_tap(cfg, tap)
    add_tap(cfg, tap)  # idempotent

    bridge_index = pyroute2_link(box.bridge)["index"]
    seen = pyroute2_link(tap)
    assert seen.get("master") == bridge_index
    assert seen["flags"] & 1  # IFF_UP

    link = link_json(tap)
    assert link is not None
    assert link["master"] == box.bridge
    assert "UP" in link["flags"]
    assert link["ifalias"] == f"umonitor:{box.bridge}"
    assert link["linkinfo"]["info_kind"] == "tun"
    data = link["linkinfo"]["info_data"]
    assert (data["type"], data["pi"], data["vnet_hdr"], data["persist"]) == (
        "tap",
        False,
        False,
        True,
    )

    (port,) = net_up(cfg).ports  # what net_up sees of it: the same
    assert (port.name, port.kind, port.master, port.up, port.ours) == (
        tap,
        "tap",
        box.bridge,
        True,
        True,
    )


def test_remove_tap_deletes_only_umonitors_taps(box: Sandbox) -> None:
    cfg = box.cfg()
    net_up(cfg)
    ours, theirs = box.name("t"), box.name("u")
    add_tap(cfg, ours)
    ip_ok("tuntap", "add", theirs, "mode", "tap")
    add_tap(cfg, theirs)  # reused, attached, but not marked
    assert (link_json(theirs) or {}).get("master") == box.bridge
    assert "ifalias" not in (link_json(theirs) or {})

    assert remove_tap(ours) is True
    assert not exists(ours)
    assert remove_tap(ours) is False
    assert remove_tap(theirs) is False
    assert exists(theirs)
    assert remove_tap(box.bridge) is False
    assert exists(box.bridge)


def test_add_tap_needs_the_bridge(box: Sandbox) -> None:
    with pytest.raises(UsageError, match="run 'umonitor net up' first"):
        add_tap(box.cfg(), box.name("t"))


def test_add_tap_refuses_a_device_that_is_not_a_tap(box: Sandbox) -> None:
    cfg = box.cfg()
    net_up(cfg)
    dummy = box.dummy()
    with pytest.raises(UsageError, match=f"{dummy} exists and is not a TAP device"):
        add_tap(cfg, dummy)
    link = link_json(dummy)
    assert link is not None and "master" not in link


def test_add_tap_without_dev_net_tun(box: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = box.cfg()
    net_up(cfg)
    monkeypatch.setattr(net, "TUN_DEVICE", "/nonexistent/net/tun")
    tap = box.name("t")
    with pytest.raises(EnvironmentProblem, match=r"modprobe tun"):
        add_tap(cfg, tap)
    assert not exists(tap)


# -- tearing down --------------------------------------------------------------------


def test_net_down_removes_exactly_what_umonitor_created(box: Sandbox) -> None:
    cfg = box.cfg()
    bystander = box.dummy()  # exists before umonitor touches anything
    net_up(cfg)
    taps = [box.name("t"), box.name("t")]
    for tap in taps:
        add_tap(cfg, tap)
    ip_ok("link", "set", bystander, "master", box.bridge)  # even when attached to the bridge

    removed = net_down(cfg)
    assert sorted(removed) == sorted([*taps, box.bridge])
    assert removed[-1] == box.bridge
    for name in removed:
        assert not exists(name)
    link = link_json(bystander)
    assert link is not None and "master" not in link
    assert net_down(cfg) == ()
    assert exists(bystander)


def test_net_down_spares_another_networks_devices(box: Sandbox) -> None:
    mine = box.cfg()
    other_subnet = free_subnet(avoid=box.subnet)
    other = NetConfig(box.name("b"), f"{other_subnet.network_address + 1}/24")
    net_up(mine)
    net_up(other)
    tap = box.name("t")
    add_tap(other, tap)
    assert net_down(mine) == (box.bridge,)
    assert exists(other.bridge) and exists(tap)
    assert sorted(net_down(other)) == sorted([tap, other.bridge])


# -- refusals ------------------------------------------------------------------------


@pytest.mark.parametrize(("offset", "prefix"), [(7, 24), (130, 25), (1, 16)])
def test_subnet_already_on_another_interface(box: Sandbox, offset: int, prefix: int) -> None:
    dummy = box.dummy()
    taken = f"{box.subnet.network_address + offset}/{prefix}"
    ip_ok("addr", "add", taken, "dev", dummy)
    with pytest.raises(UsageError, match=f"overlaps .* on {dummy}; choose another"):
        net_up(box.cfg())
    assert not exists(box.bridge)


def test_bridge_name_taken_by_a_dummy(box: Sandbox) -> None:
    box.dummy(box.bridge)
    with pytest.raises(UsageError, match="exists and was not created by umonitor"):
        net_up(box.cfg())
    assert net_down(box.cfg()) == ()
    link = link_json(box.bridge)
    assert link is not None and link["linkinfo"]["info_kind"] in ("dummy", "ifb")
    assert ipv4_of(box.bridge) == []


def test_bridge_name_taken_by_a_bridge_umonitor_did_not_create(box: Sandbox) -> None:
    ip_ok("link", "add", box.bridge, "type", "bridge")
    with pytest.raises(UsageError, match="not created by umonitor"):
        net_up(box.cfg())
    assert net_down(box.cfg()) == ()
    assert exists(box.bridge)


def test_marked_device_that_is_not_a_bridge(box: Sandbox) -> None:
    box.dummy(box.bridge)
    ip_ok("link", "set", box.bridge, "alias", f"umonitor:{box.bridge}")
    with pytest.raises(UsageError, match="is not a bridge"):
        net_up(box.cfg())


def test_bad_names_and_addresses() -> None:
    with pytest.raises(UsageError, match="at most 15"):
        NetConfig(bridge="a-name-that-is-too-long")
    with pytest.raises(UsageError, match=r"10\.77\.0\.1/24"):
        NetConfig(host_cidr="10.77.0.1")
    with pytest.raises(UsageError, match="no room for guests"):
        NetConfig(host_cidr="10.77.0.0/24")
    with pytest.raises(UsageError, match="not a usable interface name"):
        add_tap(NetConfig(), "bad/name")


# -- without privileges --------------------------------------------------------------


def _as_nobody(cfg: NetConfig, tap: str, report: Any) -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    results = []
    for call in (lambda: net_up(cfg), lambda: add_tap(cfg, tap)):
        try:
            call()
            results.append(("ok", ""))
        except Exception as exc:
            results.append((f"{type(exc).__module__}.{type(exc).__name__}", str(exc)))
    report.put(results)


def test_not_root_is_a_clear_environment_problem(box: Sandbox) -> None:
    ctx = multiprocessing.get_context("fork")
    report = ctx.Queue()
    tap = box.name("t")
    child = ctx.Process(target=_as_nobody, args=(box.cfg(), tap, report))
    child.start()
    results = report.get(timeout=60)
    child.join(timeout=60)
    assert child.exitcode == 0
    kind, message = results[0]  # net_up; add_tap then fails for want of the bridge
    assert kind == "umonitor.errors.EnvironmentProblem", message
    assert "needs root or CAP_NET_ADMIN" in message
    assert "\n" not in message
    assert not exists(box.bridge) and not exists(tap)


def test_not_root_cannot_add_a_tap_to_an_existing_bridge(box: Sandbox) -> None:
    cfg = box.cfg()
    net_up(cfg)
    ctx = multiprocessing.get_context("fork")
    report = ctx.Queue()
    tap = box.name("t")
    child = ctx.Process(target=_as_nobody, args=(cfg, tap, report))
    child.start()
    (up, add) = report.get(timeout=60)
    child.join(timeout=60)
    assert up == ("ok", "")  # nothing to change, nothing refused
    assert add[0] == "umonitor.errors.EnvironmentProblem"
    assert "needs root or CAP_NET_ADMIN" in add[1]
    assert not exists(tap)
