"""Network cuts under a real fleet: guests keep logging while the link is gone for 10 s.

Two demo guests (QEMU, TCG) log 2,000 numbered records a second. First one guest's
TAP device is set down for 10 s (the other is the control), then the bridge loses
its host address for 10 s (both guests are cut). The guests' TCP connections
survive; what the C library's 256 KiB ring cannot hold meanwhile is dropped, oldest
first, and announced with a DROPPED notice. At 2,000 records a second a cut
overflows the ring many times over (a demo record is ~170 bytes on the wire).

Afterwards the guests finish by themselves (umon.count) and print their own counts
on the console. Checked: every record is stored exactly once and in order except
the dropped ones, each run of dropped numbers is covered exactly by a ``# dropped``
notice (tests/numbered.py, drop-aware), and the guest, the log file and ``umonitor
ls`` agree on the number dropped and on the number stored. (A cut may leave more
than one run of dropped numbers: while the backlog drains after it, new records
still push the oldest unsent ones out of the full ring.)
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import free_port, wait_for
from tests.numbered import InstanceCheck, LogChecker, log_path
from umonitor.image.linux import Image

RATE = 2000  # records/s per guest
SECONDS = 90  # of steady logging: boot wait, two cuts and their recoveries fit in it
CUT = 10.0  # seconds without network
NAMES = ("cut-1", "cut-2")
STATS = re.compile(r"demo_app: logged=(\d+) acked=(\d+) dropped=(\d+)")


def umon(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "umonitor", *args], capture_output=True, text=True, timeout=timeout
    )


def ip(*args: str) -> None:
    out = subprocess.run(["ip", *args], capture_output=True, text=True)
    assert out.returncode == 0, (args, out.stderr)


def console(data: Path, name: str) -> str:
    path = log_path(data, name, "console.log")
    return path.read_text(errors="replace") if path.exists() else ""


class Followed:
    """The checkers of both guests' app.log, fed as the files grow."""

    def __init__(self, data: Path) -> None:
        self.checkers = {n: LogChecker(n, log_path(data, n), allow_drops=True) for n in NAMES}

    def stored(self, name: str) -> int:
        checker = self.checkers[name]
        checker.follow()
        return checker.result.records

    def dropped(self, name: str) -> int:
        self.stored(name)
        return self.checkers[name].result.dropped


def cut(do: list[str], undo: list[str]) -> None:
    """``ip *do``, CUT seconds without network, then ``ip *undo`` (also on the way out)."""
    ip(*do)
    try:
        time.sleep(CUT)
    finally:
        ip(*undo)


def test_guests_keep_logging_through_network_cuts(
    tmp_path: Path,
    images: dict[str, Image],
    subnet: tuple[str, str],
    record_property: pytest.RecordProperty,
) -> None:
    bridge, address = subnet
    demo = images["demo"]
    data = tmp_path / "data"
    config = tmp_path / "umonitor.toml"
    config.write_text(f"""
[network]
bridge = "{bridge}"
address = "{address}"
[collector]
port = {free_port()}
[[instance]]
name = "cut"
count = 2
kernel = "{demo.pvh_kernel or demo.kernel}"
initrd = "{demo.initrd}"
args = "umon.rate={RATE} umon.count={RATE * SECONDS}"
""")
    started = umon("up", "-d", "-f", str(config), "--data", str(data), "--accel", "tcg")
    assert started.returncode == 0, started.stderr
    follow = Followed(data)
    try:
        taps = {
            name: lease["tap"]
            for name, lease in json.loads((data / "leases.json").read_text())["leases"].items()
        }
        assert set(taps) == set(NAMES)
        for name in NAMES:
            wait_for(lambda n=name: follow.stored(n) >= RATE, timeout=300, what=f"{name} logging")

        # (i) One guest's TAP device down: that guest is cut off, the other is not.
        before = {n: follow.stored(n) for n in NAMES}
        cut(["link", "set", taps["cut-1"], "down"], ["link", "set", taps["cut-1"], "up"])
        during_1 = {n: follow.stored(n) - before[n] for n in NAMES}
        assert during_1["cut-1"] < RATE // 2, during_1  # only what was already in flight
        assert during_1["cut-2"] > RATE, during_1  # the control guest went on
        resumed = follow.stored("cut-1")
        wait_for(lambda: follow.stored("cut-1") > resumed + RATE, timeout=120,
                 what="cut-1 delivering again")  # fmt: skip
        dropped_1 = follow.dropped("cut-1")

        # (ii) The bridge loses the host's address: both guests are cut off.
        before = {n: follow.stored(n) for n in NAMES}
        cut(["addr", "del", address, "dev", bridge], ["addr", "add", address, "dev", bridge])
        during_2 = {n: follow.stored(n) - before[n] for n in NAMES}
        assert all(v < RATE // 2 for v in during_2.values()), during_2
        # The guests were still logging when the network came back.
        assert not any(STATS.search(console(data, n)) for n in NAMES)
        resumed_2 = {n: follow.stored(n) for n in NAMES}
        for name in NAMES:
            wait_for(lambda n=name: follow.stored(n) > resumed_2[n] + RATE, timeout=120,
                     what=f"{name} delivering again")  # fmt: skip

        # The guests finish by themselves and print their own counts.
        for name in NAMES:
            wait_for(lambda n=name: STATS.search(console(data, n)) is not None, timeout=300,
                     what=f"{name} finishing")  # fmt: skip
        ls = umon("ls", "-o", "json", "--data", str(data), timeout=120)
        assert ls.returncode == 0, ls.stderr
    finally:
        down = umon("down", "--data", str(data))
        assert down.returncode == 0, down.stderr

    rows = {r["name"]: r for r in map(json.loads, ls.stdout.splitlines()) if "name" in r}
    checks: dict[str, InstanceCheck] = {}
    figures = {"cut_1_tap_down_dropped": dropped_1}
    for name, cuts in (("cut-1", 2), ("cut-2", 1)):
        match = STATS.search(console(data, name))
        assert match is not None
        logged, acked, dropped = map(int, match.groups())
        follow.stored(name)
        check = checks[name] = follow.checkers[name].finish(logged)
        (boot,) = check.boots.values()
        assert check.ok, check.summary()
        assert check.records == acked == logged - dropped, (check.summary(), match.group())
        assert check.dropped == dropped == rows[name]["dropped"], (check.summary(), rows[name])
        figures |= {
            f"{name}_cuts": cuts,
            f"{name}_logged": logged,
            f"{name}_stored": check.records,
            f"{name}_dropped": dropped,
            f"{name}_drop_runs": boot.gaps,
            f"{name}_connections": boot.connections,
        }
    figures["cut_2_address_removed_dropped"] = (
        checks["cut-1"].dropped - dropped_1 + checks["cut-2"].dropped
    )
    for key, value in figures.items():
        record_property(key, value)
    print("\n" + "\n".join(c.summary() for c in checks.values()) + f"\n{figures}")
