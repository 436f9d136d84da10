"""Syslog in, from util-linux `logger` (a real peer): UDP, TCP (LF and octet counting)."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

from tests.integration.conftest import Collector, free_port, start_collector, wait_for
from umonitor.store.names import sanitize_instance_name

HOST = sanitize_instance_name(socket.gethostname())


def logger(port: int, *args: str) -> None:
    done = subprocess.run(["logger", "--server", "127.0.0.1", "--port", str(port), *args],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode == 0, done.stderr


def syslog_records(c: Collector, name: str) -> list[dict[str, object]]:
    out = c.cli("logs", name, "--origin", "syslog", "-o", "json")
    return [json.loads(line) for line in out.stdout.splitlines()] if out.returncode == 0 else []


def test_logger_over_udp_and_tcp(tmp_path: Path) -> None:
    udp, tcp = free_port(), free_port()
    c = start_collector(tmp_path / "data", "--syslog-udp", f"127.0.0.1:{udp}",
                        "--syslog-tcp", f"127.0.0.1:{tcp}")  # fmt: skip
    try:
        sd = ["--sd-id", "example@32473", "--sd-param", 'eventID="1011"']
        logger(udp, "--udp", "--rfc5424", *sd, "-t", "myapp", "-p", "local3.warning",
               "--msgid", "ID47", "hello over udp")  # fmt: skip
        logger(tcp, "--tcp", "--rfc5424", "--octet-count", *sd, "-t", "myapp",
               "-p", "user.err", "hello over tcp, octet counted")  # fmt: skip
        logger(tcp, "--tcp", "--rfc3164", "-t", "oldapp", "-p", "daemon.info",
               "hello over tcp, bsd format")  # fmt: skip
        wait_for(lambda: len(syslog_records(c, HOST)) == 3, what="three syslog records")
        rows = syslog_records(c, HOST)
        by_message = {r["message"]: r for r in rows}
        udp_row = by_message["hello over udp"]
        assert udp_row["severity"] == "warning" and udp_row["origin"] == "syslog"
        fields = udp_row["fields"]
        assert isinstance(fields, dict)
        assert fields["facility"] == "local3" and fields["app"] == "myapp"
        assert fields["msgid"] == "ID47" and fields["example@32473.eventID"] == "1011"
        assert by_message["hello over tcp, octet counted"]["severity"] == "err"
        bsd = by_message["hello over tcp, bsd format"]
        assert bsd["severity"] == "info"
        assert isinstance(bsd["fields"], dict) and bsd["fields"]["app"] == "oldapp"
    finally:
        assert c.stop() == 0


def test_bad_frames_are_counted_and_kept(tmp_path: Path) -> None:
    udp, tcp = free_port(), free_port()
    c = start_collector(tmp_path / "data", "--syslog-udp", f"127.0.0.1:{udp}",
                        "--syslog-tcp", f"127.0.0.1:{tcp}")  # fmt: skip
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"\r\n\0", ("127.0.0.1", udp))  # empty once stripped: rejected
        with socket.create_connection(("127.0.0.1", tcp)) as s:
            s.sendall(b"99999999 <13>1 - - - - - - too long a count\n")
            s.settimeout(5)
            assert s.recv(100) == b""  # the listener closes that connection
        logger(tcp, "--tcp", "--rfc5424", "-t", "after", "still served")
        wait_for(lambda: any(r["message"] == "still served" for r in syslog_records(c, HOST)),
                 what="a good message after bad ones")  # fmt: skip
        # Reject logs are written off the event loop: soon, not necessarily yet.
        wait_for(lambda: len(list((c.data / "rejects").glob("syslog-*.log"))) == 2,
                 what="both listeners' reject logs")  # fmt: skip

        def rejected() -> int:
            status = json.loads((c.data / "collector.json").read_text())
            return sum(v["rejected"] for v in status["syslog"].values())

        wait_for(lambda: rejected() == 2, what="two rejects in the status")
    finally:
        assert c.stop() == 0


def test_syslog_over_tls(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    port = free_port()
    c = start_collector(tmp_path / "data", "--syslog-tls", f"127.0.0.1:{port}",
                        "--tls-cert", str(cert), "--tls-key", str(key))  # fmt: skip
    try:
        import ssl

        context = ssl.create_default_context(cafile=str(cert))
        message = b'<165>1 2026-11-26T10:00:00.000Z tlshost app 7 ID1 [x@1 k="v"] over tls'
        with (
            socket.create_connection(("127.0.0.1", port)) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as s,
        ):
            s.sendall(str(len(message)).encode() + b" " + message)
        wait_for(lambda: len(syslog_records(c, "tlshost")) == 1, what="a record over TLS")
        [row] = syslog_records(c, "tlshost")
        assert row["message"] == "over tls" and row["severity"] == "notice"
        assert row["time"] == "2026-11-26T10:00:00.000000Z"
        assert isinstance(row["fields"], dict) and row["fields"]["x@1.k"] == "v"
    finally:
        assert c.stop() == 0


def test_concurrent_connections_from_one_host_lose_nothing(tmp_path: Path) -> None:
    """Several TCP senders with the same hostname interleave: every message is kept."""
    port = free_port()
    c = start_collector(tmp_path / "data", "--syslog-tcp", f"127.0.0.1:{port}")
    try:
        socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
        for n in range(200):
            for i, s in enumerate(socks):
                s.sendall(f"<14>1 - samehost app - - - conn {i} msg {n}\n".encode())
                time.sleep(0.001)  # so that the collector reads the connections in turn
        for s in socks:
            s.close()
        wait_for(lambda: len(syslog_records(c, "samehost")) >= 800, what="800 records")
        time.sleep(0.5)
        got = sorted(r["message"] for r in syslog_records(c, "samehost"))
        assert got == sorted(f"conn {i} msg {n}" for n in range(200) for i in range(4))
    finally:
        assert c.stop() == 0


def relp_exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` on a new RELP connection; everything answered until it is closed."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        s.settimeout(10)
        out = b""
        while chunk := s.recv(4096):
            out += chunk
        return out


def test_relp_sessions_answer_in_order_and_refuse_misuse(tmp_path: Path) -> None:
    port = free_port()
    c = start_collector(tmp_path / "data", "--syslog-relp", f"127.0.0.1:{port}")
    try:
        msg = b"<13>1 2026-11-26T10:00:00Z relphost app - - - over relp"
        offers = b"relp_version=0\nrelp_software=test\ncommands=syslog"
        opening = b"1 open %d %s\n" % (len(offers), offers)
        answer = relp_exchange(port, opening + b"2 syslog %d %s\n3 close 0\n" % (len(msg), msg))
        assert answer.startswith(b"1 rsp ") and b"200 OK" in answer.split(b"\n")[0]
        assert b"\n2 rsp 6 200 OK\n3 rsp 6 200 OK\n" in answer
        [row] = syslog_records(c, "relphost")
        assert row["message"] == "over relp"
        # A message before open is refused, not stored; garbage ends the session.
        assert relp_exchange(port, b"1 syslog 5 hello\n").startswith(b"1 rsp ")
        assert b"500" in relp_exchange(port, b"1 syslog 5 hello\n")
        relp_exchange(port, b"this is not relp at all\n")
        assert [r["message"] for r in syslog_records(c, "relphost")] == ["over relp"]
        wait_for(lambda: len(list((c.data / "rejects").glob("syslog-relp-*.log"))) == 1,
                 what="the RELP listener's reject log")  # fmt: skip
    finally:
        assert c.stop() == 0
