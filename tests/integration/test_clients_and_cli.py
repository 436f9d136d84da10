"""Python clients, the CLI against a live collector, and the C library's control frames."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.integration.conftest import Collector, umonitor, wait_for
from umonitor.guest.client import AsyncClient, Client
from umonitor.guest.log_handler import LogHandler
from umonitor.protocol import frame_codec as fc
from umonitor.records import Origin, Record, Severity
from umonitor.store.writer import Store


def test_asyncio_client(collector: Collector) -> None:
    async def main() -> bool:
        client = AsyncClient("127.0.0.1", collector.port, "async-guest")
        for i in range(1, 101):
            client.log(Severity.NOTICE, f"n={i}", fields={"i": i})
        await client.start()
        return await client.close(10)

    assert asyncio.run(main())
    rows = collector.records("async-guest")
    assert [r["message"] for r in rows] == [f"n={i}" for i in range(1, 101)]


def test_logging_handler(collector: Collector) -> None:
    client = Client("127.0.0.1", collector.port, "py-logging")
    logger = logging.getLogger("test-handler")
    logger.propagate = False
    handler = LogHandler(client)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        logger.debug("dbg")
        logger.info("hello %s", "world")
        logger.warning("careful", extra={"fields": {"disk": "sda"}})
        logger.error("bad")
        logger.critical("worse")
    finally:
        logger.removeHandler(handler)
        handler.close()
    rows = collector.records("py-logging")
    assert [(r["severity"], r["message"]) for r in rows] == [
        ("debug", "dbg"),
        ("info", "hello world"),
        ("warning", "careful"),
        ("err", "bad"),
        ("crit", "worse"),
    ]
    assert rows[2]["fields"] == {"disk": "sda", "logger": "test-handler"}
    assert rows[0]["file"].endswith("test_clients_and_cli.py")
    assert rows[0]["function"] == "test_logging_handler"


def test_send_command(collector: Collector) -> None:
    out = umonitor(
        "send",
        "--to",
        f"127.0.0.1:{collector.port}",
        "--name",
        "shell",
        "-p",
        "err",
        "-F",
        "user=root",
        "-F",
        "path=/tmp/x y",
        "disk",
        "full",
    )
    assert out.returncode == 0, out.stderr
    [row] = collector.records("shell")
    assert (row["severity"], row["message"], row["fields"]) == (
        "err",
        "disk full",
        {"user": "root", "path": "/tmp/x y"},
    )


def test_ls_shows_connected_guests(collector: Collector) -> None:
    client = Client("127.0.0.1", collector.port, "online")
    client.log(Severity.INFO, "here")
    assert client.flush(5)
    try:

        def connected() -> bool:
            out = collector.cli("ls", "-o", "json")
            rows = {r["name"]: r for r in map(json.loads, out.stdout.splitlines())}
            return "online" in rows and rows["online"]["connected"] is True

        wait_for(connected, what="ls to show the guest connected")
        text = collector.cli("ls").stdout
        assert any(line.startswith("online") and "connected" in line for line in text.splitlines())
    finally:
        client.close()

    def gone() -> bool:
        out = collector.cli("ls", "-o", "json")
        rows = {r["name"]: r for r in map(json.loads, out.stdout.splitlines())}
        return rows["online"]["connected"] is False

    wait_for(gone, what="ls to show the guest gone")


def test_logs_follow_across_instances(collector: Collector) -> None:
    follower = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "umonitor",
            "logs",
            "-f",
            "--data",
            str(collector.data),
            "-o",
            "json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)
        clients = [Client("127.0.0.1", collector.port, f"live-{i}") for i in range(2)]
        for n in range(3):
            for i, client in enumerate(clients):
                client.log(Severity.INFO, f"live {i}.{n}")
        for client in clients:
            assert client.close(5)
        assert follower.stdout is not None
        seen = []
        deadline = time.monotonic() + 20
        while len(seen) < 6 and time.monotonic() < deadline:
            line = follower.stdout.readline()
            if line:
                seen.append(json.loads(line))
        assert sorted(r["message"] for r in seen) == sorted(
            f"live {i}.{n}" for i in range(2) for n in range(3)
        )
        assert {r["instance"] for r in seen} == {"live-0", "live-1"}
    finally:
        follower.terminate()
        follower.communicate(timeout=10)


def test_logs_follow_prints_each_record_once_whatever_its_time(tmp_path: Path) -> None:
    """Records indexed in one round whose times are not in index order ("a" is indexed
    first but is newer than "b") are printed once each, in time order, and never again."""
    data = tmp_path / "data"
    Store(data).close()
    command = ["logs", "-f", "-n", "0", "--data", str(data), "-o", "json"]
    follower = subprocess.Popen(
        [sys.executable, "-m", "umonitor", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)
        follower.send_signal(signal.SIGSTOP)  # both arrive before its next round
        store = Store(data)
        now = time.time_ns()
        for name, wall in (("a", now + 10_000_000), ("b", now)):
            log = store.log(name)
            store.begin_boot(log, "ab" * 16, "umonitor-py/1.0.0", "", name)
            record = Record(1, Severity.INFO, f"from {name}", wall_ns=wall)
            store.add_records(log, "ab" * 16, [record], Origin.APP, now)
        store.close()
        follower.send_signal(signal.SIGCONT)
        time.sleep(2.0)  # eight more rounds, each of which would print a repeat
    finally:
        follower.terminate()
        out, err = follower.communicate(timeout=10)
    messages = [json.loads(line)["message"] for line in out.splitlines()]
    assert messages == ["from b", "from a"], (messages, err)


def test_logs_text_follow_prefixes_names(collector: Collector) -> None:
    for name in ("alpha", "beta"):
        with Client("127.0.0.1", collector.port, name) as client:
            client.log(Severity.WARNING, f"from {name}")
    out = collector.cli("logs", "-p", "warning")
    lines = out.stdout.splitlines()
    assert any(" alpha warning from alpha" in line for line in lines)
    assert any(" beta warning from beta" in line for line in lines)


def test_c_library_answers_ping_and_set_level(c_programs: dict[str, Path]) -> None:
    """A test host (our codec, real sockets) drives the real C library."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    guest = subprocess.Popen(
        [
            str(c_programs["numbered_guest"]),
            "127.0.0.1",
            str(port),
            "ctl",
            "400",
            "--flush-every=50",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    conn, _ = server.accept()
    conn.settimeout(30)
    decoder = fc.FrameDecoder(fc.Peer.GUEST)
    hello = None
    records: list[fc.Record] = []
    pong = None
    answers: list[fc.Event] = []
    level_set = False
    done = False
    try:
        while not done:
            data = conn.recv(65536)
            if not data:
                break
            decoder.receive_data(data)
            for event in decoder.next_events():
                if isinstance(event, fc.Hello):
                    hello = event
                    conn.sendall(fc.encode(fc.Ack(0)) + fc.encode(fc.Ping(0xC0FFEE)))
                elif isinstance(event, fc.Pong):
                    pong = event.nonce
                elif isinstance(event, fc.Level):
                    answers.append(event)
                elif isinstance(event, fc.Record):
                    records.append(event)
                    if event.seq == 100 and not level_set:
                        level_set = True
                        conn.sendall(fc.encode(fc.SetLevel(Severity.ERR)))
                elif isinstance(event, fc.Bye):
                    done = True
            if records:
                conn.sendall(fc.encode(fc.Ack(records[-1].seq)))
    finally:
        conn.close()
        guest.communicate(timeout=30)
        server.close()
    assert hello is not None and hello.name == "ctl" and hello.library.startswith("umonitor-c/")
    assert hello.level == Severity.DEBUG  # the level in force, said in HELLO
    assert pong == 0xC0FFEE
    assert answers == [fc.Level(Severity.ERR)]  # SET_LEVEL answered once
    seqs = [r.seq for r in records]
    assert seqs == sorted(seqs) and seqs == list(range(1, len(seqs) + 1))
    late = [r for r in records if r.seq > 160]
    assert late and all(r.severity <= Severity.ERR for r in late)
    assert any(r.severity > Severity.ERR for r in records if r.seq <= 100)
    assert os.path.exists(c_programs["numbered_guest"])
