"""Real unikernels beside the Linux guest: boot to first record, log-call cost, delivery.

For each kind (the Linux demo image, Unikraft, Nanos, rumprun) and each run, brings up
a fleet of two instances with the default accelerator on a private bridge: the demo
app (records at --rate per second) and the spin guest (100 records, then a busy loop
that never blocks). It reports, per kind:

- boot to first record: from QEMU's start (the supervisor's started_ns) to the demo
  app's first record in app.log, i.e. stored by the collector;
- what the spin guest's log calls cost inside the guest (its own monotonic clock,
  printed on the console): the first call after init, the mean of the other 99, the
  slowest;
- how many of the spin guest's 100 records were stored once it spins;
- the image's size (kernel, plus initrd for Linux).

Needs root and the built guests (python guests/build.py unikraft nanos rumprun).

    python bench/unikernels.py --runs 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from umonitor.image.linux import build_image

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")
KINDS = ("linux", "unikraft", "nanos", "rumprun")
SPIN = re.compile(
    r"spin: (\d+) records logged in \d+ ns: first call (\d+) ns, then (\d+) ns/call "
    r"\(max (\d+) ns\)"
)


def umon(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "umonitor", *args], capture_output=True,
                          text=True, timeout=600)  # fmt: skip


def built(kind: str) -> Path:
    out = subprocess.run([sys.executable, str(ROOT / "guests" / "build.py"), kind],
                         capture_output=True, text=True)  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(out.stderr.strip())
    return Path(out.stdout.split()[-1])


def instances(kind: str, work: Path, rate: int) -> tuple[str, list[Path]]:
    """The two [[instance]] tables for ``kind`` and the files its images are made of."""
    if kind == "linux":
        log = build_image([ROOT / "src/umonitor/guest/demo/demo_app.c"], work / "linux-log")
        spin = build_image([ROOT / "tests/c/spin_guest.c"], work / "linux-spin")
        return (
            f"""
[[instance]]
name = "log"
kernel = "{log.pvh_kernel or log.kernel}"
initrd = "{log.initrd}"
memory = "128M"
args = "umon.rate={rate}"
[[instance]]
name = "spin"
kernel = "{spin.pvh_kernel or spin.kernel}"
initrd = "{spin.initrd}"
memory = "128M"
""",
            [log.pvh_kernel or log.kernel, log.initrd],
        )
    out = built(kind)
    names = {"unikraft": ("log.kernel", "spin.kernel"), "nanos": ("log", "spin"),
             "rumprun": ("log.bin", "spin.bin")}[kind]  # fmt: skip
    extra = f'nanos = "{out}"' if kind == "nanos" else 'memory = "128M"'
    tables = "".join(
        f"""
[[instance]]
name = "{name}"
flavor = "{kind}"
kernel = "{out / image}"
{extra}
{args}
"""
        for name, image, args in (
            ("log", names[0], f'app_args = "umon.rate={rate}"'),
            ("spin", names[1], ""),
        )
    )
    files = [out / names[0]]
    if kind == "nanos":
        files += [out / "kernel.img"]
    return tables, files


def wait(what: str, probe: Callable[[], T | None], timeout: float = 300) -> T:
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = probe()
        if found is not None:
            return found
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def app_lines(data: Path, name: str) -> list[str]:
    path = data / "instances" / name / "app.log"
    if not path.exists():
        return []
    return [line for line in path.read_text().splitlines() if line and not line.startswith("#")]


def one_run(kind: str, tables: str, work: Path, run: int) -> dict[str, float]:
    data = work / f"data-{kind}-{run}"
    config = work / f"{kind}.toml"
    config.write_text(f"""
[network]
bridge = "umbench1"
address = "10.253.9.1/24"
[collector]
port = 23121
[syslog]
port = 23122
{tables}""")
    out = umon("up", "-d", "-f", str(config), "--data", str(data))
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    try:
        started = json.loads((data / "run" / "log" / "instance.json").read_text())["started_ns"]

        def first_record() -> float | None:
            return time.time() - started / 1e9 if app_lines(data, "log") else None

        boot = wait(f"{kind}'s first record", first_record)
        console = data / "instances" / "spin" / "console.log"

        def spin_line() -> re.Match[str] | None:
            return SPIN.search(console.read_text(errors="replace")) if console.exists() else None

        found = wait(f"{kind}'s spin line", spin_line)
        count = int(found[1])

        def delivered() -> float | None:
            return 1.0 if len(app_lines(data, "spin")) >= count else None

        with contextlib.suppress(SystemExit):  # the count below says how many came
            wait(f"{kind}'s spin records", delivered, timeout=30)
        return {
            "boot": boot,
            "first_us": int(found[2]) / 1000,
            "mean_us": int(found[3]) / 1000,
            "max_us": int(found[4]) / 1000,
            "delivered": len(app_lines(data, "spin")),
            "count": count,
        }
    finally:
        umon("down", "--data", str(data))


def spread(values: list[float], unit: str, digits: int = 2) -> str:
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{mid:.{digits}f} {unit} ({low:.{digits}f}-{high:.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=int, default=20, help="the demo app's records/s")
    parser.add_argument("--kinds", default=",".join(KINDS))
    args = parser.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    with tempfile.TemporaryDirectory(prefix="umon-uk-", ignore_cleanup_errors=True) as tmp:
        work = Path(tmp)
        results: dict[str, list[dict[str, float]]] = {}
        sizes: dict[str, int] = {}
        for kind in kinds:
            tables, files = instances(kind, work, args.rate)
            sizes[kind] = sum(f.stat().st_size for f in files)
            results[kind] = [one_run(kind, tables, work, run) for run in range(args.runs)]
    print(f"unikernels: {args.runs} runs each, QEMU with the default accelerator, TAP bridge")
    for kind in kinds:
        rows = results[kind]
        delivered = f"{min(int(r['delivered']) for r in rows)}/{int(rows[0]['count'])}"
        print(f"  {kind:9} image {sizes[kind] / 2**20:5.1f} MiB | boot to first record "
              f"{spread([r['boot'] for r in rows], 's')} | log call: first "
              f"{spread([r['first_us'] for r in rows], 'us', 0)}, then "
              f"{spread([r['mean_us'] for r in rows], 'us', 1)}/call, max "
              f"{spread([r['max_us'] for r in rows], 'us', 0)} | spin guest stored "
              f"{delivered} (worst run)")  # fmt: skip


if __name__ == "__main__":
    main()
