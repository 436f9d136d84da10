"""A guest speaking the 2018 wire format exactly (no delimiter) against a real collector.

``seed_guest`` uses only the original API and is built with
``-DUMON_COMPAT_WIRE_2018``: each message is a level byte and its text in one
``send``, with nothing between messages. The collector dials it (``serve --dial``)
and must store one record per message, as the 2018 host did (docs/protocol.md §4).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.conftest import (
    C_SRC,
    ROOT,
    Collector,
    file_seqs,
    free_port,
    start_collector,
    wait_for,
)

STRICT = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic"]
LEVELS = [("info", "log"), ("warning", "log"), ("err", "log"), ("notice", "exit")]


def build_seed_guest(out: Path, *defines: str) -> Path:
    """tests/c/seed_guest.c with the compat library, built with ``defines``."""
    cc = shutil.which("gcc")
    assert cc, "gcc is needed: apt-get install gcc"
    exe = out / "seed_guest"
    cmd = [
        cc,
        *STRICT,
        *defines,
        f"-I{C_SRC}",
        "-o",
        str(exe),
        str(ROOT / "tests" / "c" / "seed_guest.c"),
        str(C_SRC / "umonitor_compat.c"),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return exe


@pytest.fixture(scope="module")
def seed_guest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seed guest speaking the 2018 wire format."""
    return build_seed_guest(tmp_path_factory.mktemp("seed"), "-DUMON_COMPAT_WIRE_2018")


def read_each_recv(port: int, timeout: float = 30) -> list[bytes]:
    """Connect to a listening guest and return what each ``recv`` gave, until it closes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
            break
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    reads = []
    with sock:
        while data := sock.recv(65536):
            reads.append(data)
    return reads


@pytest.mark.parametrize(
    ("defines", "terminator", "as_init"),
    [
        pytest.param([], b"\n", False, id="default"),
        pytest.param(["-DUMON_COMPAT_WIRE_2018"], b"", False, id="2018"),
        pytest.param(["-DUMON_COMPAT_WIRE_2018"], b"", True, id="2018-run-as-by-init"),
    ],
)
def test_what_the_compat_library_writes(
    tmp_path: Path, defines: list[str], terminator: bytes, as_init: bool
) -> None:
    """One write per message, 100 ms apart, so each read on loopback is one message.

    ``as_init``: one argument of umon.* words, as an image's /init runs the app.
    """
    exe = build_seed_guest(tmp_path, *defines)
    port = free_port()
    args = [str(port), "5", "100"]
    if as_init:
        args = [f'umon.ip=10.0.2.15/24 umon.name="seed guest" umon.port={port} umon.count=5']
        args[0] += " umon.gap_ms=100"
    guest = subprocess.Popen([str(exe), *args], stderr=subprocess.PIPE, text=True)
    try:
        reads = read_each_recv(port)
        _, err = guest.communicate(timeout=30)
    finally:
        if guest.poll() is None:
            guest.kill()
            guest.communicate()
    assert guest.returncode == 0, err
    levels = b"mwfrm"
    assert reads == [levels[i - 1 : i] + b"seed message %d" % i + terminator for i in range(1, 6)]


def test_seed_guest_without_delimiters_gives_one_record_per_message(
    tmp_path: Path, seed_guest: Path
) -> None:
    count = 16
    port = free_port()
    guest = subprocess.Popen(
        [str(seed_guest), str(port), str(count), "40"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    c = start_collector(tmp_path / "data", "--dial", f"seed=127.0.0.1:{port}")
    try:
        out, err = guest.communicate(timeout=60)
        assert guest.returncode == 0, (out, err)
        # The guest waited 1 s after its last message: everything has been read. Give
        # the store a moment, then let the assertions below say what was stored.
        wait_for(lambda: (c.data / "instances" / "seed" / "app.log").exists(), what="a log")
        deadline = time.monotonic() + 5
        while len(file_seqs(c.data, "seed")) < count and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        if guest.poll() is None:
            guest.kill()
            guest.communicate()
        assert c.stop() == 0
    rows = c.records("seed")
    assert [r["message"] for r in rows] == [f"seed message {i}" for i in range(1, count + 1)]
    assert [(r["severity"], r["kind"]) for r in rows] == [LEVELS[i % 4] for i in range(count)]
    assert [r["seq"] for r in rows] == list(range(1, count + 1))


def test_sniffed_legacy_connection_keeps_the_reads_it_waited_for(collector: Collector) -> None:
    """Short 2018 messages, each in its own write, before sniffing can decide.

    The first two are shorter than what sniffing needs to see, so they wait in the
    connection's head; they must still come out as one record per write.
    """
    writes = [b"mUp", b"wLow", b"fDisk full!", b"rDone"]
    with socket.create_connection(("127.0.0.1", collector.port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for data in writes:
            s.sendall(data)
            time.sleep(0.03)  # well under the 100 ms the collector waits when sniffing
    wait_for(lambda: len(collector.records("127.0.0.1")) >= 4, what="four records")
    rows = collector.records("127.0.0.1")
    assert [(r["severity"], r["kind"], r["message"]) for r in rows] == [
        ("info", "log", "Up"),
        ("warning", "log", "Low"),
        ("err", "log", "Disk full!"),
        ("notice", "exit", "Done"),
    ]


def test_dialed_guest_with_short_messages(tmp_path: Path) -> None:
    """A dialed guest's first byte decides its dialect: short messages are not held."""
    writes = [b"mA", b"wB", b"fC", b"rD", b"m"]
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(30)
        port = server.getsockname()[1]
        c = start_collector(tmp_path / "data", "--dial", f"short=127.0.0.1:{port}")
        try:
            conn, _ = server.accept()
            with conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                for data in writes:
                    conn.sendall(data)
                    time.sleep(0.03)
                log = c.data / "instances" / "short" / "app.log"
                wait_for(
                    lambda: log.exists() and len(file_seqs(c.data, "short")) >= 5,
                    what="five records",
                )
        finally:
            assert c.stop() == 0
    rows = c.records("short")
    assert [(r["severity"], r["message"]) for r in rows] == [
        ("info", "A"),
        ("warning", "B"),
        ("err", "C"),
        ("notice", "D"),
        ("info", ""),
    ]
