"""Limits: connections per source, handshake and slow-sender timeouts, rate per instance.

Each test runs a real collector with one limit set low, provokes it with real
sockets, and checks that the offender is cut off, that the hit is counted where
``umonitor ls`` shows it, and that a well-behaved guest next to it loses nothing.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

from tests.integration.conftest import Collector, start_collector, wait_for
from umonitor.guest.client import Client
from umonitor.protocol import frame_codec as fc
from umonitor.records import Record, Severity


def guard(collector: Collector) -> dict[str, int]:
    out = collector.cli("ls", "-o", "json")
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    found = [r["collector"] for r in rows if "collector" in r]
    return found[0] if found else {}


def closed(sock: socket.socket, timeout: float = 20) -> bool:
    """Whether the collector closed ``sock`` (reading past any ERROR frame)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    return True


def well_behaved(collector: Collector, name: str, count: int) -> None:
    client = Client("127.0.0.1", collector.port, name)
    try:
        for n in range(count):
            client.log(Severity.INFO, f"{name} {n}")
        assert client.flush(30)
    finally:
        client.close()


def acked_through(sock: socket.socket, seq: int) -> None:
    """Read ACKs until one covers ``seq``; an ERROR or a close fails the test."""
    decoder = fc.FrameDecoder(fc.Peer.HOST, expect_preface=False)
    sock.settimeout(20)
    acked = 0
    while acked < seq:
        data = sock.recv(4096)
        assert data, "the collector closed the connection"
        decoder.receive_data(data)
        for event in decoder.next_events():
            assert not isinstance(event, fc.ErrorFrame), event
            if isinstance(event, fc.Ack):
                acked = event.seq


def test_connections_per_source(tmp_path: Path) -> None:
    collector = start_collector(tmp_path / "data", "--max-per-source", "3")
    socks = [socket.create_connection(("127.0.0.1", collector.port)) for _ in range(5)]
    try:
        wait_for(lambda: guard(collector).get("per_source") == 2, what="two over the limit")
        # Two of them were closed at once; three stay open.
        open_ones = 0
        for s in socks:
            s.settimeout(0.5)
            try:
                open_ones += s.recv(1) != b""
            except TimeoutError:
                open_ones += 1
            except ConnectionResetError:
                pass
        assert open_ones == 3
    finally:
        for s in socks:
            s.close()
    well_behaved(collector, "after", 10)  # the slots came back
    assert collector.stop() == 0


def test_silent_and_slow_senders_are_cut(tmp_path: Path) -> None:
    collector = start_collector(
        tmp_path / "data", "--handshake-timeout", "1", "--frame-timeout", "1"
    )
    silent = socket.create_connection(("127.0.0.1", collector.port))
    slow = socket.create_connection(("127.0.0.1", collector.port))
    try:
        frame = fc.encode(Record(1, Severity.INFO, "x" * 1000))
        slow.sendall(fc.PREFACE + fc.encode_hello(fc.Hello("slowpoke", os.urandom(16))))
        slow.sendall(frame[:10])
        started = time.monotonic()
        well_behaved(collector, "steady", 200)
        # Trickle one byte at a time: a frame that never completes in time.
        slow.settimeout(0.2)
        cut = False
        for byte in frame[10:60]:
            try:
                slow.sendall(bytes([byte]))
                if slow.recv(4096) == b"":
                    cut = True
                    break
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                cut = True
                break
        assert cut or closed(slow)
        assert closed(silent)
        assert time.monotonic() - started > 0.5  # not closed before a limit could apply
        wait_for(
            lambda: guard(collector).get("handshake") == 1 and guard(collector).get("slow") == 1,
            what="one handshake and one slow-sender timeout counted",
        )
        assert len(collector.records("steady")) == 200
        text = collector.cli("ls").stdout
        assert "handshake timeouts 1" in text and "slow-sender timeouts 1" in text
    finally:
        silent.close()
        slow.close()
        assert collector.stop() == 0


