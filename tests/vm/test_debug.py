"""`umonitor debug` on a real Unikraft guest of a fleet (docs/debugging.md).

The demo guest starts halted (``paused = true``: QEMU ``-S``), with the default
accelerator. ``ping`` says it is paused instead of waiting; ``umonitor debug NAME
--batch`` attaches gdb with the guest's symbols (``log.dbg`` beside the kernel, the
default rule), sets a breakpoint on the application's ``steady_record``, continues
from the first instruction, hits it, prints the argument, holds the guest stopped for
three times the collector's idle limit, and detaches. Meanwhile ``ps`` shows the
instance ``debugging``. Afterwards the guest goes on logging on the same TCP connection:
the collector held its limits while the VM was stopped. A second paused instance is
let go with ``umonitor cont``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

from tests.integration.conftest import wait_for
from tests.vm.test_fleet import fleet_config, ps, umon
from tests.vm.test_unikernels import app_records, down, instance, up

IDLE = 4  # [collector] idle_timeout: a stopped guest that were not held would be cut
STOP_AT = 40  # the breakpoint's i: by then the guest has connected (20 records/s)
SCRIPT = f"""\
break steady_record if i == {STOP_AT}
continue
print i
bt 2
shell sleep {3 * IDLE}
delete
"""


def connection_of(data: Path, name: str) -> str | None:
    """The guest's connection as the collector sees it (ip:port), if connected."""
    out = umon("ls", "-o", "json", "--data", str(data), timeout=60)
    for line in out.stdout.splitlines():
        if f'"name": "{name}"' in line and '"connected": true' in line:
            found = re.search(r'"address": "([^"]+)"', line)
            return found.group(1) if found else None
    return None


def idle_cuts(data: Path) -> int:
    out = umon("ls", "-o", "json", "--data", str(data), timeout=60)
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    return sum(int(r["collector"].get("idle", 0)) for r in rows if "collector" in r)


def test_debug_batch_on_a_paused_unikraft_guest(
    tmp_path: Path, unikraft: Path, subnet: tuple[str, str]
) -> None:
    data = tmp_path / "data"
    args = {"memory": "64M", "app_args": "umon.rate=20", "paused": True}
    config = fleet_config(
        tmp_path / "umonitor.toml",
        subnet,
        instance("uk-dbg", "unikraft", unikraft / "log.kernel", **args)
        + instance("uk-cont", "unikraft", unikraft / "log.kernel", **args),
    )
    config.write_text(
        config.read_text().replace("[collector]\n", f"[collector]\nidle_timeout = {IDLE}\n")
    )
    up(config, data)
    try:
        wait_for(lambda: ps(data)["uk-dbg"]["state"] == "paused", timeout=60, what="paused")
        row = ps(data)["uk-dbg"]
        assert row["vm_status"] == "prelaunch", row
        pinged = umon("ping", "uk-dbg", "--data", str(data), timeout=60)
        assert pinged.returncode != 0 and pinged.stderr.count("\n") == 1, pinged.stderr
        assert "uk-dbg is paused" in pinged.stderr and "umonitor cont uk-dbg" in pinged.stderr

        printed = umon("debug", "uk-dbg", "--print-command", "--data", str(data))
        assert printed.returncode == 0, printed.stderr
        assert f"symbol-file {unikraft / 'log.dbg'}" in printed.stdout, printed.stdout
        assert "target remote " + str(data / "run" / "uk-dbg" / "gdb.sock") in printed.stdout

        # The other paused instance runs without a debugger, then is stopped (TCG: one
        # guest at a time keeps this test's timing to the debugged one).
        went = umon("cont", "uk-cont", "--data", str(data))
        assert went.returncode == 0 and went.stdout == "uk-cont: running (was prelaunch)\n"
        wait_for(lambda: len(app_records(data, "uk-cont")) >= 5, timeout=300, what="uk-cont")
        assert umon("stop", "uk-cont", "--data", str(data)).returncode == 0
        # its connection, left without a peer, is cut by the idle limit: counted here
        wait_for(lambda: connection_of(data, "uk-cont") is None, timeout=60, what="uk-cont cut")
        idle_before = idle_cuts(data)

        script = tmp_path / "break.gdb"
        script.write_text(SCRIPT)
        gdb = subprocess.Popen(
            [sys.executable, "-m", "umonitor", "debug", "uk-dbg", "--batch", str(script),
             "--data", str(data)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        seen: set[str] = set()
        address = None
        while gdb.poll() is None:  # what ps and ls show while gdb holds the guest
            row = ps(data)["uk-dbg"]
            seen.add(f"{row['state']}/{row['vm_status']}")
            address = address or connection_of(data, "uk-dbg")
            time.sleep(0.5)
        out, err = gdb.communicate()
        assert gdb.returncode == 0, out + err
        assert f"Breakpoint 1, steady_record (i={STOP_AT})" in out, out
        assert "demo_app.c" in out and f"$1 = {STOP_AT}" in out, out
        assert re.search(r"^#1 +(0x[0-9a-f]+ in )?main \(", out, re.M), out
        assert "detached" in out, out
        assert "debugging/debug" in seen, seen  # stopped at the breakpoint, in gdb
        assert address is not None, "the guest never connected before the breakpoint"

        # It goes on logging, on the same connection: not cut while it was stopped.
        wait_for(
            lambda: max((r["seq"] for r in app_records(data, "uk-dbg")), default=0) > STOP_AT + 40,
            timeout=300,
            what="records after the debugger detached",
        )
        assert connection_of(data, "uk-dbg") == address
        assert idle_cuts(data) == idle_before
        assert ps(data)["uk-dbg"]["state"] == "running"
    finally:
        down(data)
