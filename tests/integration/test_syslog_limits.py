"""Syslog intake under the limits native guests live under.

A syslog TCP stream and a RELP session count against the connection limits, are cut
by the slow-sender and handshake limits, stop being read over their instance's rate
and while the disk refuses writes; datagrams over the rate are dropped and counted.
Real collectors, real sockets, real files (the disk test mounts a 2 MiB tmpfs).
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

from tests.integration.conftest import free_port, start_collector, wait_for
from tests.integration.test_limits import closed, guard, well_behaved
from tests.integration.test_store_safety import (
    file_records,
    fill,
    store_status,
    unread_bytes,
)
from tests.integration.test_syslog_ingest import syslog_records


def frame(host: str, text: str) -> bytes:
    """One RFC 5424 message, LF-framed (RFC 6587 non-transparent framing)."""
    return f"<14>1 - {host} app - - - {text}\n".encode()


def still_open(sock: socket.socket) -> bool:
    sock.settimeout(0.3)
    try:
        return sock.recv(1) != b""
    except TimeoutError:
        return True
    except ConnectionResetError:
        return False


def test_syslog_streams_count_against_the_connection_limits(tmp_path: Path) -> None:
    tcp, relp = free_port(), free_port()
    c = start_collector(tmp_path / "data", "--max-per-source", "2",
                        "--syslog-tcp", f"127.0.0.1:{tcp}",
                        "--syslog-relp", f"127.0.0.1:{relp}")  # fmt: skip
    first = socket.create_connection(("127.0.0.1", tcp))
    first.sendall(frame("one", "counted in"))
    wait_for(lambda: len(syslog_records(c, "one")) == 1, what="the first stream's record")
    second = socket.create_connection(("127.0.0.1", relp))
    second.sendall(b"1 open 0\n")
    second.settimeout(20)
    answer = second.recv(4096)
    assert answer.startswith(b"1 rsp ") and b"200 OK" in answer  # a session: counted in
    third = socket.create_connection(("127.0.0.1", tcp))
    native = socket.create_connection(("127.0.0.1", c.port))
    try:
        assert closed(third) and closed(native)
        wait_for(lambda: guard(c).get("per_source") == 2, what="two over the limit")
        assert still_open(first) and still_open(second)
        first.close()
        second.close()
        # Their places are free again: a native guest gets in (reconnecting until the
        # collector has seen them go) and is served.
        well_behaved(c, "after", 20)
        assert len(c.records("after")) == 20
    finally:
        for s in (first, second, third, native):
            s.close()
        assert c.stop() == 0


def test_slow_syslog_senders_and_a_silent_relp_session_are_cut(tmp_path: Path) -> None:
    tcp, relp = free_port(), free_port()
    c = start_collector(tmp_path / "data", "--handshake-timeout", "1", "--frame-timeout", "1",
                        "--syslog-tcp", f"127.0.0.1:{tcp}",
                        "--syslog-relp", f"127.0.0.1:{relp}")  # fmt: skip
    quiet = socket.create_connection(("127.0.0.1", tcp))  # syslog need not speak first
    slow = socket.create_connection(("127.0.0.1", tcp))
    silent_relp = socket.create_connection(("127.0.0.1", relp))
    try:
        slow.sendall(frame("slowhost", "whole") + b"<14>1 - slowhost app - - - never ends")
        assert closed(slow) and closed(silent_relp)
        wait_for(lambda: guard(c).get("slow") == 1 and guard(c).get("handshake") == 1,
                 what="one slow sender and one RELP handshake counted")  # fmt: skip
        assert [r["message"] for r in syslog_records(c, "slowhost")] == ["whole"]
        assert still_open(quiet)  # swept every second all along, never cut
        quiet.sendall(frame("quiet", "late but welcome"))
        wait_for(lambda: len(syslog_records(c, "quiet")) == 1, what="the quiet stream's record")
    finally:
        for s in (quiet, slow, silent_relp):
            s.close()
        assert c.stop() == 0


def test_syslog_over_its_rate_is_slowed_on_tcp_and_dropped_on_udp(tmp_path: Path) -> None:
    tcp, udp = free_port(), free_port()
    c = start_collector(tmp_path / "data", "--rate-limit", "100",
                        "--syslog-tcp", f"127.0.0.1:{tcp}",
                        "--syslog-udp", f"127.0.0.1:{udp}")  # fmt: skip
    try:
        with socket.create_connection(("127.0.0.1", tcp)) as s:
            s.sendall(b"".join(frame("flood", f"tcp {n}") for n in range(1000)))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for n in range(600):
                s.sendto(frame("burst", f"udp {n}")[:-1], ("127.0.0.1", udp))
                time.sleep(0.001)
        # TCP is read slower, never dropped: all 1000, in order.
        wait_for(lambda: len(syslog_records(c, "flood")) == 1000, timeout=60, what="1000")
        rows = syslog_records(c, "flood")
        assert [r["message"] for r in rows] == [f"tcp {n}" for n in range(1000)]
        # UDP cannot be held back: what is over the rate is dropped, each drop counted.
        out = c.cli("ls", "-o", "json")
        by_name = {r["name"]: r for r in map(json.loads, out.stdout.splitlines()) if "name" in r}
        stored = len(syslog_records(c, "burst"))
        assert 100 <= stored < 600
        assert by_name["burst"]["throttled"] == 600 - stored
        assert by_name["flood"]["throttled"] > 0
    finally:
        assert c.stop() == 0


def test_a_full_disk_stops_reading_syslog_then_everything_arrives_once(
    tmp_path: Path, small_disk: Path
) -> None:
    tcp = free_port()
    c = start_collector(small_disk, "--no-index", "--syslog-tcp", f"127.0.0.1:{tcp}")
    sock = socket.create_connection(("127.0.0.1", tcp))
    sent = 0

    def send(count: int, pad: int = 0) -> None:
        nonlocal sent
        data = b"".join(frame("sysdisk", f"m {sent + n} " + "p" * pad) for n in range(count))
        sock.sendall(data)
        sent += count

    try:
        send(100)
        wait_for(lambda: len(syslog_records(c, "sysdisk")) == 100, what="100 before the fill")
        filler = fill(small_disk)
        send(300)
        wait_for(lambda: store_status(small_disk)["state"] == "disk", what="the disk state")
        # Reading stopped: what is sent now waits in the socket, not in memory.
        sock.settimeout(20)
        send(1500, pad=300)
        wait_for(lambda: unread_bytes(tcp) > 30_000, what="unread bytes")
        before = unread_bytes(tcp)
        time.sleep(1.5)  # a retry or more later, still nothing read
        assert unread_bytes(tcp) >= before
        filler.unlink()
        wait_for(lambda: unread_bytes(tcp) == 0, timeout=60, what="the socket read dry")
        wait_for(lambda: store_status(small_disk)["state"] == "ok", what="the ok state")
        send(50)
        sock.close()
    finally:
        sock.close()
        assert c.stop() == 0
    messages = [message for _, _, _, message in file_records(small_disk, "sysdisk")]
    assert [m.split()[1] for m in messages] == [str(n) for n in range(sent)]
