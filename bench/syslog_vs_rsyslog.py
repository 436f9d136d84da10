"""Syslog over TCP, side by side: the same loggen load into rsyslog and into umonitor.

Runs syslog-ng's ``loggen`` (RFC 5424, octet-counted framing, fixed-size messages,
several TCP connections, fixed duration, as fast as it can by default) twice, one
sink after the other, on this machine:

* rsyslog 8, its own instance in the foreground (``rsyslogd -n -f CONF -i PIDFILE``)
  with a private config and work directory on a free high port: ``imptcp`` in,
  ``omfile`` out, one file per sending host (dynaFile template on ``%HOSTNAME%``).
  The system's rsyslog config and service are never touched.
* ``umonitor serve --syslog-tcp 127.0.0.1:PORT --no-udp`` on a fresh data directory;
  records go to ``DATA/instances/*/syslog.log`` (record lines are those not starting
  with ``#``).

How the figures are measured: the clock starts just before loggen is started. The
sink's files are polled every --poll seconds from then on (counting only the new
complete lines each time) and, after loggen exits, until the count reaches what loggen
reports as sent, or stops growing for --settle seconds, or --timeout passes. The clock
stops at the poll that first saw the final count, so it includes loggen's start-up and
the sink's backlog and is late by at most one poll interval. msg/s = lines on disk /
that time. Lines on disk are compared with loggen's ``count=`` (messages sent); the
difference is reported as lost. Peak RSS is VmHWM from /proc of the sink's process
(for umonitor, the collector process itself, not its indexer child).

loggen's ``--rate`` is per connection and defaults to 1000 msg/s there, so this script
passes a rate far above what either sink takes: the load is closed-loop, limited by
TCP back-pressure from the sink. loggen runs on the same machine and competes for the
same CPUs.

    sh bench/peers.sh        # installs rsyslog, extracts loggen into build/peers/
    python bench/syslog_vs_rsyslog.py --size 200 --connections 4 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from procstat import status_kib

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_LOGGEN = ROOT / "build" / "peers" / "loggen"

RSYSLOG_CONF = """\
global(workDirectory="{work}" maxMessageSize="64k")
module(load="imptcp")
template(name="perHost" type="string" string="{out}/%HOSTNAME%.log")
ruleset(name="bench") {{
    action(type="omfile" dynaFile="perHost" template="RSYSLOG_FileFormat")
}}
input(type="imptcp" address="127.0.0.1" port="{port}" ruleset="bench")
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(
    port: int, proc: subprocess.Popen[bytes] | subprocess.Popen[str], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"sink exited with status {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class LineCounter:
    """Counts complete lines in a set of growing files, reading only what is new."""

    def __init__(self, files: Callable[[], list[Path]], skip_comments: bool) -> None:
        self.files = files
        self.skip_comments = skip_comments
        self.offsets: dict[Path, int] = {}
        self.partial: dict[Path, bytes] = {}
        self.count = 0

    def update(self) -> int:
        for path in self.files():
            offset = self.offsets.get(path, 0)
            try:
                with open(path, "rb") as f:
                    f.seek(offset)
                    chunk = f.read()
            except OSError:
                continue
            if not chunk:
                continue
            self.offsets[path] = offset + len(chunk)
            data = self.partial.pop(path, b"") + chunk
            cut = data.rfind(b"\n") + 1
            if cut < len(data):
                self.partial[path] = data[cut:]
            whole = memoryview(data)[:cut]
            lines = data.count(b"\n", 0, cut)
            if self.skip_comments and cut:
                # ``whole`` starts at a line start: comment lines start it or follow a LF.
                lines -= data.startswith(b"#") + data.count(b"\n#", 0, cut)
            del whole
            self.count += lines
        return self.count


def stop(proc: subprocess.Popen[Any], timeout: float) -> None:
    """SIGTERM, and SIGKILL if the sink has not exited within ``timeout`` seconds."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_loggen(
    loggen: Path, port: int, counter: LineCounter, args: argparse.Namespace
) -> tuple[int, int, float]:
    """Run loggen against ``port`` and count lines on disk; (sent, on disk, seconds).

    The sink's files are counted every --poll seconds while loggen runs too, so each
    poll reads only what is new and the final count is seen soon after it is reached.
    """
    cmd = [
        str(loggen),
        "--inet",
        "--stream",
        "--syslog-proto",
        "--size",
        str(args.size),
        "--active-connections",
        str(args.connections),
        "--interval",
        str(args.seconds),
        "--rate",
        str(args.rate),
        "127.0.0.1",
        str(port),
    ]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    count, last_change = 0, start
    while proc.poll() is None:
        time.sleep(args.poll)
        new = counter.update()
        if new != count:
            count, last_change = new, time.perf_counter()
    output = proc.stdout.read()
    totals = re.findall(r"average rate = [\d.]+ msg/sec, count=(\d+)", output)
    if proc.returncode != 0 or not totals:
        raise SystemExit(f"loggen failed (status {proc.returncode}):\n{output}")
    sent = int(totals[-1])
    # Then until every sent message is on disk or the count settles.
    deadline = time.perf_counter() + args.timeout
    while count < sent:
        now = time.perf_counter()
        if now - last_change >= args.settle or now >= deadline:
            break
        time.sleep(args.poll)
        new = counter.update()
        if new != count:
            count, last_change = new, time.perf_counter()
    return sent, count, last_change - start


def bench_rsyslog(loggen: Path, rsyslogd: str, args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="rsyslog-bench-") as tmp:
        base = Path(tmp)
        work, out = base / "work", base / "out"
        work.mkdir()
        out.mkdir()
        port = free_port()
        conf = base / "rsyslog.conf"
        conf.write_text(RSYSLOG_CONF.format(work=work, out=out, port=port))
        check = subprocess.run([rsyslogd, "-N1", "-f", str(conf)], capture_output=True, text=True)
        if check.returncode != 0:
            raise SystemExit(f"rsyslog rejects the config:\n{check.stdout}{check.stderr}")
        proc = subprocess.Popen(
            [rsyslogd, "-n", "-f", str(conf), "-i", str(base / "rsyslogd.pid")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_port(port, proc, 15)
            version = (
                subprocess.run([rsyslogd, "-v"], capture_output=True, text=True)
                .stdout.splitlines()[0]
                .split(" compiled")[0]
            )
            counter = LineCounter(lambda: sorted(out.glob("*.log")), skip_comments=False)
            sent, on_disk, seconds = run_loggen(loggen, port, counter, args)
            rss = status_kib(proc.pid)
            files = len(list(out.glob("*.log")))
        finally:
            stop(proc, 30)
    return {
        "sink": version.strip(),
        "sent": sent,
        "on_disk": on_disk,
        "lost": sent - on_disk,
        "seconds": round(seconds, 3),
        "msgs_per_s": round(on_disk / seconds) if seconds > 0 else 0,
        "peak_rss_mib": round(rss / 1024, 1),
        "files": files,
    }


def bench_umonitor(loggen: Path, args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="umon-syslog-bench-") as tmp:
        data = Path(tmp)
        port = free_port()
        cmd = [
            sys.executable,
            "-m",
            "umonitor",
            "serve",
            "--data",
            str(data),
            "--listen",
            "127.0.0.1:0",
            "--syslog-tcp",
            f"127.0.0.1:{port}",
            "--no-udp",
            "--rotate-size",
            "0",  # one file, as rsyslog writes it: the counter follows one path
        ]
        if args.fsync:
            cmd += ["--fsync", args.fsync]
        env = dict(os.environ)
        if args.pure_python:
            env["UMONITOR_PURE_PYTHON"] = "1"
        serve = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
        assert serve.stderr is not None
        try:
            ready = serve.stderr.readline()
            if f"127.0.0.1:{port}" not in ready:
                raise SystemExit(f"collector did not start: {ready}")
            counter = LineCounter(
                lambda: sorted(data.glob("instances/*/syslog.log")), skip_comments=True
            )
            sent, on_disk, seconds = run_loggen(loggen, port, counter, args)
            rss = status_kib(serve.pid)
            files = len(list(data.glob("instances/*/syslog.log")))
            rejects = sum(len(p.read_bytes().splitlines()) for p in data.glob("rejects/*.log"))
        finally:
            stop(serve, 120)
        # Whatever the collector still held and stored on its orderly stop.
        after_stop = counter.update()
    return {
        "sink": "umonitor serve --syslog-tcp"
        + (" (pure Python)" if args.pure_python else "")
        + (f" --fsync {args.fsync}" if args.fsync else ""),
        "sent": sent,
        "on_disk": on_disk,
        "lost": sent - on_disk,
        "seconds": round(seconds, 3),
        "msgs_per_s": round(on_disk / seconds) if seconds > 0 else 0,
        "peak_rss_mib": round(rss / 1024, 1),
        "files": files,
        "rejected": rejects,
        "on_disk_after_stop": after_stop,
    }


def report(name: str, r: dict[str, object]) -> None:
    print(f"  {name:<9} {r['sink']}")
    print(
        f"            {r['on_disk']:,} msgs on disk in {r['seconds']:.2f} s = "
        f"{r['msgs_per_s']:,} msg/s; loggen sent {r['sent']:,}, lost {r['lost']:,}; "
        f"{r['files']} file(s); peak RSS {r['peak_rss_mib']} MiB"
        + (f"; rejected {r['rejected']}" if "rejected" in r else "")
    )
    if "on_disk_after_stop" in r and r["on_disk_after_stop"] != r["on_disk"]:
        print(f"            after SIGTERM: {r['on_disk_after_stop']:,} msgs on disk")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=200, help="message size, bytes")
    parser.add_argument("--connections", type=int, default=4, help="TCP connections")
    parser.add_argument("--seconds", type=int, default=10, help="loggen run time")
    parser.add_argument(
        "--rate", type=int, default=10_000_000, help="loggen msg/s per connection (cap)"
    )
    parser.add_argument("--loggen", type=Path, default=DEFAULT_LOGGEN)
    parser.add_argument("--rsyslogd", default=shutil.which("rsyslogd") or "/usr/sbin/rsyslogd")
    parser.add_argument("--poll", type=float, default=0.02, help="disk poll interval, s")
    parser.add_argument("--settle", type=float, default=5.0, help="stop when no growth, s")
    parser.add_argument("--timeout", type=float, default=300.0, help="longest drain, s")
    parser.add_argument(
        "--fsync", choices=["always", "batch", "never"], help="umonitor's (default: its own)"
    )
    parser.add_argument("--pure-python", action="store_true", help="umonitor without C")
    parser.add_argument("--only", choices=["rsyslog", "umonitor"], help="run one side")
    parser.add_argument("--json", action="store_true", help="print one JSON line as well")
    args = parser.parse_args()

    if not os.access(args.loggen, os.X_OK):
        raise SystemExit(f"no loggen at {args.loggen}: run sh bench/peers.sh first")
    results: dict[str, dict[str, object]] = {}
    if args.only != "umonitor":
        if not os.access(args.rsyslogd, os.X_OK):
            raise SystemExit(f"no rsyslogd at {args.rsyslogd}: run sh bench/peers.sh first")
        results["rsyslog"] = bench_rsyslog(args.loggen, args.rsyslogd, args)
    if args.only != "rsyslog":
        results["umonitor"] = bench_umonitor(args.loggen, args)

    print(
        f"syslog TCP: loggen RFC 5424, {args.size} B messages, {args.connections} "
        f"connections, {args.seconds} s, {os.cpu_count()} CPUs shared with loggen"
    )
    for name, r in results.items():
        report(name, r)
    if len(results) == 2:
        ratio = int(results["umonitor"]["msgs_per_s"]) / max(  # type: ignore[call-overload]
            1,
            int(results["rsyslog"]["msgs_per_s"]),  # type: ignore[call-overload]
        )
        print(f"  ratio     umonitor/rsyslog = {ratio:.2f}")
        results["ratio"] = {"umonitor_over_rsyslog": round(ratio, 3)}
    if args.json:
        print(json.dumps({"args": vars(args) | {"loggen": str(args.loggen)}, **results}))


if __name__ == "__main__":
    main()
