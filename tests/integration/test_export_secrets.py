"""Exporter credentials reach the receiver and nothing else: no argv, no state file.

A real collector (``umonitor serve``) with two OTLP exporters that carry headers,
one read from the environment (``header=NAME:env:VAR``) and one written literally on
serve's command line, to a real HTTP receiver on loopback. Every process's
``/proc/PID/cmdline`` is readable by every user of the host, so the exporter process
must get the headers some other way (its standard input).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tests.integration.conftest import start_collector, umonitor, wait_for
from tests.integration.test_export_runner import send
from tests.integration.test_otlp_http import OtlpServer

ENV_SECRET = "Bearer env-9f86d081884c7d659a2feaa0c55ad015"
LITERAL_SECRET = "literal-0123456789abcdef0123456789"


def cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid``, from /proc/*/stat (field 4, after the name)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        fields = text[text.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            out.append(int(entry.name))
    return out


def test_headers_reach_the_receiver_but_no_command_line(tmp_path: Path) -> None:
    server = OtlpServer().start()
    base = f"otlp+http://127.0.0.1:{server.port}"
    data = tmp_path / "data"
    collector = start_collector(
        data,
        "--export",
        f"viaenv={base}/env?start=beginning&header=Authorization:env:UMON_TEST_AUTH",
        "--export",
        f"literal={base}/literal?start=beginning&header=X-Key:{LITERAL_SECRET}",
        env={"UMON_TEST_AUTH": ENV_SECRET},
    )
    try:
        send(collector, "web", 1, 5)

        def both_delivered() -> bool:
            with server.lock:
                return {p.path for p in server.posted if p.status == 200} == {"/env", "/literal"}

        wait_for(both_delivered, what="both exporters to deliver")
        with server.lock:
            posted = list(server.posted)
        for post in posted:
            if post.path == "/env":
                assert post.headers["authorization"] == ENV_SECRET
                assert "x-key" not in post.headers
            else:
                assert post.headers["x-key"] == LITERAL_SECRET
                assert "authorization" not in post.headers

        # The collector's argv names the variable, not its value.
        collector_argv = cmdline(collector.proc.pid)
        assert b"env:UMON_TEST_AUTH" in collector_argv
        assert ENV_SECRET.encode() not in collector_argv
        # The exporter process, a child of the collector, has neither header in argv.
        runners = [
            pid for pid in children(collector.proc.pid) if b"umonitor.export.runner" in cmdline(pid)
        ]
        assert len(runners) == 1
        runner_argv = cmdline(runners[0]).rstrip(b"\0").split(b"\0")
        assert runner_argv[-3:] == [str(data).encode(), b"viaenv", b"literal"]
        for secret in (ENV_SECRET, LITERAL_SECRET):
            assert secret.encode() not in cmdline(runners[0])

        # Nothing the exporters keep holds a header value; their files are 0600.
        export_files = sorted((data / "export").iterdir())
        assert {p.name for p in export_files} >= {"viaenv.json", "literal.status.json"}
        for path in export_files:
            text = path.read_bytes()
            assert ENV_SECRET.encode() not in text and LITERAL_SECRET.encode() not in text
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
    finally:
        assert collector.stop() == 0
        server.stop()


def test_an_unset_header_variable_is_a_usage_error(tmp_path: Path) -> None:
    out = umonitor(
        "serve",
        "--data",
        str(tmp_path / "data"),
        "--listen",
        "127.0.0.1:0",
        "--export",
        "o=otlp+http://127.0.0.1:9/v1/logs?header=Authorization:env:UMON_SURELY_UNSET",
        timeout=30,
    )
    assert out.returncode == 2
    assert "environment variable UMON_SURELY_UNSET, which is not set" in out.stderr