def test_a_peer_that_reads_a_trickle_of_its_replies_is_cut_as_unread(tmp_path: Path) -> None:
    """PINGs by the megabyte, a few PONGs read now and then: the collector stops reading a
    peer that does not read its replies, and cuts it once the frame timeout has passed;
    the cut is counted as unread, and a guest that reads its ACKs never is."""
    collector = start_collector(tmp_path / "data", "--frame-timeout", "3")
    peer = socket.socket()
    try:
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        peer.connect(("127.0.0.1", collector.port))
        peer.sendall(fc.PREFACE + fc.encode_hello(fc.Hello("trickle", os.urandom(16))))
        pings = b"".join(fc.encode(fc.Ping(i)) for i in range(20000))
        peer.settimeout(0.1)
        cut = False
        deadline = time.monotonic() + 120
        while not cut and time.monotonic() < deadline:
            try:
                peer.send(pings)
            except TimeoutError:
                pass
            except (BrokenPipeError, ConnectionResetError):
                cut = True
                break
            try:
                if peer.recv(2048) == b"":  # a trickle: far less than it is sent
                    cut = True
            except TimeoutError:
                pass
            except ConnectionResetError:
                cut = True
        assert cut, "the trickle reader was never cut"
        wait_for(lambda: guard(collector).get("unread") == 1, what="one unread cut counted")
        well_behaved(collector, "steady", 50)  # its ACKs are read: never counted as unread
        assert guard(collector).get("unread") == 1
    finally:
        peer.close()
        assert collector.stop() == 0


def test_a_guest_streaming_across_frame_boundaries_is_not_a_slow_sender(
    tmp_path: Path,
) -> None:
    """Every write ends inside a frame for longer than the frame timeout: data flows,
    so the guest is not cut (only a frame that itself takes too long is)."""
    collector = start_collector(tmp_path / "data", "--frame-timeout", "1")
    frames = [fc.encode(Record(n, Severity.INFO, f"piece {n}")) for n in range(1, 201)]
    # The second half of one frame and the first half of the next: every write, and so
    # every read, ends inside a frame.
    halves = [len(f) // 2 for f in frames]
    pieces = [frames[0][: halves[0]]] + [
        frames[i][halves[i] :] + frames[i + 1][: halves[i + 1]] for i in range(len(frames) - 1)
    ]
    pieces.append(frames[-1][halves[-1] :])
    try:
        with socket.create_connection(("127.0.0.1", collector.port)) as s:
            s.sendall(fc.PREFACE + fc.encode_hello(fc.Hello("streamer", os.urandom(16))))
            for piece in pieces:  # ~4 s of pieces 20 ms apart
                s.sendall(piece)
                time.sleep(0.02)
            acked_through(s, 200)
        assert [r["seq"] for r in collector.records("streamer")] == list(range(1, 201))
        assert "slow" not in guard(collector)
    finally:
        assert collector.stop() == 0


def test_a_stalled_collector_does_not_blame_its_guests(tmp_path: Path) -> None:
    """The collector stops (SIGSTOP) while a guest is mid-frame; the guest sends the rest
    meanwhile. When the collector goes on, its bytes are waiting to be read: not slow.

    Both event loops poll sockets before they run timers after a stall, and the sweep
    also asks the kernel (FIONREAD) whether bytes are waiting before it blames a guest.
    """
    collector = start_collector(tmp_path / "data", "--frame-timeout", "1")
    frames = b"".join(fc.encode(Record(n, Severity.INFO, f"stalled {n}")) for n in range(1, 11))
    try:
        with socket.create_connection(("127.0.0.1", collector.port)) as s:
            s.sendall(fc.PREFACE + fc.encode_hello(fc.Hello("patient", os.urandom(16))))
            s.sendall(frames[:7])  # half a frame, read before the stop
            time.sleep(0.5)
            collector.proc.send_signal(signal.SIGSTOP)
            try:
                s.sendall(frames[7:])
                time.sleep(2.5)  # longer than the frame timeout
            finally:
                collector.proc.send_signal(signal.SIGCONT)
            acked_through(s, 10)
        assert "slow" not in guard(collector)
    finally:
        assert collector.stop() == 0


def test_rate_limit_slows_a_flood_without_losing_it(tmp_path: Path) -> None:
    collector = start_collector(tmp_path / "data", "--rate-limit", "500")
    try:
        well_behaved(collector, "flood", 3000)  # six times the rate: throttled, not dropped
        well_behaved(collector, "calm", 50)
        records = collector.records("flood")
        assert [r["message"] for r in records] == [f"flood {n}" for n in range(3000)]
        wait_for(lambda: guard(collector).get("rate", 0) > 0, what="rate limit hits")
        out = collector.cli("ls", "-o", "json")
        rows = {r["name"]: r for r in map(json.loads, out.stdout.splitlines()) if "name" in r}
        assert rows["flood"]["throttled"] > 0 and rows["calm"]["throttled"] == 0
    finally:
        assert collector.stop() == 0
