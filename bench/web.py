"""The dashboard under load: --instances guests logging --rate records/s each, with the
page open in headless Chromium and the page's two streams read here too.

Two runs of the same feed, side by side: the anchor, ``umonitor serve`` alone; then
``serve`` with ``umonitor web``, Debian's Chromium showing the live tail (``#/tail``,
every instance), and two readers in this process on the fleet's events and an
unfiltered tail (to count and time what a page receives). Guests are the Python guest
client (asynchronous) in this process. Prints for each run: records sent and stored,
the collector's RSS before, at the end and its peak, its CPU seconds; for the web
run also tail records shown and skipped, how late they reached a reader (from store
time to arrival: p50, p99, max), fleet events, the web process's CPU seconds and peak
RSS, and the rows the page shows at the end, with any error the page logged.

    python bench/web.py --instances 100 --rate 10 --seconds 30 [--no-browser]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # tests.browser_support
from procstat import status_kib

from umonitor.guest.client import AsyncClient
from umonitor.records import Severity


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(args: list[str], pattern: str, stream: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "umonitor", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    source = proc.stdout if stream == "stdout" else proc.stderr
    assert source is not None
    for line in source:
        match = re.search(pattern, line)
        if match:
            return proc, match.group(1)
    raise SystemExit(f"umonitor {args[0]} did not start")


def watch(port: int, path: str, until: float, counts: dict[str, int], lags: list[int]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", path)
    response = conn.getresponse()
    event = ""
    while time.monotonic() < until:
        line = response.readline().decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            if event == "skipped":
                counts["skipped"] += json.loads(line[6:])["count"]
            else:
                counts[event] += 1
                if event == "record":
                    lags.append(time.time_ns() - int(json.loads(line[6:])["time_ns"]))
    conn.close()


def percentile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def feed(port: int, instances: int, rate: float, seconds: float) -> int:
    async def one(i: int) -> int:
        client = AsyncClient("127.0.0.1", port, f"load-{i:03d}")
        await client.start()
        sent = 0
        loop = asyncio.get_running_loop()
        begin = loop.time()
        while loop.time() - begin < seconds:
            client.log(Severity(sent % 8), f"load record {sent} of {i}", fields={"n": sent})
            sent += 1
            await asyncio.sleep(max(0.0, begin + sent / rate - loop.time()))
        await client.flush(30)
        await client.close()
        return sent

    return sum(await asyncio.gather(*(one(i) for i in range(instances))))


def stored_records(data: str) -> int:
    out = subprocess.run(
        [sys.executable, "-m", "umonitor", "ls", "-o", "json", "--data", data],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return sum(json.loads(line).get("records", 0) for line in out.stdout.splitlines())


def run(opts: argparse.Namespace, with_web: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = str(Path(tmp) / "data")
        serve, port = start(
            ["serve", "--data", data, "--listen", "127.0.0.1:0"],
            r"(?<!\+)tcp://[\d.]+:(\d+)",
            "stderr",
        )
        time.sleep(1.0)  # imports done, indexer started
        collector_before = status_kib(serve.pid, "VmRSS")
        collector_cpu = cpu_seconds(serve.pid)
        counts = {"fleet": 0, "record": 0, "skipped": 0}
        lags: list[int] = []
        readers: list[threading.Thread] = []
        driver = None
        if with_web:
            web, url = start(
                ["web", "--data", data, "--listen", "127.0.0.1:0"], r"web: (\S+)", "stdout"
            )
            web_port = int(url.rstrip("/").rsplit(":", 1)[1])
            web_cpu = cpu_seconds(web.pid)
            if opts.browser:
                from tests.browser_support import make_driver

                driver = make_driver()
                driver.get(url + "#/tail")
            until = time.monotonic() + opts.seconds + 5
            readers = [
                threading.Thread(target=watch, args=(web_port, path, until, counts, lags))
                for path in ("/api/fleet/events", "/api/tail?last=0")
            ]
            for reader in readers:
                reader.start()
        sent = asyncio.run(feed(int(port), opts.instances, opts.rate, opts.seconds))
        for reader in readers:
            reader.join()
        collector_cpu = cpu_seconds(serve.pid) - collector_cpu
        collector_end = status_kib(serve.pid, "VmRSS")
        print(f"{'with web + page' if with_web else 'collector alone'}:")
        print(f"  sent {sent} records ({sent / opts.seconds:.0f}/s), "
              f"stored {stored_records(data)}")  # fmt: skip
        print(f"  collector: RSS {collector_before / 1024:.0f} MiB before, "
              f"{collector_end / 1024:.0f} MiB at the end, peak {status_kib(serve.pid) / 1024:.0f}"
              f" MiB; {collector_cpu:.1f} CPU s")  # fmt: skip
        if with_web:
            web_cpu = cpu_seconds(web.pid) - web_cpu
            ms = [lag / 1e6 for lag in lags]
            print(f"  tail reader: {counts['record']} shown, {counts['skipped']} skipped; "
                  f"late by p50 {percentile(ms, 0.5):.0f} ms, p99 {percentile(ms, 0.99):.0f} ms, "
                  f"max {max(ms, default=0):.0f} ms; fleet events: {counts['fleet']}")  # fmt: skip
            print(f"  web: {web_cpu:.1f} CPU s over {opts.seconds + 5:.0f} s, "
                  f"peak RSS {status_kib(web.pid) / 1024:.0f} MiB")  # fmt: skip
            if driver is not None:
                rows = driver.execute_script(
                    "return document.querySelectorAll('#tail-rows tr').length"
                )
                errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
                print(f"  page: {rows} rows in the live tail, {len(errors)} errors {errors[:2]}")
                driver.quit()
            web.terminate()
            web.communicate(timeout=60)
        serve.terminate()
        serve.communicate(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=100)
    parser.add_argument("--rate", type=float, default=10.0, help="records/s per instance")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--no-browser", dest="browser", action="store_false",
                        help="read the streams here only, without Chromium")  # fmt: skip
    opts = parser.parse_args()
    run(opts, with_web=False)
    run(opts, with_web=True)


if __name__ == "__main__":
    main()
