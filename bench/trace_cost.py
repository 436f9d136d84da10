"""What function tracing costs per call: compiled in but off, on, and filtered out.

Builds one small C program, a tight loop calling a function that does almost
nothing (``leaf``), in these ways and times N calls, best of --repeat runs:

* plain: ``-O2``, no hooks (the floor);
* off: ``-finstrument-functions``, linked with the C library, tracing off (the
  default): each call and return tests one flag;
* filtered: tracing on through a real collector (``umonitor trace NAME on
  --function other``), ``leaf`` outside the range: the hook finds no range;
* on: tracing on for every function: each call and return is a record in the
  ring, sent to the collector (every 64 events, and at every event while the
  ring is more than half full); the ring may overflow and drop, which the
  program counts; this rate is the collector's (it stores every record);
* on, no collector: the guest's own cost of an event (encode and ring), the
  ring full and dropping the oldest;
* anchors, when they can run: ``-pg`` (gprof's mcount, no tool attached), and
  uftrace recording the ``-pg`` build (``uftrace record``).

    python bench/trace_cost.py --calls 2000000
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "src" / "umonitor" / "guest" / "c"

PROGRAM = r"""
#define _POSIX_C_SOURCE 200809L
#include "umonitor.h"
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NOTRACE __attribute__((no_instrument_function))
static volatile int sink;

__attribute__((noinline)) void leaf(int x) { sink += x; }
__attribute__((noinline)) void other(int x) { sink -= x; }

NOTRACE static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

NOTRACE static double loop(long n)
{
    double t0 = now();
    long i;
    for (i = 0; i < n; i++)
        leaf((int)i);
    return (now() - t0) / (double)n;
}

/* trace_cost N                    : print ns per call, no collector
 * trace_cost N on                 : tracing on, no collector: the ring
 *                                   only (it fills, then drops the oldest);
 *                                   print "ns logged dropped"
 * trace_cost N HOST PORT NAME     : connect; per stdin line of a number M,
 *                                   print "ns logged dropped" for M calls */
