"""Fleet benchmark: N real guests (QEMU, TCG, TAP) each logging R records/s.

Builds the demo image, brings a fleet up on a private bridge, and reports per guest
the time from QEMU's start to its first stored app record, then samples the fleet
process (collector + supervisor; the indexer is reported apart) for CPU and memory
while every guest logs at its rate. Needs root.

    python bench/fleet.py --guests 10 --rate 1000 --seconds 30
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from procstat import status_kib

from umonitor.image.linux import build_image

ROOT = Path(__file__).resolve().parents[1]
HZ = os.sysconf("SC_CLK_TCK")


def umon(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "umonitor", *args], capture_output=True,
                          text=True, timeout=600)  # fmt: skip


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def record_lines(path: Path) -> int:
    with open(path, "rb") as src:
        return sum(1 for line in src if not line.startswith(b"#"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guests", type=int, default=10)
    parser.add_argument("--rate", type=int, default=1000, help="records/s per guest")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured interval")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="umon-fleet-", ignore_cleanup_errors=True) as tmp:
        work = Path(tmp)
        image = build_image([ROOT / "src/umonitor/guest/demo/demo_app.c"], work / "image")
        data = work / "data"
        config = work / "umonitor.toml"
        config.write_text(f"""
[network]
bridge = "umbench0"
address = "10.253.7.1/24"
[collector]
port = 23111
[[instance]]
name = "g"
count = {args.guests}
kernel = "{image.pvh_kernel or image.kernel}"
initrd = "{image.initrd}"
memory = "128M"
args = "umon.rate={args.rate}"
""")
        out = umon("up", "-d", "-f", str(config), "--data", str(data), "--accel", "tcg")
        if out.returncode != 0:
            raise SystemExit(out.stderr)
        try:
            found = subprocess.run(
                ["pgrep", "-f", f"umonitor up -d -f {config}"], capture_output=True, text=True
            )
            daemon = int(found.stdout.split()[0])
            names = [f"g-{i}" for i in range(1, args.guests + 1)] if args.guests > 1 else ["g"]
            first: dict[str, float] = {}
            deadline = time.time() + 600
            while len(first) < len(names) and time.time() < deadline:
                time.sleep(0.25)
                for name in names:
                    path = data / "instances" / name / "app.log"
                    if name in first or not path.exists():
                        continue
                    if any(not x.startswith("#") for x in path.read_text().splitlines()):
                        saved = json.loads((data / "run" / name / "instance.json").read_text())
                        first[name] = time.time() - saved["started_ns"] / 1e9
            boot = sorted(first.values())
            # steady state: every guest is logging
            time.sleep(5)
            cpu0, t0 = cpu_seconds(daemon), time.time()
            db = sqlite3.connect(data / "index.sqlite")
            peak = 0.0
            lines0 = sum(record_lines(data / "instances" / n / "app.log") for n in names)
            while time.time() - t0 < args.seconds:
                time.sleep(1)
                peak = max(peak, status_kib(daemon, "VmRSS") / 1024)
            cpu1, t1 = cpu_seconds(daemon), time.time()
            lines1 = sum(record_lines(data / "instances" / n / "app.log") for n in names)
            time.sleep(1)
            count = db.execute("SELECT count(*) FROM records WHERE origin = 'app'").fetchone()[0]
        finally:
            umon("down", "--data", str(data))
    print(f"fleet: {args.guests} guests (QEMU TCG, TAP), {args.rate} records/s each")
    if boot:
        print(f"  boot to first stored record: min {boot[0]:.1f} s, median "
              f"{statistics.median(boot):.1f} s, max {boot[-1]:.1f} s "
              f"({len(boot)}/{args.guests} guests)")  # fmt: skip
    print(f"  fleet process (collector + supervisor): {100 * (cpu1 - cpu0) / (t1 - t0):.1f}% "
          f"of one core, peak RSS {peak:.1f} MiB")  # fmt: skip
    print(f"  stored {(lines1 - lines0) / (t1 - t0):,.0f} app records/s in all; "
          f"{count} app records indexed")  # fmt: skip


if __name__ == "__main__":
    main()
