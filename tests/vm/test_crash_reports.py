"""Crash reports of real crash guests under `umonitor up` (docs/debugging.md).

One crash guest per fleet (Unikraft, rumprun, Nanos, the Linux demo), on the bridge,
with the default accelerator and the default symbols (``crash.dbg`` beside the kernel;
for the Linux demo the image's ``app``). Unikraft, rumprun, Nanos: the supervisor
holds the crashed VM (``-no-shutdown``, or rumprun's halted CPU), captures its state
through the gdbstub (Nanos: from the registers its console printed), then quits QEMU
and restarts the guest; the Linux demo's report comes from the C library's
``umon-crash:`` line. The crash report's backtrace starts ``write_through_null``,
``crash``, ``main`` with lines inside those functions in ``crash_app.c``, and the
crash record that ``logs`` shows carries the same frames. Run each test alone: each
is one QEMU at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.unikernels import crash_app_lines
from tests.vm.test_fleet import fleet_config, records
from tests.vm.test_unikernels import CRASHING, check_crashing_guest, down, instance, up
from umonitor.image.linux import Image

FUNCTIONS = ["write_through_null", "crash", "main"]


def check_report(
    data: Path, name: str, report: dict[str, Any], symbols: Path, source: str = "gdbstub"
) -> None:
    assert report["backtrace_source"] == source, report["capture_errors"]
    assert report["capture_errors"] == []
    frames = report["backtrace"][:3]
    assert [f["function"] for f in frames] == FUNCTIONS, report["backtrace"]
    for frame in frames:
        assert Path(frame["file"]).name == "crash_app.c", frame
        assert frame["line"] in crash_app_lines(frame["function"]), frame
    assert report["fault"]["function"] == "write_through_null"
    assert report["fault"]["pc"] == frames[0]["address"]
    assert report["registers"]["rip"] == frames[0]["address"]
    assert report["symbols"]["path"] == str(symbols) and len(report["symbols"]["sha256"]) == 64
    crash = next(
        r
        for r in records(data, name, "console")
        if r["kind"] == "crash" and r["fields"].get("report") == report["file"]
    )
    shown = crash["fields"]["backtrace"].split("; ")[:3]
    assert [s.split()[0] for s in shown] == FUNCTIONS, crash
    assert all(" crash_app.c:" in s for s in shown), crash
    assert "in write_through_null crash_app.c:" in crash["fields"]["fault"], crash


def run_crash_guest(
    tmp_path: Path,
    subnet: tuple[str, str],
    name: str,
    table: str,
    marker: str,
    symbols: Path,
    source: str = "gdbstub",
    also: Callable[[Path], None] | None = None,
) -> dict[str, Any]:
    data = tmp_path / "data"
    config = fleet_config(tmp_path / "umonitor.toml", subnet, table)
    up(config, data)
    try:
        report = check_crashing_guest(data, name, marker)
        reports = sorted((data / "instances" / name / "crashes").glob("crash-*.json"))
        report["file"] = reports[0].name
        check_report(data, name, report, symbols, source)
        if also is not None:
            also(data)
        return report
    finally:
        down(data)


def check_error_record_stack(data: Path, name: str) -> None:
    """The app's error record before the crash ("about to crash", logged in main())
    carries its call stack, which `logs` symbolizes with the instance's symbols."""
    error = next(r for r in records(data, name, "app") if r["message"].startswith("about to"))
    assert error["severity"] == "err" and "umon.stack" in error["fields"], error
    first = error["stack"][0]
    assert first["function"] == "main", error["stack"]
    assert Path(first["file"]).name == "crash_app.c" and first["line"] in crash_app_lines("main"), (
        first
    )


def test_unikraft_crash_report(tmp_path: Path, unikraft: Path, subnet: tuple[str, str]) -> None:
    kernel = unikraft / "crash.kernel"
    table = instance("uk-crash", "unikraft", kernel, memory="64M", **CRASHING)
    run_crash_guest(
        tmp_path, subnet, "uk-crash", table, "Crashing", unikraft / "crash.dbg",
        also=lambda data: check_error_record_stack(data, "uk-crash"),
    )  # fmt: skip


def test_rumprun_crash_report(tmp_path: Path, rumprun: Path, subnet: tuple[str, str]) -> None:
    kernel = rumprun / "crash.bin"
    table = instance("rr-crash", "rumprun", kernel, memory="128M", **CRASHING)
    run_crash_guest(
        tmp_path, subnet, "rr-crash", table, "FATAL TRAP", rumprun / "crash.dbg",
        also=lambda data: check_error_record_stack(data, "rr-crash"),
    )  # fmt: skip


def test_nanos_crash_report(tmp_path: Path, nanos: Path, subnet: tuple[str, str]) -> None:
    table = instance("nv-crash", "nanos", nanos / "crash", nanos=str(nanos), **CRASHING)
    run_crash_guest(
        tmp_path, subnet, "nv-crash", table, "Page fault", nanos / "crash.dbg",
        also=lambda data: check_error_record_stack(data, "nv-crash"),
    )  # fmt: skip


def test_linux_crash_report(
    tmp_path: Path, images: dict[str, Image], subnet: tuple[str, str]
) -> None:
    """The Linux demo's crash app: its process is gone before the host could look, and
    the gdbstub would show the kernel; the C library's umon-crash: line is the report's
    source, symbolized with the image's unstripped program (``app`` beside the initrd)."""
    image = images["crash"]
    table = instance(
        "lx-crash", "linux", image.pvh_kernel or image.kernel, initrd=str(image.initrd),
        args="umon.count=3 umon.rate=5", **CRASHING,
    )  # fmt: skip
    report = run_crash_guest(
        tmp_path, subnet, "lx-crash", table, "umon-crash: signal 11", image.app,
        "guest-library", also=lambda data: check_error_record_stack(data, "lx-crash"),
    )  # fmt: skip
    assert report["fault"]["reason"] == "segmentation fault"
    assert report["fault"]["address"] == "0x0" and report["fault"]["signal"] == 11
    assert set(report["registers"]) == {"rip", "rsp", "rbp"}
