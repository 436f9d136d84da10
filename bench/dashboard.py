"""The dashboard under load: --instances guests logging --rate records/s each, with a
page's two streams open (the fleet's events and an unfiltered live tail).

Starts ``umonitor serve`` and ``umonitor web`` in a temporary data directory, feeds
them from this process (the Python guest client, asynchronous), reads both event
streams in threads, and prints what arrived and what it cost: records sent and
stored, tail records shown and counted as skipped, fleet events, the web process's
CPU seconds and peak RSS, the collector's RSS before and after.

    python bench/dashboard.py --instances 100 --rate 10 --seconds 30
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


def watch(port: int, path: str, until: float, counts: dict[str, int]) -> None:
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
    conn.close()


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=100)
    parser.add_argument("--rate", type=float, default=10.0, help="records/s per instance")
    parser.add_argument("--seconds", type=float, default=30.0)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = str(Path(tmp) / "data")
        serve, port = start(
            ["serve", "--data", data, "--listen", "127.0.0.1:0"],
            r"(?<!\+)tcp://[\d.]+:(\d+)",
            "stderr",
        )
        web, url = start(
            ["web", "--data", data, "--listen", "127.0.0.1:0"], r"web: (\S+)", "stdout"
        )
        web_port = int(url.rstrip("/").rsplit(":", 1)[1])
        collector_before = status_kib(serve.pid, "VmRSS")
        web_cpu = cpu_seconds(web.pid)
        counts = {"fleet": 0, "record": 0, "skipped": 0}
        until = time.monotonic() + opts.seconds + 5
        readers = [
            threading.Thread(target=watch, args=(web_port, path, until, counts))
            for path in ("/api/fleet/events", "/api/tail?last=0")
        ]
        for reader in readers:
            reader.start()
        sent = asyncio.run(feed(int(port), opts.instances, opts.rate, opts.seconds))
        for reader in readers:
            reader.join()
        web_cpu = cpu_seconds(web.pid) - web_cpu
        out = subprocess.run(
            [sys.executable, "-m", "umonitor", "ls", "-o", "json", "--data", data],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        stored = sum(json.loads(line).get("records", 0) for line in out.stdout.splitlines())
        print(f"sent {sent} records ({sent / opts.seconds:.0f}/s), stored {stored}")
        print(f"tail: {counts['record']} shown, {counts['skipped']} skipped; "
              f"fleet events: {counts['fleet']}")  # fmt: skip
        print(f"web: {web_cpu:.1f} CPU s over {opts.seconds + 5:.0f} s, "
              f"peak RSS {status_kib(web.pid) / 1024:.0f} MiB")  # fmt: skip
        print(f"collector RSS: {collector_before / 1024:.0f} MiB before, "
              f"{status_kib(serve.pid, 'VmRSS') / 1024:.0f} MiB after")  # fmt: skip
        for proc in (web, serve):
            proc.terminate()
            proc.communicate(timeout=60)


if __name__ == "__main__":
    main()
