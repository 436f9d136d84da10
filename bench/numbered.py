"""Delivery benchmark: N real C guests send numbered records; every one is checked.

Builds tests/c/numbered_guest.c with the C guest library, starts ``umonitor serve`` on
a fresh data directory and runs N guests that together log --records numbered
records. Each guest keeps at most --window records unsettled (it waits for ACKs, as
an application pacing itself on its link would; 0 lets it run free, so its ring
overflows and it drops and reports it). With --kill-every S the collector is
SIGKILLed every S seconds while the guests send and started again on the same port
and data directory; the guests notice, reconnect and replay by themselves.

Afterwards every instance's app.log is checked (tests/numbered.py): each number of
each boot stored once and in order, and gaps only where a ``# dropped`` notice
covers them exactly. Prints records/s, seconds, kills survived, the checker's
counts, the guests' own counts, and the collector's peak RSS (VmHWM, the highest of
all its incarnations).

    python bench/numbered.py --guests 4 --records 1000000 [--kill-every 2]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.numbered, when run as bench/numbered.py

from procstat import status_kib  # noqa: E402
from tests.numbered import InstanceCheck, check_all, numbered_message  # noqa: E402

C_LIB = ROOT / "src" / "umonitor" / "guest" / "c"
GUEST_SOURCE = ROOT / "tests" / "c" / "numbered_guest.c"
STATS = re.compile(r"(\w+)=(\d+)")


def build_guest(out: Path) -> Path:
    """numbered_guest compiled as the tests compile it."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise SystemExit("a C compiler is needed: apt-get install gcc")
    target = out / "numbered_guest"
    subprocess.run(
        [cc, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic", f"-I{C_LIB}",
         "-o", str(target), str(GUEST_SOURCE), str(C_LIB / "umonitor.c")],
        check=True,
    )  # fmt: skip
    return target


@dataclass
class Serve:
    """``umonitor serve`` in a subprocess that can be killed and started again."""

    data: Path
    extra: list[str]
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    peak_rss_kib: int = 0
    starts: int = 0
    down_seconds: list[float] = field(default_factory=list)

    def start(self) -> None:
        err_path = self.data.parent / "collector.err"
        seen = err_path.stat().st_size if err_path.exists() else 0
        with open(err_path, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "umonitor", "serve", "--data", str(self.data),
                 "--listen", f"127.0.0.1:{self.port}", "--no-udp", *self.extra],
                stderr=err,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            text = err_path.read_bytes()[seen:].decode("utf-8", "replace")
            found = re.findall(r"tcp://127\.0\.0\.1:(\d+)", text)
            if found:
                self.port = int(found[-1])
                self.starts += 1
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.01)
        self.proc.kill()
        raise SystemExit(f"collector did not start:\n{err_path.read_text()}")

    def _note_rss(self) -> None:
        if self.proc is not None:
            self.peak_rss_kib = max(self.peak_rss_kib, status_kib(self.proc.pid))

    def kill_and_restart(self) -> None:
        assert self.proc is not None
        self._note_rss()
        down = time.monotonic()
        self.proc.kill()
        self.proc.wait()
        self.start()
        self.down_seconds.append(time.monotonic() - down)

    def stop(self) -> int:
        assert self.proc is not None
        self._note_rss()
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=120)


