"""Exporters end to end: ``umonitor serve --export`` forwarding to a real OTLP/HTTP receiver.

The receiver is the stdlib HTTP server decoding with the official OpenTelemetry
classes (tests/integration/test_otlp_http.py). These tests check what the runner
adds to a sink: positions kept across outages and restarts (every record exactly
once), start=end|beginning, the level filter, refusals and max_backlog counted as
dropped, and what ``umonitor ls`` shows.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from tests.integration.conftest import Collector, start_collector, umonitor, wait_for
from tests.integration.test_otlp_http import OtlpServer, Reply
from umonitor.guest.client import Client
from umonitor.records import Severity


def send(collector: Collector, name: str, first: int, count: int, **kw: object) -> None:
    severity = kw.get("severity", Severity.INFO)
    assert isinstance(severity, Severity)
    client = Client("127.0.0.1", collector.port, name)
    try:
        for n in range(first, first + count):
            client.log(severity, f"{name} message {n}")
        assert client.flush(20)
    finally:
        client.close()


def received(server: OtlpServer) -> Counter[tuple[str, str]]:
    with server.lock:
        return Counter(rec for post in server.posted for rec in post.records())


def exporter_status(collector: Collector) -> dict[str, object]:
    out = collector.cli("ls", "-o", "json")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    statuses = [r for r in rows if "exporter" in r]
    assert len(statuses) <= 1
    return statuses[0] if statuses else {"state": "not started yet"}


def expected(name: str, first: int, count: int) -> Counter[tuple[str, str]]:
    return Counter((name, f"{name} message {n}") for n in range(first, first + count))


def test_every_record_once_across_outage_and_collector_restart(tmp_path: Path) -> None:
    server = OtlpServer().start()
    port = server.port
    export = f"otel=otlp+{server.url}?start=beginning"
    collector = start_collector(tmp_path / "data", "--export", export)
    try:
        send(collector, "web", 1, 300)
        wait_for(lambda: received(server) == expected("web", 1, 300), what="300 records")
        wait_for(lambda: exporter_status(collector)["state"] == "idle", what="idle")
        status = exporter_status(collector)
        assert status["sent"] == 300 and status["dropped"] == 0
        assert status["target"] == f"otlp+http://127.0.0.1:{port}/v1/logs"

        server.stop()
        send(collector, "web", 301, 200)
        send(collector, "db", 1, 50)

        def retrying() -> bool:
            s = exporter_status(collector)
            return s["state"] == "retrying" and int(str(s["backlog_bytes"])) > 0

        wait_for(retrying, what="the exporter to retry with a backlog")
        assert "127.0.0.1" in str(exporter_status(collector)["error"])
        text = collector.cli("ls").stdout
        assert "EXPORTER" in text and "retrying" in text

        # The collector restarts while the receiver is still away.
        assert collector.stop() == 0
        collector = start_collector(tmp_path / "data", "--export", export)
        send(collector, "db", 51, 50)
        server = OtlpServer(port=port).start()
        backlog = expected("web", 301, 200) + expected("db", 1, 100)
        wait_for(lambda: received(server) == backlog, timeout=60, what="the backlog")
        wait_for(lambda: exporter_status(collector)["state"] == "idle", what="idle again")
        status = exporter_status(collector)
        assert status["sent"] == 600 and status["dropped"] == 0 and status["backlog_bytes"] == 0
    finally:
        collector.stop()
        server.stop()


def test_start_end_skips_what_was_stored_and_level_filters(tmp_path: Path) -> None:
    server = OtlpServer().start()
    data = tmp_path / "data"
    collector = start_collector(data)
    try:
        send(collector, "old", 1, 20)
        assert collector.stop() == 0
        collector = start_collector(data, "--export", f"warn=otlp+{server.url}?level=warning")
        wait_for(lambda: exporter_status(collector)["state"] == "idle", what="idle")
        send(collector, "old", 21, 10)  # info: below the level
        send(collector, "old", 31, 5, severity=Severity.ERR)
        send(collector, "new", 1, 5, severity=Severity.WARNING)
        want = expected("old", 31, 5) + expected("new", 1, 5)
        wait_for(lambda: received(server) == want, what="only the warnings and worse")
    finally:
        collector.stop()
        server.stop()


def test_refusals_are_counted_as_dropped_and_the_rest_goes_on(tmp_path: Path) -> None:
    server = OtlpServer().start()
    server.replies.append(Reply(status=400, body=b"bad request"))
    collector = start_collector(tmp_path / "data", "--export", f"o=otlp+{server.url}?batch=10")
    try:
        send(collector, "web", 1, 10)

        def all_accounted() -> bool:
            s = exporter_status(collector)
            return int(str(s.get("sent", 0))) + int(str(s.get("dropped", 0))) == 10

        wait_for(all_accounted, what="10 records sent or dropped")
        with server.lock:
            refused = Counter(server.posted[0].records())
            assert server.posted[0].status == 400
        status = exporter_status(collector)
        assert status["dropped"] == sum(refused.values()) > 0
        assert "400" in str(status["error"])
        # Every record was posted once: the refused batch was not sent again.
        assert received(server) == expected("web", 1, 10)
    finally:
        collector.stop()
        server.stop()


def test_falling_beyond_max_backlog_skips_oldest_and_counts_them(tmp_path: Path) -> None:
    server = OtlpServer().start()
    port = server.port
    server.stop()
    collector = start_collector(
        tmp_path / "data", "--export", f"o=otlp+http://127.0.0.1:{port}?max_backlog=8KiB"
    )
    try:
        send(collector, "web", 1, 1000)  # far more than 8 KiB of lines
        wait_for(lambda: exporter_status(collector)["state"] == "retrying", what="retrying")
        server = OtlpServer(port=port).start()
        wait_for(lambda: exporter_status(collector)["state"] == "idle", timeout=60, what="idle")
        status = exporter_status(collector)
        got = received(server)
        sent, dropped = int(str(status["sent"])), int(str(status["dropped"]))
        assert sent == sum(got.values()) and 0 < sent < 1000
        assert sent + dropped == 1000
        # What was kept is the newest, each once.
        assert got == expected("web", 1001 - sent, sent)
    finally:
        collector.stop()
        server.stop()


def test_bad_export_options_are_one_sentence(tmp_path: Path) -> None:
    for arg, words in [
        ("x=ftp://h:1", "unknown kind"),
        ("x=syslog+tcp://h", "needs a host and a port"),
        ("x=relp://h:1?colour=red", "unknown option"),
        ("x=otlp+http://h:1?start=middle", "start must be"),
        ("x=syslog+tls://h:1?ca=/nonexistent", "no CA file"),
    ]:
        out = umonitor("serve", "--data", str(tmp_path / "d"), "--export", arg)
        assert out.returncode == 2, (arg, out.stderr)
        assert words in out.stderr and "Traceback" not in out.stderr, (arg, out.stderr)
