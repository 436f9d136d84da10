"""Syslog into umonitor from real peers: syslog-ng's loggen and a real rsyslog relaying.

* loggen (RFC 5424 octet-counted, and RFC 3164) over several TCP connections: the
  number of records stored equals the number loggen reports sent.
* rsyslog taking messages from util-linux ``logger`` and forwarding them to umonitor
  over TCP (omfwd, octet counting) and over RELP (omrelp) — the latter while the
  umonitor collector is restarted mid-stream: every message stored exactly once.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

from tests.integration.conftest import Collector, start_collector, wait_for
from tests.peers import (
    Rsyslog,
    forward_relp,
    forward_tcp,
    free_port,
    loggen_path,
    tcp_input,
)


def stored_syslog_lines(data: Path) -> int:
    """Record lines (not ``#`` context lines) in every instance's syslog.log."""
    total = 0
    for path in data.glob("instances/*/syslog.log*"):
        raw = path.read_bytes()
        cut = raw.rfind(b"\n") + 1
        total += raw.count(b"\n", 0, cut) - raw.startswith(b"#") - raw.count(b"\n#", 0, cut)
    return total


def stored_messages(collector: Collector) -> Counter[str]:
    out = collector.cli("logs", "-o", "json", "--origin", "syslog")
    assert out.returncode == 0, out.stderr
    return Counter(json.loads(line)["message"] for line in out.stdout.splitlines())


def run_loggen(port: int, *args: str) -> int:
    proc = subprocess.run(
        [
            str(loggen_path()),
            "--inet",
            "--stream",
            "--size",
            "200",
            "--active-connections",
            "4",
            "--interval",
            "3",
            "--rate",
            "5000",
            *args,
            "127.0.0.1",
            str(port),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = proc.stdout + proc.stderr
    counts = re.findall(r"count=(\d+)", output)
    assert proc.returncode == 0 and counts, output
    return int(counts[-1])


def test_loggen_count_stored_equals_count_sent(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "data"
    collector = start_collector(data, "--syslog-tcp", f"127.0.0.1:{port}", "--no-udp")
    try:
        sent = run_loggen(port, "--syslog-proto")
        assert sent > 1000
        wait_for(lambda: stored_syslog_lines(data) == sent, what=f"{sent} records")
        sent_bsd = run_loggen(port)  # RFC 3164 lines this time
        wait_for(lambda: stored_syslog_lines(data) == sent + sent_bsd, what="the 3164 ones too")
        assert list((data / "rejects").glob("*")) == []
    finally:
        assert collector.stop() == 0
    # Nothing more turned up on the orderly stop, and the index agrees.
    assert stored_syslog_lines(data) == sent + sent_bsd
    out = collector.cli("ls", "-o", "json")
    records = sum(json.loads(line).get("records", 0) for line in out.stdout.splitlines())
    assert records == sent + sent_bsd


def logger_lines(port: int, lines: list[str], tmp: Path) -> None:
    """util-linux logger sends each line of a file as one RFC 5424 message over TCP."""
    source = tmp / f"lines-{time.monotonic_ns()}.txt"
    source.write_text("".join(f"{line}\n" for line in lines))
    subprocess.run(
        ["logger", "--tcp", "--octet-count", "--rfc5424", "-n", "127.0.0.1", "-P", str(port),
         "-t", "relayed", "-p", "local3.notice", "-f", str(source)],
        check=True, timeout=120,
    )  # fmt: skip


def test_rsyslog_relays_to_umonitor_over_tcp(tmp_path: Path) -> None:
    syslog_port, relay_port = free_port(), free_port()
    collector = start_collector(tmp_path / "data", "--syslog-tcp", f"127.0.0.1:{syslog_port}")
    rsyslog = Rsyslog(tmp_path / "rsyslog", tcp_input(relay_port), forward_tcp(syslog_port))
    rsyslog.start()
    try:
        lines = [f'relayed message {n} with a = sign and "quotes"' for n in range(2000)]
        logger_lines(relay_port, lines, tmp_path)
        wait_for(lambda: stored_messages(collector) == Counter(lines), timeout=60,
                 what="2000 relayed messages, each once")  # fmt: skip
        out = collector.cli("logs", "-o", "json", "-n", "1")
        row = json.loads(out.stdout.splitlines()[-1])
        assert row["severity"] == "notice" and row["fields"]["facility"] == "local3"
        assert row["fields"]["app"] == "relayed"
    finally:
        rsyslog.stop()
        collector.stop()


def test_rsyslog_relays_over_relp_exactly_once_across_a_collector_restart(
    tmp_path: Path,
) -> None:
    relp_port, relay_port = free_port(), free_port()
    data = tmp_path / "data"
    args = ("--syslog-relp", f"127.0.0.1:{relp_port}")
    collector = start_collector(data, *args)
    rsyslog = Rsyslog(tmp_path / "rsyslog", tcp_input(relay_port), forward_relp(relp_port))
    rsyslog.start()
    lines = [f"relp message {n}" for n in range(20_000)]
    try:
        sender = threading.Thread(
            target=lambda: [
                logger_lines(relay_port, lines[i : i + 1000], tmp_path)
                for i in range(0, len(lines), 1000)
            ]
        )
        sender.start()
        wait_for(lambda: stored_syslog_lines(data) > 2000, what="the stream to be flowing")
        assert collector.stop() == 0
        assert stored_syslog_lines(data) < len(lines)  # it was mid-stream
        collector = start_collector(data, *args)
        sender.join(timeout=120)
        wait_for(lambda: stored_syslog_lines(data) >= len(lines), timeout=90,
                 what="every message after the restart")  # fmt: skip
        time.sleep(1)  # a duplicate would arrive now, if any were sent
        assert stored_messages(collector) == Counter(lines)
    finally:
        rsyslog.stop()
        collector.stop()
