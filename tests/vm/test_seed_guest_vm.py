"""The 2018 guest, unchanged, in a real QEMU guest on the fleet's bridge.

The guest is built from the original API only (tests/c/seed_guest.c against
umonitor_compat.h, with the 2018 wire format: a level byte and the text, nothing
between messages). It listens on TCP 2333 inside the VM, as the original did; a
collector on the host dials it at its leased address and stores one record per
message, with its level.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.integration.conftest import free_port, wait_for
from tests.vm.conftest import ROOT
from tests.vm.test_fleet import fleet_config, ps, umon
from umonitor.image.linux import build_image

LEVELS = [("info", "log"), ("warning", "log"), ("err", "log"), ("notice", "exit")]


def test_the_2018_guest_in_qemu_gives_one_record_per_message(
    tmp_path: Path, subnet: tuple[str, str]
) -> None:
    image = build_image(
        [ROOT / "tests" / "c" / "seed_guest.c", ROOT / "tests" / "c" / "compat_wire_2018.c"],
        tmp_path / "seed-image",
    )
    data, dialer_data = tmp_path / "data", tmp_path / "dialer"
    config = fleet_config(tmp_path / "umonitor.toml", subnet, f"""
[[instance]]
name = "seed"
kernel = "{image.pvh_kernel or image.kernel}"
initrd = "{image.initrd}"
args = "umon.count=16 umon.gap_ms=40"
""")  # fmt: skip
    started = umon("up", "-d", "-f", str(config), "--data", str(data))
    assert started.returncode == 0, started.stderr
    dialer = None
    try:
        guest = ps(data)["seed"]["address"]
        dialer = subprocess.Popen(
            [sys.executable, "-m", "umonitor", "serve", "--data", str(dialer_data),
             "--listen", f"127.0.0.1:{free_port()}", "--no-udp",
             "--dial", f"seed={guest}:2333"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip

        def stored() -> list[dict[str, str]]:
            out = umon("logs", "seed", "-o", "json", "--data", str(dialer_data), timeout=60)
            return [json.loads(x) for x in out.stdout.splitlines()] if out.returncode == 0 else []

        wait_for(lambda: len(stored()) >= 16, timeout=300, what="16 records from the guest")
        wait_for(lambda: ps(data)["seed"]["state"] == "exited", timeout=60, what="the app to end")
        rows = stored()
        assert [r["message"] for r in rows] == [f"seed message {i}" for i in range(1, 17)]
        assert [(r["severity"], r["kind"]) for r in rows] == [LEVELS[i % 4] for i in range(16)]
    finally:
        if dialer is not None:
            dialer.terminate()
            _, err = dialer.communicate(timeout=30)
            assert dialer.returncode == 0, err
        down = umon("down", "--data", str(data))
        assert down.returncode == 0, down.stderr
