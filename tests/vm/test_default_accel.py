"""The path a user takes: `umonitor up` with no --accel, on this very host.

Whatever this host's KVM does (works, aborts on the host CPU model, or crawls), the
guests boot and their records arrive; if KVM is not used, `up` and `ps` say so in
one line and the verdict is kept with its reason. The instances' tokens, printed by
the guest kernel on its console, are in no file of the data directory but
instance.json; the data directory is private.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

from tests.integration.conftest import wait_for
from tests.vm.test_fleet import ps, records, umon, write_config
from umonitor.image.linux import Image


def test_up_with_the_default_accelerator(
    tmp_path: Path, images: dict[str, Image], subnet: tuple[str, str]
) -> None:
    bridge, address = subnet
    data = tmp_path / "data"
    config = write_config(tmp_path / "umonitor.toml", images, bridge, address)
    started = umon("up", "-d", "-f", str(config), "--data", str(data))
    fleet_log = data / "run" / "fleet.log"
    assert started.returncode == 0, started.stderr + fleet_log.read_text()
    try:
        for name in ("vm-1", "vm-2"):
            wait_for(lambda n=name: len(records(data, n, "app")) >= 5, timeout=300,
                     what=f"app records from {name} with the default accelerator")  # fmt: skip
        rows = ps(data)
        assert {rows[n]["state"] for n in ("vm-1", "vm-2")} == {"running"}
        verdict_file = data / "kvm.json"
        shown = umon("ps", "--data", str(data), timeout=30)
        if verdict_file.exists():
            # KVM is not usable here: said once by `up`, once by `ps`, kept with why.
            verdict = json.loads(verdict_file.read_text())
            assert verdict["kvm"] == "unusable" and verdict["reason"]
            assert started.stderr.count("KVM is not usable on this host") == 1, started.stderr
            assert verdict["reason"] in started.stderr
            assert shown.stderr.count("KVM is not usable on this host") == 1
            assert {rows[n]["accel"] for n in ("vm-1", "vm-2")} == {"tcg"}
            notes = [
                r
                for n in ("vm-1", "vm-2", "crashy")
                for r in records(data, n, "console")
                if "KVM is not usable on this host" in r["message"]
            ]
            assert len(notes) == 1 and notes[0]["severity"] == "warning"
        else:
            assert {rows[n]["accel"] for n in ("vm-1", "vm-2")} == {"kvm"}
            assert "KVM" not in started.stderr and "KVM" not in shown.stderr

        # The crash guest crashes and is reported: its report holds no token either.
        wait_for(lambda: ps(data)["crashy"]["restarts"] >= 1, timeout=300, what="a restart")
        assert list((data / "instances" / "crashy" / "crashes").glob("crash-*.json"))

        # Linux printed its command line, token included; what was stored is redacted.
        console = records(data, "vm-1", "console")
        command_lines = [r["message"] for r in console if "umon.token=" in r["message"]]
        assert command_lines and all("umon.token=<redacted>" in m for m in command_lines)
        tokens = {
            n: json.loads((data / "run" / n / "instance.json").read_text())["token"]
            for n in ("vm-1", "vm-2", "crashy")
        }
        for name, token in tokens.items():
            assert len(token) == 32
            holders = [
                p.relative_to(data)
                for p in data.rglob("*")
                if p.is_file() and token.encode() in p.read_bytes()
            ]
            assert holders == [Path("run") / name / "instance.json"], (name, holders)
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        for name in tokens:
            assert stat.S_IMODE((data / "run" / name / "instance.json").stat().st_mode) == 0o600
    finally:
        down = umon("down", "--data", str(data))
        assert down.returncode == 0, down.stderr