NOTRACE int main(int argc, char **argv)
{
    long n = atol(argv[1]);
    char line[64];
#ifdef WITH_UMON
    if (argc == 5) {
        umon_init(argv[2], (unsigned)atoi(argv[3]), argv[4], NULL);
        for (;;) {
            struct umon_stats a, b;
            struct pollfd p = {0, POLLIN, 0};
            double ns;
            umon_poll(); /* answers the host while waiting for a line */
            if (poll(&p, 1, 10) <= 0)
                continue;
            if (fgets(line, sizeof line, stdin) == NULL)
                break;
            umon_get_stats(&a);
            ns = loop(atol(line));
            umon_get_stats(&b);
            printf("%.2f %llu %llu\n", ns, b.logged - a.logged, b.dropped - a.dropped);
            fflush(stdout);
            umon_flush(5000);
        }
        return 0;
    }
    if (argc == 3 && strcmp(argv[2], "on") == 0) { /* no collector: ring only */
        struct umon_stats st;
        double ns;
        umon_set_trace(1);
        ns = loop(n);
        umon_set_trace(0);
        umon_get_stats(&st);
        printf("%.2f %llu %llu\n", ns, st.logged, st.dropped);
        return 0;
    }
#endif
    (void)line;
    printf("%.2f\n", loop(n));
    return 0;
}
"""


def build(out: Path, name: str, *flags: str, umon: bool = False) -> Path:
    exe = out / name
    sources = [str(out / "trace_cost.c")]
    if umon:
        sources.append(str(LIB / "umonitor.c"))
    extra = ["-DWITH_UMON"] if umon else []
    cmd = ["gcc", "-std=c99", "-O2", f"-I{LIB}", *extra, *flags, "-o", str(exe), *sources]
    subprocess.run(cmd, check=True)
    return exe


def best(argv: list[str], repeat: int) -> float:
    """The fastest of ``repeat`` runs, in the program's directory (where -pg writes
    gmon.out)."""
    cwd = Path(argv[0]).parent
    return min(float(subprocess.run(argv, check=True, capture_output=True, text=True,
                                    cwd=cwd).stdout)
               for _ in range(repeat))  # fmt: skip


def umonitor(data: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "umonitor", *args, "--data", str(data)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"umonitor {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def traced(exe: Path, calls: int, on_calls: int, repeat: int, out: Path) -> dict[str, str]:
    """ns per call, off, filtered and on, through a real collector."""
    data = out / "data"
    err = open(out / "collector.err", "w")  # noqa: SIM115 - closed below
    collector = subprocess.Popen(
        [sys.executable, "-m", "umonitor", "serve", "--data", str(data),
         "--listen", "127.0.0.1:0"], stderr=err, text=True,
    )  # fmt: skip
    try:
        port = None
        for _ in range(300):
            found = re.search(r"tcp://127\.0\.0\.1:(\d+)", (out / "collector.err").read_text())
            if found:
                port = found.group(1)
                break
            time.sleep(0.05)
        assert port, "the collector did not start"
        guest = subprocess.Popen(
            [str(exe), str(calls), "127.0.0.1", port, "bench"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert guest.stdin is not None and guest.stdout is not None

        def run(n: int = calls) -> tuple[float, int, int]:
            results = []
            for _ in range(repeat):
                guest.stdin.write(f"{n}\n")  # type: ignore[union-attr]
                guest.stdin.flush()  # type: ignore[union-attr]
                ns, logged, dropped = guest.stdout.readline().split()  # type: ignore[union-attr]
                results.append((float(ns), int(logged), int(dropped)))
            return min(results)

        results: dict[str, str] = {}
        ns, _, _ = run()  # connects on the way
        for _ in range(100):
            if "bench" in umonitor(data, "ls"):
                break
            time.sleep(0.05)
        ns, _, _ = run()
        results["off"] = f"{ns:.2f}"
        umonitor(data, "trace", "bench", "on", "-f", "other", "--symbols", str(exe))
        ns, logged, _ = run()
        assert logged == 0, logged
        results["filtered"] = f"{ns:.2f}"
        umonitor(data, "trace", "bench", "on")
        ns, logged, dropped = run(on_calls)
        results["on"] = f"{ns:.2f} ({on_calls} calls: {logged} records, {dropped} dropped)"
        umonitor(data, "trace", "bench", "off")
        guest.stdin.close()
        guest.wait(timeout=30)
        return results
    finally:
        collector.terminate()
        collector.wait(timeout=60)
        err.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2_000_000)
    parser.add_argument("--on-calls", type=int, default=100_000, help="calls timed with tracing on")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        (out / "trace_cost.c").write_text(PROGRAM)
        plain = build(out, "plain")
        floor = best([str(plain), str(args.calls)], args.repeat)
        print(f"plain (no hooks):          {floor:.2f} ns/call")
        hooked = build(out, "hooked", "-finstrument-functions", "-g", umon=True)
        # 'on' is timed over fewer calls: each is two records the collector stores.
        for mode, result in traced(hooked, args.calls, args.on_calls, args.repeat, out).items():
            ns, _, rest = result.partition(" ")
            print(f"umonitor, tracing {mode + ':':<9} {ns} ns/call {rest}")
        runs = [
            subprocess.run(
                [str(hooked), str(args.calls), "on"], check=True, capture_output=True, text=True
            ).stdout.split()
            for _ in range(args.repeat)
        ]
        alone = min(runs, key=lambda r: float(r[0]))
        print(f"umonitor, on, no collector: {alone[0]} ns/call "
              f"({alone[1]} records, {alone[2]} dropped)")  # fmt: skip
        pg = build(out, "pg", "-pg")
        mcount = best([str(pg), str(args.calls)], args.repeat)
        print(f"-pg, no tool:              {mcount:.2f} ns/call")
        if shutil.which("uftrace"):
            argv = ["uftrace", "record", "--no-libcall", "-d", str(out / "uftrace.data"),
                    str(pg), str(args.on_calls)]  # fmt: skip
            ns = min(
                float(subprocess.run(argv, check=True, capture_output=True, text=True,
                                     cwd=out, env={**os.environ}).stdout.split()[-1])
                for _ in range(args.repeat)
            )  # fmt: skip
            print(f"uftrace record (-pg), {args.on_calls} calls: {ns:.2f} ns/call")
        else:
            print("uftrace: not installed")


if __name__ == "__main__":
    main()
