"""Real unikernels under `umonitor up`: Unikraft, Nanos and rumprun guests built from
source (guests/), on the bridge, with the default accelerator (no --accel).

Each kind runs the demo app linked with the C library (records at several levels with
fields, the application's own arguments printed on the console), the crash app (a NULL
write in a nested call: detected, reported with the console tail, restarted), and a
guest that logs 100 records and then spins for ever (every record still arrives). The
rumprun fleet also runs a guest whose main() returns (QEMU is stopped on "halted" and
the run is an exit, not a crash) and the 2018-API guest, which listens: the collector dials it once
it has its lease, and each of its messages is one record with its level.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.integration.conftest import wait_for
from tests.vm.test_fleet import fleet_config, ps, records, umon

LEVELS = {"debug", "info", "notice", "warning", "err"}
APP_WORDS = "hello 'big world'"
APP_ARGS = f"umon.rate=20 {APP_WORDS}"
# The 2018 API's MESSAGE, WARNING, FAILT and RETURN, as the seed guest cycles them.
SEED_LEVELS = [("info", "log"), ("warning", "log"), ("err", "log"), ("notice", "exit")]


# A guest that crashes is restarted quickly, so that a test sees the restart.
CRASHING = {"restart": "on-failure", "backoff": 1, "backoff_max": 2}


def instance(name: str, flavor: str, kernel: Path, **keys: str | int) -> str:
    """One [[instance]] table of umonitor.toml."""
    lines = [f'name = "{name}"', f'flavor = "{flavor}"', f'kernel = "{kernel}"']
    lines += [f"{key} = {json.dumps(value)}" for key, value in keys.items()]
    return "\n[[instance]]\n" + "\n".join(lines) + "\n"


def up(config: Path, data: Path) -> None:
    started = umon("up", "-d", "-f", str(config), "--data", str(data))
    fleet_log = data / "run" / "fleet.log"
    log = fleet_log.read_text() if fleet_log.exists() else ""
    assert started.returncode == 0, started.stderr + log


def down(data: Path) -> None:
    out = umon("down", "--data", str(data), timeout=120)
    assert out.returncode == 0, out.stderr


def app_records(data: Path, name: str) -> list[dict[str, Any]]:
    return records(data, name, "app")


def check_logging_guest(data: Path, name: str) -> None:
    """The demo app's records: stored under the instance, several levels, with fields."""
    wait_for(
        lambda: {r["severity"] for r in app_records(data, name)} >= LEVELS,
        timeout=300,
        what=f"records of every level from {name}",
    )
    rows = app_records(data, name)
    assert any(r["fields"] for r in rows), rows[:5]
    seqs = [r["seq"] for r in rows]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    console = [r["message"] for r in records(data, name, "console")]
    assert "app args: hello big world" in console, console[-40:]


def check_runtime_control(data: Path, name: str) -> None:
    """'umonitor level' reaches the library in the guest, which answers and obeys; ping."""
    changed = umon("level", name, "warning", "--data", str(data), timeout=60)
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.startswith(f"{name}: level warning (was "), changed.stdout
    assert "does not confirm" not in changed.stdout
    assert ps(data)[name]["level"] == "warning"
    # Records numbered before the guest took the change may still be on their way (the
    # guest sends its LEVEL answer ahead of queued records); at 20 records/s a handful
    # at most, so everything after the next INFLIGHT records must be warning or worse.
    inflight = 8
    last = max(r["seq"] for r in app_records(data, name)) + inflight
    wait_for(
        lambda: len([r for r in app_records(data, name) if r["seq"] > last]) >= 5,
        timeout=300,
        what=f"records of {name} after the level change",
    )
    later = {r["severity"] for r in app_records(data, name) if r["seq"] > last}
    assert later <= {"warning", "err", "crit", "alert", "emerg"}, later
    pinged = umon("ping", name, "--data", str(data), timeout=60)
    assert pinged.returncode == 0 and "round trip" in pinged.stdout, pinged.stderr


def check_spinning_guest(data: Path, name: str) -> None:
    """100 records, then a busy loop for ever: all 100 reach the collector."""
    wait_for(lambda: len(app_records(data, name)) >= 100, timeout=300, what=f"{name}'s records")
    assert [r["seq"] for r in app_records(data, name)] == list(range(1, 101))
    assert ps(data)[name]["state"] == "running"


