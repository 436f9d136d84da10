"""The fleet end to end: real QEMU guests on a real bridge and TAP devices.

Two demo guests and one that crashes on purpose boot concurrently (TCG); each one's
app records and console land in its own directory; the crash is detected, reported
and restarted per policy; a second `up` adopts running guests; stop, rm and down
leave no TAP, bridge, QEMU process or socket behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.integration.conftest import free_port, wait_for
from umonitor.image.linux import Image
from umonitor.procs import process_running


def umon(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "umonitor", *args], capture_output=True, text=True, timeout=timeout
    )


def links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout


def ps(data: Path) -> dict[str, dict[str, Any]]:
    out = umon("ps", "-o", "json", "--data", str(data), timeout=30)
    assert out.returncode == 0, out.stderr
    return {row["name"]: row for row in map(json.loads, out.stdout.splitlines())}


def records(data: Path, name: str, origin: str) -> list[dict[str, Any]]:
    out = umon("logs", name, "-o", "json", "--origin", origin, "--data", str(data), timeout=60)
    if out.returncode != 0:
        return []
    return [json.loads(line) for line in out.stdout.splitlines()]


def nothing_left(data: Path, bridge: str, taps: set[str], before: set[int]) -> None:
    """After ``down``: no bridge, no TAP device, no QEMU process of the fleet (those
    running ``before`` it may stay), no control socket."""
    assert bridge not in links()
    assert not any(f" {tap}:" in links() for tap in taps)
    assert {pid for pid in qemu_pids() if alive(pid)} <= before
    assert not (data / "run" / "control.sock").exists()


def fleet_config(path: Path, subnet: tuple[str, str], instances: str) -> Path:
    """umonitor.toml with the bridge, free collector and syslog ports, and ``instances``."""
    bridge, address = subnet
    path.write_text(f"""
[network]
bridge = "{bridge}"
address = "{address}"
[collector]
port = {free_port()}
[syslog]
port = {free_port()}
{instances}
""")
    return path


def write_config(path: Path, images: dict[str, Image], bridge: str, address: str) -> Path:
    demo, crash = images["demo"], images["crash"]
    return fleet_config(path, (bridge, address), f"""
[[instance]]
name = "vm"
count = 2
kernel = "{demo.pvh_kernel or demo.kernel}"
initrd = "{demo.initrd}"
args = "umon.rate=5"
[[instance]]
name = "crashy"
kernel = "{crash.pvh_kernel or crash.kernel}"
initrd = "{crash.initrd}"
args = "umon.count=5 umon.rate=5"
restart = "on-failure"
backoff = 1
backoff_max = 2
""")  # fmt: skip


alive = process_running  # a zombie of an adopted QEMU waits for PID 1: not running


def qemu_pids() -> set[int]:
    out = subprocess.run(["pgrep", "-f", "umonitor:"], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def test_fleet_end_to_end(
    tmp_path: Path, images: dict[str, Image], subnet: tuple[str, str]
) -> None:
    bridge, address = subnet
    data = tmp_path / "data"
    config = write_config(tmp_path / "umonitor.toml", images, bridge, address)
    before = qemu_pids()
    taps: set[str] = set()
    started = umon("up", "-d", "-f", str(config), "--data", str(data), "--accel", "tcg")
    assert started.returncode == 0, started.stderr + (data / "run" / "fleet.log").read_text()
    try:
        taps = {row["tap"] for row in ps(data).values()}
        assert all(f" {tap}:" in links() for tap in taps)
        # Both demo guests boot concurrently; app records and console in their own dirs.
        for name in ("vm-1", "vm-2"):
            wait_for(lambda n=name: len(records(data, n, "app")) >= 5, timeout=240,
                     what=f"app records from {name}")  # fmt: skip
            app = records(data, name, "app")
            assert {r["instance"] for r in app} == {name}
            assert any(r["severity"] == "err" and "division by zero" in r["message"] for r in app)
            console = records(data, name, "console")
            assert any("umon-init" in r["message"] for r in console)
        assert (data / "instances" / "vm-1" / "console.log").exists()
        # Syslog on the bridge address, filed by the sender's lease: the host itself
        # is no guest, so by hostname here.
        syslog_port = int(config.read_text().split("[syslog]\nport = ")[1].split()[0])
        host = address.split("/")[0]
        sent = subprocess.run(
            ["logger", "--server", host, "--port", str(syslog_port), "--tcp", "--rfc5424",
             "-t", "fleet-test", "syslog on the bridge"], capture_output=True, text=True,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        wait_for(lambda: any(r["message"] == "syslog on the bridge"
                             for n in os.listdir(data / "instances")
                             for r in records(data, n, "syslog")),
                 what="a syslog record through the fleet")  # fmt: skip
        # The crashing guest: detected, reported, restarted per policy.
        wait_for(lambda: ps(data)["crashy"]["restarts"] >= 1, timeout=300, what="a restart")
        reports = list((data / "instances" / "crashy" / "crashes").glob("crash-*.json"))
        assert reports
        report = json.loads(reports[0].read_text())
        assert report["reason"] and report["console"] and report["app"]
        last = ps(data)["crashy"]["last_exit"]
        assert last["outcome"] == "crashed"
        crash_records = [r for r in records(data, "crashy", "console") if r["kind"] == "crash"]
        assert any("instance crashed" in r["message"] for r in crash_records)
        assert bridge in links()

        # The supervisor dies; the guests keep running; a second `up` adopts them.
        running = {n: r["pid"] for n, r in ps(data).items() if n.startswith("vm-")}
        daemon = int(subprocess.run(["pgrep", "-f", f"umonitor up -d -f {config}"],
                                    capture_output=True, text=True).stdout.split()[0])  # fmt: skip
        os.kill(daemon, signal.SIGKILL)
        time.sleep(1)
        assert all(alive(pid) for pid in running.values())
        again = umon("up", "-d", "-f", str(config), "--data", str(data), "--accel", "tcg")
        assert again.returncode == 0, again.stderr
        now = ps(data)
        for name, pid in running.items():
            assert now[name]["pid"] == pid and now[name]["adopted"] is True

        # stop and rm
        assert umon("stop", "vm-1", "--data", str(data)).returncode == 0
        assert ps(data)["vm-1"]["state"] == "stopped"
        assert not alive(running["vm-1"])
        vm2_tap = ps(data)["vm-2"]["tap"]
        assert umon("rm", "vm-2", "--data", str(data)).returncode == 0
        assert "vm-2" not in ps(data)
        assert not alive(running["vm-2"])
        assert f" {vm2_tap}:" not in links()
    finally:
        down = umon("down", "--data", str(data))
        assert down.returncode == 0, down.stderr
    nothing_left(data, bridge, taps, before)
