"""Fairness benchmark: one guest floods as fast as it can while 10 guests log 100 records/s.

Runs the same steady guests (tests/fairness.py: native guests in one asyncio loop,
each on a fixed schedule, timing every record from write to the ACK that covers it)
against a fresh ``umonitor serve`` three times in one run:

* ``alone``: no flood (the anchor: what the machine gives the steady guests);
* ``flood``: a native guest in its own process writes pre-encoded records as fast as
  the collector reads them; the collector's defaults, no rate limit;
* ``flood, rate limit``: the same with ``--rate-limit N`` (the flooder is read at N
  records/s; the steady guests are far below it).

For each: steady records sent, acknowledged, stored (each guest's app.log holds
1..N exactly once) and lost; ACK latency p50/p95/p99/max; the flood's stored
records/s; the collector's peak RSS. The issue's target: the steady guests lose
nothing and their p99 stays under 100 ms.

    python bench/fairness.py [--guests 10] [--rate 100] [--seconds 20] [--rate-limit 20000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.fairness, when run as bench/fairness.py

from tests.fairness import percentile, steady_guests  # noqa: E402
from tests.integration.conftest import file_seqs  # noqa: E402

from numbered import Serve  # noqa: E402

TARGET_P99_MS = 100.0


def scenario(
    label: str, extra: list[str], flood: bool, args: argparse.Namespace, work: Path
) -> dict[str, object]:
    data = work / label.replace(" ", "-").replace(",", "")
    serve = Serve(data, extra)
    serve.start()
    flooder = None
    if flood:
        flooder = subprocess.Popen(
            [sys.executable, "-m", "tests.fairness", "flood", str(serve.port), "flooder",
             str(args.seconds + 2)],
            cwd=ROOT, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(1)  # the flood is going before the steady guests start
    names = [f"steady-{i}" for i in range(args.guests)]
    guests = steady_guests(serve.port, names, args.rate, args.seconds)
    flood_counts = {"sent": 0, "acked": 0}
    if flooder is not None:
        out, _ = flooder.communicate(timeout=300)
        flood_counts = json.loads(out.strip().splitlines()[-1])
    serve.stop()
    latencies = [x for g in guests for x in g.latencies]
    sent = sum(g.sent for g in guests)
    acked = sum(g.acked for g in guests)
    exact = sum(file_seqs(data, g.name) == list(range(1, g.sent + 1)) for g in guests)
    stored = sum(len(file_seqs(data, g.name)) for g in guests)
    figures: dict[str, object] = {
        "scenario": label,
        "steady_guests": args.guests,
        "rate_per_guest": args.rate,
        "seconds": args.seconds,
        "steady_sent": sent,
        "steady_acked": acked,
        "steady_stored": stored,
        "steady_exactly_once": exact,
        "steady_lost": sent - stored,
        "errors": [g.error for g in guests if g.error],
        "p50_ms": round(1000 * percentile(latencies, 50), 1),
        "p95_ms": round(1000 * percentile(latencies, 95), 1),
        "p99_ms": round(1000 * percentile(latencies, 99), 1),
        "max_ms": round(1000 * max(latencies, default=0.0), 1),
        "flood_acked": flood_counts["acked"],
        "flood_records_per_s": round(flood_counts["acked"] / (args.seconds + 2)),
        "collector_peak_rss_mib": round(serve.peak_rss_kib / 1024, 1),
    }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guests", type=int, default=10, help="steady guests")
    parser.add_argument("--rate", type=float, default=100.0, help="records/s per steady guest")
    parser.add_argument("--seconds", type=float, default=20.0, help="per scenario")
    parser.add_argument("--rate-limit", type=int, default=20000,
                        help="--rate-limit of the third scenario (0: skip it)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="one JSON line per scenario too")
    args = parser.parse_args()
    if args.guests < 1 or args.rate <= 0 or args.seconds <= 0:
        parser.error("--guests, --rate and --seconds must be positive")

    runs = [("alone", [], False), ("flood", [], True)]
    if args.rate_limit:
        runs.append(("flood, rate limit", ["--rate-limit", str(args.rate_limit)], True))
    with tempfile.TemporaryDirectory(prefix="umon-fairness-") as tmp:
        results = [scenario(label, extra, flood, args, Path(tmp)) for label, extra, flood in runs]

    print(f"fairness: {args.guests} steady guests x {args.rate:g} records/s for "
          f"{args.seconds:g} s; target: nothing lost, p99 ACK latency "
          f"< {TARGET_P99_MS:g} ms")  # fmt: skip
    header = ("scenario", "sent", "stored", "lost", "p50 ms", "p95 ms", "p99 ms", "max ms",
              "flood rec/s", "peak RSS MiB", "target")  # fmt: skip
    rows = [header]
    failed = False
    for r in results:
        met = r["steady_lost"] == 0 and not r["errors"] and float(str(r["p99_ms"])) < TARGET_P99_MS
        failed |= r["steady_lost"] != 0 or bool(r["errors"])
        rows.append(tuple(str(v) for v in (
            r["scenario"], r["steady_sent"], r["steady_stored"], r["steady_lost"], r["p50_ms"],
            r["p95_ms"], r["p99_ms"], r["max_ms"], f"{r['flood_records_per_s']:,}",
            r["collector_peak_rss_mib"], "met" if met else "missed",
        )))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        cells = zip(row, widths, strict=True)
        print("  " + "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(cells)))
    for r in results:
        if r["errors"]:
            print(f"  {r['scenario']}: {r['errors']}")
        if args.json:
            print(json.dumps(r))
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