def guest_stats(output: str) -> dict[str, int]:
    """The guest's last line: logged=… acked=… dropped=… sent=… reconnects=…"""
    lines = output.strip().splitlines()
    return {k: int(v) for k, v in STATS.findall(lines[-1])} if lines else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guests", type=int, default=4)
    parser.add_argument("--records", type=int, default=1_000_000, help="in total")
    parser.add_argument("--kill-every", type=float, default=0.0, metavar="S",
                        help="SIGKILL and restart the collector every S seconds")  # fmt: skip
    parser.add_argument("--window", type=int, default=2000,
                        help="records a guest keeps unsettled at most (0: run free)")  # fmt: skip
    parser.add_argument("--rate", type=int, default=0, help="records/s per guest (0: no limit)")
    parser.add_argument("--fsync", default="batch", choices=["always", "batch", "never"])
    parser.add_argument("--no-index", action="store_true", help="collector without indexer")
    parser.add_argument("--keep", type=Path, help="keep the data directory here")
    parser.add_argument("--json", action="store_true", help="print one JSON line as well")
    args = parser.parse_args()
    if args.guests < 1 or args.records < args.guests:
        parser.error("need at least one guest and one record per guest")

    counts = [args.records // args.guests + (i < args.records % args.guests)
              for i in range(args.guests)]  # fmt: skip
    names = [f"numbered-{i}" for i in range(args.guests)]
    with tempfile.TemporaryDirectory(prefix="umon-numbered-") as tmp:
        work = Path(tmp)
        data = args.keep or work / "data"
        guest = build_guest(work)
        serve = Serve(data, ["--fsync", args.fsync, *(["--no-index"] if args.no_index else [])])
        serve.start()
        flags = ["--allow-drops", "--flush-ms=120000"]
        if args.window:
            flags.append(f"--window={args.window}")
        if args.rate:
            flags.append(f"--rate={args.rate}")
        start = time.perf_counter()
        guests = [
            subprocess.Popen([str(guest), "127.0.0.1", str(serve.port), name, str(count), *flags],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for name, count in zip(names, counts, strict=True)
        ]  # fmt: skip
        kills = 0
        next_kill = time.monotonic() + args.kill_every
        while any(g.poll() is None for g in guests):
            if args.kill_every and time.monotonic() >= next_kill:
                serve.kill_and_restart()
                kills += 1
                next_kill = time.monotonic() + args.kill_every
            time.sleep(0.02)
        elapsed = time.perf_counter() - start
        outputs = [g.communicate()[0] for g in guests]
        status = serve.stop()
        stats = [guest_stats(out) for out in outputs]
        check_start = time.perf_counter()
        checks = check_all(
            data,
            names,
            expected=dict(zip(names, counts, strict=True)),
            allow_drops=True,
            content=numbered_message,
        )
        by_name = {c.name: c for c in checks}
        check_seconds = time.perf_counter() - check_start

    problems = []
    for name, st, out, guest_proc in zip(names, stats, outputs, guests, strict=True):
        check: InstanceCheck = by_name[name]
        if guest_proc.returncode != 0 or not st:
            problems.append(f"{name}: guest exited {guest_proc.returncode}: {out.strip()[-300:]}")
            continue
        if len(check.boots) != 1:
            problems.append(f"{name}: {len(check.boots)} boots in the file, the guest had one")
        if check.records != st["acked"]:
            problems.append(f"{name}: {check.records} stored, the guest saw {st['acked']} acked")
        if check.dropped != st["dropped"]:
            problems.append(f"{name}: notices say {check.dropped} dropped, the guest "
                            f"{st['dropped']}")  # fmt: skip
        if not check.ok:
            problems.append(check.summary())
    stored = sum(c.records for c in checks)
    dropped = sum(s.get("dropped", 0) for s in stats)
    exact = all(c.missing == c.covered == c.duplicated == c.out_of_order == 0 for c in checks)
    figures = {
        "guests": args.guests,
        "records": args.records,
        "window": args.window,
        "rate_per_guest": args.rate,
        "fsync": args.fsync,
        "indexer": not args.no_index,
        "seconds": round(elapsed, 2),
        "records_per_s": round(stored / elapsed),
        "stored": stored,
        "dropped_by_guests": dropped,
        "dropped_in_notices": sum(c.dropped for c in checks),
        "missing": sum(c.missing for c in checks),
        "duplicated": sum(c.duplicated for c in checks),
        "out_of_order": sum(c.out_of_order for c in checks),
        "overcounted": sum(c.overcounted for c in checks),
        "exactly_once_in_order": exact and stored == args.records,
        "kills": kills,
        "collector_restart_s_max": round(max(serve.down_seconds, default=0.0), 2),
        "reconnects": sum(s.get("reconnects", 0) for s in stats),
        "collector_peak_rss_mib": round(serve.peak_rss_kib / 1024, 1),
        "collector_exit": status,
        "check_seconds": round(check_seconds, 1),
        "problems": len(problems),
    }
    print(f"numbered: {args.guests} C guests, {args.records} records in total, window "
          f"{args.window or 'none'}, rate {args.rate or 'unlimited'}/s per guest, "
          f"fsync={args.fsync}, indexer {'off' if args.no_index else 'on'}")  # fmt: skip
    print(f"  stored:   {stored} records in {elapsed:.2f} s = {stored / elapsed:,.0f} records/s")
    if args.kill_every:
        print(f"  kills:    {kills} SIGKILLs survived (every {args.kill_every:g} s; "
              f"restart took at most {figures['collector_restart_s_max']} s), "
              f"{figures['reconnects']} guest reconnects")  # fmt: skip
    print(f"  checked:  {stored} records: missing {figures['missing']}, duplicated "
          f"{figures['duplicated']}, out of order {figures['out_of_order']}; dropped by the "
          f"guests {dropped}, in notices {figures['dropped_in_notices']}, overcounted "
          f"{figures['overcounted']} ({check_seconds:.1f} s to check)")  # fmt: skip
    verdict = "every record stored exactly once, in order" if figures["exactly_once_in_order"] \
        else "not every record stored (see drops)" if not problems else "PROBLEMS"  # fmt: skip
    print(f"  verdict:  {verdict}")
    print(f"  peak RSS: collector {serve.peak_rss_kib / 1024:.1f} MiB")
    for name, st in zip(names, stats, strict=True):
        print(f"  {name}: " + " ".join(f"{k}={v}" for k, v in st.items()))
    for problem in problems:
        print(f"  problem:  {problem}")
    if args.json:
        print(json.dumps(figures))
    if problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
