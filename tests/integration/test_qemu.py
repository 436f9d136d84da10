"""Real QEMU (TCG): the accelerator probe, our command line, console capture, QMP."""

from __future__ import annotations

import asyncio
import ipaddress
import subprocess
import time
from pathlib import Path

import pytest

from umonitor.fleet.flavors import GuestNet, boot_spec
from umonitor.fleet.qemu import (
    CONSOLE_RAW,
    PID_FILE,
    PROBE_SECTOR,
    QMP_SOCKET,
    LaunchSpec,
    accel_works,
    find_qemu,
    probe_accel,
    qemu_command,
)
from umonitor.fleet.qmp import QmpClient, QmpError


def test_tcg_probe_boots_a_real_guest() -> None:
    find_qemu()
    assert accel_works("tcg")


def test_auto_picks_a_working_accelerator() -> None:
    accel = probe_accel("auto")
    assert accel in ("kvm", "tcg")
    assert accel_works(accel)


def test_our_command_line_boots_and_captures_the_console(tmp_path: Path) -> None:
    """Boot the probe sector as a disk image through qemu_command; nobody reads the
    console socket, yet every byte lands in console.raw; QMP stops the guest."""
    disk = tmp_path / "probe.img"
    disk.write_bytes(PROBE_SECTOR + bytes((1 << 20) - len(PROBE_SECTOR)))  # SeaBIOS wants >1 sector
    net = GuestNet("probe", ipaddress.IPv4Interface("10.77.0.9/24"),
                   ipaddress.IPv4Address("10.77.0.1"))  # fmt: skip
    spec = LaunchSpec("probe", disk, tmp_path, boot_spec("nanos", net), memory_mib=32)
    proc = subprocess.Popen(qemu_command(spec), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        raw = tmp_path / CONSOLE_RAW
        while time.monotonic() < deadline:
            if raw.exists() and raw.read_bytes():
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        else:
            raise AssertionError(f"no console output: {raw.read_bytes() if raw.exists() else ''!r}")
        time.sleep(0.5)
        assert raw.read_bytes() == b"K"  # the guest's only byte, kept with nobody connected
        assert int((tmp_path / PID_FILE).read_text()) == proc.pid

        async def stop() -> list[str]:
            qmp = await QmpClient.connect(tmp_path / QMP_SOCKET)
            status = await qmp.execute("query-status")
            assert status["running"] is True
            with pytest.raises(QmpError, match="refused"):
                await qmp.execute("no-such-command")
            await qmp.execute("quit")
            names = []
            while (event := await qmp.next_event(timeout=10)) is not None:
                names.append(event.name)
            await qmp.close()
            return names

        events = asyncio.run(stop())
        assert "SHUTDOWN" in events
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_qmp_on_a_missing_socket_is_a_clear_error(tmp_path: Path) -> None:
    async def attempt() -> None:
        await QmpClient.connect(tmp_path / "none.sock", timeout=1)

    with pytest.raises(QmpError, match="cannot talk QMP"):
        asyncio.run(attempt())
