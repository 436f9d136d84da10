"""The Python ``Client`` never blocks its caller, whatever the network does.

Real sockets only. A blackholed peer (SYNs never answered) is a loopback listener with
backlog 0 whose accept queue is already full: Linux drops every further SYN. Each test
first proves its premise with a plain blocking connect. Here, and only here, a time
bound is the property under test ("log never blocks"), so the bounds are generous:
ten times and more what an idle machine needs.
"""

from __future__ import annotations

import contextlib
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import Collector, free_port, start_collector
from umonitor.guest.client import Client
from umonitor.protocol import frame_codec as fc
from umonitor.records import Severity

CALL_BOUND = 0.2  # seconds any one log() may take, loaded machine included
TOTAL_BOUND = 2.0  # seconds for a thousand of them


@contextlib.contextmanager
def blackhole() -> Iterator[int]:
    """A loopback port whose SYNs the kernel drops, until the context ends.

    The listener's accept queue (backlog 0: room for one) is filled by a connection
    never accepted; the extra fillers make sure of it. Leaving closes the listener,
    so the port then refuses, and a collector may take it over.
    """
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()
        for _ in range(3):
            filler = socket.socket()
            fillers.append(filler)
            filler.setblocking(False)
            filler.connect_ex(address)
        _, writable, _ = select.select([], fillers[:1], [], 10)
        assert writable, "the first filler should fill the accept queue"
        yield int(address[1])
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def assert_blackholed(port: int) -> None:
    """The premise: a plain blocking connect to ``port`` gets no answer at all."""
    with pytest.raises(TimeoutError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def timed_logs(client: Client, first: int, last: int) -> list[float]:
    """Log ``n=first``..``n=last``; return how long each call took."""
    durations = []
    for i in range(first, last + 1):
        start = time.monotonic()
        client.log(Severity.INFO, f"n={i}", fields={"i": i})
        durations.append(time.monotonic() - start)
    return durations


def messages(collector: Collector, name: str) -> list[str]:
    return [str(r["message"]) for r in collector.records(name)]


def test_log_never_blocks_while_blackholed_then_delivers(tmp_path: Path) -> None:
    collector = None
    client = None
    try:
        with blackhole() as port:
            assert_blackholed(port)
            client = Client("127.0.0.1", port, "blackholed", capacity=500, connect_timeout=30)
            durations = timed_logs(client, 1, 1000)
            assert max(durations) < CALL_BOUND, max(durations)
            assert sum(durations) < TOTAL_BOUND, sum(durations)
            # The connect is still pending: nothing went out, the buffer kept the newest.
            assert client.connecting and not client.session.connected
            assert [seq for seq, _ in client.session.unacked] == list(range(501, 1001))
            assert client.session.dropped == 500
        # The port is free again: a collector takes it, and what waited arrives.
        collector = start_collector(tmp_path / "data", port=port)
        assert client.flush(30)
        assert client.session.acked == 1000
        assert client.close(10)
        assert messages(collector, "blackholed") == [f"n={i}" for i in range(501, 1001)]
    finally:
        if client is not None:
            client.close(0)
        if collector is not None:
            assert collector.stop() == 0


def test_connect_timeout_abandons_the_attempt() -> None:
    with blackhole() as port:
        assert_blackholed(port)
        client = Client("127.0.0.1", port, "gives-up", connect_timeout=0.2)
        try:
            client.log(Severity.INFO, "waiting")
            assert client.connecting
            time.sleep(0.5)
            client.poll()  # past the deadline: abandon, back off, start nothing yet
            assert not client.connecting and not client.session.connected
            assert len(client.session.unacked) == 1
            # flush may wait, up to its timeout, and then says it failed.
            assert not client.flush(0.5)
        finally:
            assert not client.close(0.1)
        assert not client.connecting


def test_hostname_is_resolved_off_the_callers_path(collector: Collector) -> None:
    client = Client("localhost", collector.port, "by-name")
    try:
        durations = timed_logs(client, 1, 50)
        assert max(durations) < CALL_BOUND, max(durations)
        assert client.flush(10)
    finally:
        assert client.close(10)
    assert messages(collector, "by-name") == [f"n={i}" for i in range(1, 51)]


def test_first_log_with_a_hostname_only_starts_the_lookup(collector: Collector) -> None:
    """``log`` starts the lookup and returns; a later poll picks the answer up."""
    client = Client("localhost", collector.port, "lookup")
    try:
        client.log(Severity.INFO, "first")
        assert client.connecting and not client.session.connected
        assert client.flush(10)
    finally:
        assert client.close(10)
    assert messages(collector, "lookup") == ["first"]


def test_ipv6_literal() -> None:
    # Machines of this kind have an IPv6 loopback; without one this fails, never skips.
    server = socket.create_server(("::1", 0), family=socket.AF_INET6)
    client = Client("::1", server.getsockname()[1], "six")
    try:
        for i in range(1, 4):
            client.log(Severity.INFO, f"n={i}")
        server.settimeout(10)
        conn, peer = server.accept()
        with conn:
            assert peer[0] == "::1"
            conn.settimeout(0.05)
            decoder = fc.FrameDecoder(fc.Peer.GUEST)
            events: list[object] = []
            deadline = time.monotonic() + 10
            while sum(isinstance(e, fc.Record) for e in events) < 3:
                assert time.monotonic() < deadline, events
                client.poll()
                with contextlib.suppress(TimeoutError):
                    decoder.receive_data(conn.recv(65536))
                events.extend(decoder.next_events())
            assert isinstance(events[0], fc.Hello) and events[0].name == "six"
            assert [e.message for e in events if isinstance(e, fc.Record)] == ["n=1", "n=2", "n=3"]
            conn.sendall(fc.encode(fc.Ack(3)))
            assert client.flush(10)
    finally:
        client.close(0)
        server.close()


def test_refused_retries_with_backoff_then_delivers(tmp_path: Path) -> None:
    port = free_port()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    client = Client("127.0.0.1", port, "refused")
    collector = None
    try:
        durations = timed_logs(client, 1, 200)
        assert max(durations) < CALL_BOUND, max(durations)
        assert not client.session.connected
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            client.poll()
            time.sleep(0.01)
        # Attempts at 0 s and after 0.1 s at least, each doubling the wait before the next.
        assert 0.4 <= client._backoff <= 5.0
        assert not client.session.connected and len(client.session.unacked) == 200
        collector = start_collector(tmp_path / "data", port=port)
        assert client.flush(30)
        assert client.close(10)
        assert messages(collector, "refused") == [f"n={i}" for i in range(1, 201)]
    finally:
        client.close(0)
        if collector is not None:
            assert collector.stop() == 0
