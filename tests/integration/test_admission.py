"""Guests authenticated and contained: a collector with the fleet's admission rules.

A real Collector (real sockets, real store, real leases file) runs in a thread with
``FleetAdmission``, as ``umonitor up`` builds it. Guests connect from chosen source
addresses in 127.0.0.0/8 (all local, so no network is needed): one leased to the
managed instance ``web``, one that is nobody's lease, and 127.0.0.1 (the host's own
tools, the only loopback address trusted as such).
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from tests.integration.conftest import wait_for
from umonitor.collector.admission import FleetAdmission
from umonitor.collector.base import Endpoint
from umonitor.collector.server import Collector
from umonitor.fleet.leases import Leases
from umonitor.protocol import frame_codec as fc
from umonitor.records import Record, Severity
from umonitor.store.writer import FsyncPolicy, Store

TOKEN = "5f0e3c1a9b7d2e4f6a8c0b1d3e5f7a9c"
STRANGER = "127.0.0.77"


@dataclass
class Running:
    collector: Collector
    port: int
    web_address: str
    data: Path
    loop: asyncio.AbstractEventLoop

    def status(self) -> dict[str, int]:
        result: dict[str, int] = {}

        def read() -> None:
            result["refused"] = self.collector.refused

        self.loop.call_soon_threadsafe(read)
        wait_for(lambda: "refused" in result, what="the collector's loop")
        return result


def start(tmp_path: Path, open_mode: bool) -> Iterator[Running]:
    data = tmp_path / "data"
    data.mkdir(parents=True)
    leases = Leases(data / "leases.json", IPv4Network("127.0.0.0/24"), "127.0.0.1")
    web_address = str(leases.lease("web"))
    tokens = {"web": TOKEN}
    admission = FleetAdmission(leases.owner, tokens.get, open=open_mode)
    loop = asyncio.new_event_loop()
    collector = Collector(Store(data, FsyncPolicy.BATCH), admission=admission)
    ready = threading.Event()
    bound: list[Endpoint] = []

    stop = asyncio.Event()

    async def main() -> None:
        bound.append(await collector.listen_tcp(Endpoint("127.0.0.1", 0)))
        ready.set()
        await stop.wait()
        await collector.shutdown()

    thread = threading.Thread(target=lambda: loop.run_until_complete(main()), daemon=True)
    thread.start()
    assert ready.wait(10)
    yield Running(collector, bound[0].port, web_address, data, loop)
    loop.call_soon_threadsafe(stop.set)
    thread.join(10)
    loop.close()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Running]:
    yield from start(tmp_path, open_mode=False)


def hello_from(running: Running, source: str, name: str, token: str) -> list[fc.Event]:
    """Connect from ``source``, say HELLO and one RECORD; what the collector answers."""
    return hello_at(running.port, source, name, token)


def hello_at(port: int, source: str, name: str, token: str) -> list[fc.Event]:
    """``hello_from`` for a collector listening on 127.0.0.1:``port``."""
    with socket.create_connection(("127.0.0.1", port), source_address=(source, 0)) as s:
        s.sendall(
            fc.PREFACE
            + fc.encode_hello(fc.Hello(name, os.urandom(16), token.encode()))
            + fc.encode(Record(1, Severity.INFO, f"hello from {source} as {name}"))
        )
        s.settimeout(10)
        decoder = fc.FrameDecoder(fc.Peer.HOST, expect_preface=False)
        events: list[fc.Event] = []
        while not any(isinstance(e, fc.Ack | fc.ErrorFrame) for e in events):
            data = s.recv(4096)
            if not data:
                break
            decoder.receive_data(data)
            events += decoder.next_events()
        return events


def refused(events: list[fc.Event]) -> str:
    errors = [e for e in events if isinstance(e, fc.ErrorFrame)]
    assert errors and errors[0].code == fc.ErrorCode.NOT_ALLOWED, events
    return errors[0].reason


def acked(events: list[fc.Event]) -> bool:
    return any(isinstance(e, fc.Ack) and e.seq == 1 for e in events)


def test_the_managed_instance_from_its_lease_with_its_token(fleet: Running) -> None:
    assert acked(hello_from(fleet, fleet.web_address, "web", TOKEN))
    assert (fleet.data / "instances" / "web" / "app.log").exists()


def test_wrong_or_missing_token_is_refused_and_logged(fleet: Running) -> None:
    assert "wrong token" in refused(hello_from(fleet, fleet.web_address, "web", "0" * 32))
    assert "wrong token" in refused(hello_from(fleet, fleet.web_address, "web", ""))
    # Same length, one character off: still refused (compared in constant time).
    assert "wrong token" in refused(hello_from(fleet, fleet.web_address, "web", TOKEN[:-1] + "d"))
    path = fleet.data / "security.log"  # written off the event loop: soon
    wait_for(lambda: path.exists() and len(path.read_text().splitlines()) == 3, what="3 lines")
    log = path.read_text().splitlines()
    assert len(log) == 3 and all(fleet.web_address in line for line in log)
    assert fleet.status()["refused"] == 3


def test_another_instances_name_is_refused_even_with_its_token(fleet: Running) -> None:
    # The right token from the wrong address: a stolen token is not enough.
    reason = refused(hello_from(fleet, STRANGER, "web", TOKEN))
    assert "managed instance" in reason and STRANGER in reason
    reason = refused(hello_from(fleet, "127.0.0.1", "WEB", TOKEN))  # case look-alike
    assert "managed instance" in reason
    # From web's own address, another name.
    assert "may not log as db" in refused(hello_from(fleet, fleet.web_address, "db", TOKEN))
    assert not (fleet.data / "instances" / "db").exists()


def test_unmanaged_guests_only_from_loopback_unless_open(fleet: Running, tmp_path: Path) -> None:
    assert "open = true" in refused(hello_from(fleet, STRANGER, "visitor", ""))
    assert acked(hello_from(fleet, "127.0.0.1", "local-tool", ""))
    opened = start(tmp_path / "open", open_mode=True)
    running = next(opened)
    try:
        assert acked(hello_from(running, STRANGER, "../Visitor", ""))
        # Sanitized: lower case and a hash suffix, inside the data directory.
        [name] = [p.name for p in (running.data / "instances").iterdir()]
        assert name.startswith("visitor") and name != "../Visitor"
        assert "managed instance" in refused(hello_from(running, STRANGER, "web", TOKEN))
    finally:
        next(opened, None)


def test_text_connections_from_a_lease_are_filed_under_it(fleet: Running) -> None:
    for source in (fleet.web_address, STRANGER):
        with socket.create_connection(("127.0.0.1", fleet.port), source_address=(source, 0)) as s:
            s.sendall(b"error: plain text from " + source.encode() + b"\n")
    wait_for(lambda: (fleet.data / "instances" / "web" / "app.log").exists(), what="web's file")
    assert not (fleet.data / "instances" / "127.0.0.77").exists()
    wait_for(lambda: fleet.status()["refused"] == 1, what="the stranger refused")
