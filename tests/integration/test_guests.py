"""Many real guests (C and Python processes) against one real collector."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

from tests.integration.conftest import (
    Collector,
    file_seqs,
    python_guest,
    start_collector,
    umonitor,
    wait_for,
)
from umonitor.guest.client import Client
from umonitor.protocol import frame_codec as fc
from umonitor.records import Record, Severity


def check_numbered(c: Collector, name: str, count: int, c_library: bool) -> None:
    assert file_seqs(c.data, name) == list(range(1, count + 1))
    rows = c.records(name)
    assert [r["seq"] for r in rows] == list(range(1, count + 1))
    assert [r["message"] for r in rows] == [f"n={i}" for i in range(1, count + 1)]
    assert [r["severity"] for r in rows] == [Severity(i % 8).label for i in range(1, count + 1)]
    # The C library adds the call stack to records at err or worse (i % 8 <= 3).
    stacks = ("umon.stack", "umon.text")
    for i, r in enumerate(rows, 1):
        fields = dict(r["fields"])
        if c_library and i % 8 <= Severity.ERR:
            assert all(fields.pop(k, "").startswith("0x") for k in stacks), r
        assert fields == {"i": str(i)}, r


def test_fifty_concurrent_guests_c_and_python(
    collector: Collector, c_programs: dict[str, Path]
) -> None:
    count = 300
    procs = []
    for i in range(25):
        procs.append(
            subprocess.Popen(
                [
                    str(c_programs["numbered_guest"]),
                    "127.0.0.1",
                    str(collector.port),
                    f"c-{i}",
                    str(count),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
        procs.append(python_guest(collector.port, f"py-{i}", count))
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, (out, err)
    for i in range(25):
        check_numbered(collector, f"c-{i}", count, c_library=True)
        check_numbered(collector, f"py-{i}", count, c_library=False)
    rows = c_programs and collector.records("c-3")
    assert rows[0]["file"].endswith("numbered_guest.c") and rows[0]["function"] == "log_numbered"


def test_records_logged_before_the_network_are_kept(
    collector: Collector, c_programs: dict[str, Path]
) -> None:
    out = subprocess.run(
        [
            str(c_programs["numbered_guest"]),
            "127.0.0.1",
            str(collector.port),
            "early",
            "100",
            "--before-network",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out
    check_numbered(collector, "early", 100, c_library=True)


def test_new_boot_keeps_history(collector: Collector) -> None:
    for boot in (b"a" * 16, b"b" * 16):
        client = Client("127.0.0.1", collector.port, "rebooting", boot_id=boot)
        for i in range(1, 4):
            client.log(Severity.INFO, f"boot {boot[:1].decode()} record {i}")
        assert client.close(5)
    rows = collector.records("rebooting")
    assert [(r["boot"], r["seq"]) for r in rows] == [
        ("61" * 16, 1),
        ("61" * 16, 2),
        ("61" * 16, 3),
        ("62" * 16, 1),
        ("62" * 16, 2),
        ("62" * 16, 3),
    ]


def test_reconnect_replays_without_duplicates(collector: Collector) -> None:
    client = Client("127.0.0.1", collector.port, "replayer")
    for i in range(1, 51):
        client.log(Severity.INFO, f"n={i}")
    assert client.flush(10)
    # The guest forgets the ACKs it got (as if they were lost) and sends all again.
    sock = client._sock
    assert sock is not None
    sock.close()
    client._sock = None
    client.session.connection_lost()
    client.session.unacked.extend(
        (i, fc.encode_record(Record(i, Severity.INFO, f"n={i}"))) for i in range(1, 51)
    )
    client.session.unacked = type(client.session.unacked)(sorted(client.session.unacked))
    client.session.acked = 0
    for i in range(51, 61):
        client.log(Severity.INFO, f"n={i}")
    assert client.close(10)
    assert file_seqs(collector.data, "replayer") == list(range(1, 61))


def test_collector_restart_guest_replays_its_tail(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = start_collector(data)
    port = first.port
    client = Client("127.0.0.1", port, "survivor")
    for i in range(1, 101):
        client.log(Severity.INFO, f"n={i}")
    assert client.flush(10)
    assert first.stop() == 0
    for i in range(101, 201):  # logged while no collector runs: buffered
        client.log(Severity.WARNING, f"n={i}")
    assert not client.session.all_acked
    second = start_collector(data, port=port)
    try:
        assert client.flush(20)
        client.close()
    finally:
        assert second.stop() == 0
    assert file_seqs(data, "survivor") == list(range(1, 201))


def test_a_thousand_concurrent_connections(collector: Collector) -> None:
    socks = []
    try:
        for i in range(1000):
            s = socket.create_connection(("127.0.0.1", collector.port))
            s.sendall(
                fc.PREFACE
                + fc.encode_hello(fc.Hello(f"many-{i}", os.urandom(16)))
                + fc.encode(Record(1, Severity.INFO, f"hello from {i}"))
            )
            socks.append(s)
        acked = 0
        for s in socks:
            s.settimeout(20)
            decoder = fc.FrameDecoder(fc.Peer.HOST, expect_preface=False)
            while True:
                decoder.receive_data(s.recv(4096))
                events = decoder.next_events()
                if any(isinstance(e, fc.Ack) and e.seq == 1 for e in events):
                    acked += 1
                    break
        assert acked == 1000
        # The status file behind `ls` is rewritten shortly after changes, not per ACK.
        wait_for(
            lambda: collector.cli("ls", "-o", "json").stdout.count('"connected": true') == 1000,
            what="ls to show 1000 connected instances",
        )
    finally:
        for s in socks:
            s.close()
    assert len(list((collector.data / "instances").iterdir())) == 1000


def test_text_and_legacy_connections(collector: Collector) -> None:
    with socket.create_connection(("127.0.0.1", collector.port)) as s:
        s.sendall(b"warning: from nc\nplain text\n")
    with socket.create_connection(("127.0.0.1", collector.port)) as s:
        s.sendall(b"mFunction main called\nwNULL pointer\0fDivision by zero\nrReturn 3")
        time.sleep(0.3)  # the last message has no terminator: ended by going quiet
    wait_for(lambda: len(collector.records("127.0.0.1")) == 6, what="six records")
    rows = collector.records("127.0.0.1")
    assert [(r["severity"], r["message"]) for r in rows] == [
        ("warning", "from nc"),
        ("info", "plain text"),
        ("info", "Function main called"),
        ("warning", "NULL pointer"),
        ("err", "Division by zero"),
        ("notice", "Return 3"),
    ]
    assert rows[-1]["kind"] == "exit"


def test_udp_datagrams(collector: Collector) -> None:
    hello = fc.Hello("udp-guest", os.urandom(16))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(1, 4):
            s.sendto(
                fc.encode_datagram(hello, Record(i, Severity.NOTICE, f"dgram {i}")),
                ("127.0.0.1", collector.port),
            )
        s.sendto(b"junk", ("127.0.0.1", collector.port))
    wait_for(
        lambda: (
            (collector.data / "instances" / "udp-guest" / "app.log").exists()
            and len(file_seqs(collector.data, "udp-guest")) == 3
        ),
        what="datagrams",
    )
    assert [r["message"] for r in collector.records("udp-guest")] == [
        "dgram 1",
        "dgram 2",
        "dgram 3",
    ]


def test_dial_mode_with_a_legacy_guest(tmp_path: Path, c_programs: dict[str, Path]) -> None:
    from tests.integration.conftest import free_port

    port = free_port()
    guest = subprocess.Popen(
        [str(c_programs["legacy_guest"]), str(port), "8"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    c = start_collector(tmp_path / "data", "--dial", f"old-guest=127.0.0.1:{port}")
    try:
        guest.communicate(timeout=30)
        assert guest.returncode == 0
        wait_for(
            lambda: (
                (c.data / "instances" / "old-guest" / "app.log").exists()
                and len(file_seqs(c.data, "old-guest")) == 8
            ),
            what="legacy records",
        )
    finally:
        assert c.stop() == 0
    rows = c.records("old-guest")
    assert [r["message"] for r in rows] == [f"legacy {i}" for i in range(1, 9)]
    assert [r["severity"] for r in rows][:4] == ["info", "warning", "err", "notice"]


def test_sigterm_stores_and_acknowledges_what_arrived(tmp_path: Path) -> None:
    c = start_collector(tmp_path / "data")
    client = Client("127.0.0.1", c.port, "late")
    for i in range(1, 2001):
        client.log(Severity.INFO, f"n={i}")
    client.poll()
    time.sleep(0.5)  # in the collector's socket buffer, maybe not yet acknowledged
    assert c.stop(15) == 0  # SIGTERM
    client.flush(2)  # read the ACKs sent while shutting down
    client.close(0)
    assert client.session.acked == 2000
    assert file_seqs(c.data, "late") == list(range(1, 2001))
    assert not (c.data / "collector.json").exists()


def test_port_in_use_is_one_clear_line(collector: Collector, tmp_path: Path) -> None:
    out = umonitor(
        "serve",
        "--data",
        str(tmp_path / "other"),
        "--listen",
        f"127.0.0.1:{collector.port}",
        timeout=30,
    )
    assert out.returncode == 2
    assert "already in use" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_pure_python_collector_stores_the_same(tmp_path: Path, c_programs: dict[str, Path]) -> None:
    """The collector without its C accelerator: the reference path, end to end."""
    c = start_collector(tmp_path / "data", env={"UMONITOR_PURE_PYTHON": "1"})
    try:
        procs = [
            subprocess.Popen(
                [str(c_programs["numbered_guest"]), "127.0.0.1", str(c.port), f"pure-{i}", "500"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(4)
        ]
        procs.append(python_guest(c.port, "pure-py", 500))
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, (out, err)
        for name in ("pure-0", "pure-1", "pure-2", "pure-3", "pure-py"):
            check_numbered(c, name, 500, c_library=name != "pure-py")
    finally:
        assert c.stop() == 0


def test_dial_mode_reconnects_when_the_guest_comes_back(
    tmp_path: Path, c_programs: dict[str, Path]
) -> None:
    from tests.integration.conftest import free_port

    port = free_port()
    c = start_collector(tmp_path / "data", "--dial", f"comeback=127.0.0.1:{port}")
    try:
        for round_ in range(2):  # the guest is down at first, then restarts once
            time.sleep(0.5)
            guest = subprocess.run(
                [str(c_programs["legacy_guest"]), str(port), "3"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert guest.returncode == 0, guest
            wait_for(
                lambda n=round_: (
                    (c.data / "instances" / "comeback" / "app.log").exists()
                    and len(file_seqs(c.data, "comeback")) == 3 * (n + 1)
                ),
                what="records after a reconnect",
            )
    finally:
        assert c.stop() == 0
    assert len(c.records("comeback")) == 6


def test_unusable_data_dir_is_one_clear_line(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    out = umonitor("serve", "--data", str(not_a_dir), "--listen", "127.0.0.1:0")
    assert out.returncode == 2
    assert "is a file" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_data_dir_that_cannot_be_created_is_one_clear_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = umonitor("serve", "--data", str(blocker / "sub"), "--listen", "127.0.0.1:0")
    assert out.returncode == 2
    assert "cannot use data directory" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