def check_crashing_guest(data: Path, name: str, marker: str) -> dict[str, Any]:
    """Detected, reported with the console tail (which holds ``marker``), restarted."""
    wait_for(lambda: ps(data)[name]["restarts"] >= 1, timeout=300, what=f"{name} restarted")
    last = ps(data)[name]["last_exit"]
    assert last["outcome"] == "crashed", last
    reports = sorted((data / "instances" / name / "crashes").glob("crash-*.json"))
    assert reports, f"no crash report for {name}"
    report = json.loads(reports[0].read_text())
    assert any(marker in line for line in report["console"]), report["console"]
    assert report["app"], "the records before the crash are in the report"
    crash_records = [r for r in records(data, name, "console") if r["kind"] == "crash"]
    assert any("instance crashed" in r["message"] for r in crash_records)
    return report


def test_unikraft(tmp_path: Path, unikraft: Path, subnet: tuple[str, str]) -> None:
    data = tmp_path / "data"
    config = fleet_config(
        tmp_path / "umonitor.toml",
        subnet,
        instance("uk-log", "unikraft", unikraft / "log.kernel", memory="64M", app_args=APP_ARGS)
        + instance("uk-crash", "unikraft", unikraft / "crash.kernel", memory="64M", **CRASHING)
        + instance("uk-spin", "unikraft", unikraft / "spin.kernel", memory="64M"),
    )
    up(config, data)
    try:
        check_logging_guest(data, "uk-log")
        # Unikraft's own console lines keep their severity and library.
        console = records(data, "uk-log", "console")
        assert any(r["severity"] == "info" and dict(r["fields"]).get("lib") for r in console)
        # The leased address reached lwIP through netdev.ip.
        address = ps(data)["uk-log"]["address"]
        assert any(address in r["message"] for r in console), "netdev.ip not on the console"
        check_runtime_control(data, "uk-log")
        check_spinning_guest(data, "uk-spin")
        check_crashing_guest(data, "uk-crash", "Crashing")
    finally:
        down(data)


def test_nanos(tmp_path: Path, nanos: Path, subnet: tuple[str, str]) -> None:
    data = tmp_path / "data"
    config = fleet_config(
        tmp_path / "umonitor.toml",
        subnet,
        instance("nv-log", "nanos", nanos / "log", nanos=str(nanos), app_args=APP_ARGS)
        + instance("nv-crash", "nanos", nanos / "crash", nanos=str(nanos), **CRASHING),
    )
    up(config, data)
    try:
        check_logging_guest(data, "nv-log")
        # Nanos' syslog klib sends the console lines too: filed under the same instance.
        wait_for(
            lambda: any(
                "app args: hello big world" in r["message"]
                for r in records(data, "nv-log", "syslog")
            ),
            timeout=120,
            what="the console line through Nanos' syslog klib",
        )
        listed = umon("ls", "-o", "json", "--data", str(data), timeout=60)
        names = {json.loads(line)["name"] for line in listed.stdout.splitlines()}
        assert names == {"nv-log", "nv-crash"}, names  # nothing filed under an address
        check_crashing_guest(data, "nv-crash", "Page fault")
    finally:
        down(data)


def test_rumprun(tmp_path: Path, rumprun: Path, subnet: tuple[str, str]) -> None:
    data = tmp_path / "data"
    memory = {"memory": "128M"}
    config = fleet_config(
        tmp_path / "umonitor.toml",
        subnet,
        instance("rr-log", "rumprun", rumprun / "log.bin", **memory, app_args=APP_ARGS)
        + instance(
            "rr-exit",
            "rumprun",
            rumprun / "log.bin",
            **memory,
            app_args="umon.count=5 umon.rate=20",
        )
        + instance("rr-crash", "rumprun", rumprun / "crash.bin", **memory, **CRASHING)
        + instance("rr-spin", "rumprun", rumprun / "spin.bin", **memory)
        + instance(
            "rr-seed",
            "rumprun",
            rumprun / "seed2018.bin",
            **memory,
            listen=2333,
            app_args="2333 16 50",
        ),
    )
    up(config, data)
    try:
        check_logging_guest(data, "rr-log")
        # main() returns: rumprun halts and spins; QEMU is stopped, the exit classified.
        wait_for(lambda: ps(data)["rr-exit"]["state"] == "exited", timeout=300, what="rr-exit")
        last = ps(data)["rr-exit"]["last_exit"]
        assert last["reason"] == 'main() of "app" returned 0', last
        # The 2018 guest: dialled at its leased address, one record per message.
        wait_for(lambda: len(app_records(data, "rr-seed")) >= 16, timeout=300, what="rr-seed")
        seed = app_records(data, "rr-seed")
        assert [r["message"] for r in seed] == [f"seed message {i}" for i in range(1, 17)]
        assert [(r["severity"], r["kind"]) for r in seed] == [SEED_LEVELS[i % 4] for i in range(16)]
        check_spinning_guest(data, "rr-spin")
        check_crashing_guest(data, "rr-crash", "FATAL TRAP")
    finally:
        down(data)
