"""A guest stopped in a debugger keeps its connection (docs/debugging.md).

A real collector in this process, with an idle limit of 1 s, and a guest on a real
socket that says HELLO and then nothing, as a guest stopped in gdb would: while the
fleet says its VM is stopped the idle limit does not run; once it runs again the limit
counts from then. Every guest socket asks the host to keep retransmitting for
``pause_seconds`` (TCP_USER_TIMEOUT) rather than Linux's ~15 minutes.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

from umonitor.collector import server
from umonitor.collector.base import Endpoint, GuestLimits
from umonitor.protocol import frame_codec as fc
from umonitor.store import layout
from umonitor.store.writer import FsyncPolicy, Store


async def connection_of(collector: server.Collector, name: str) -> server.Connection:
    for _ in range(200):
        conn = collector.live_connection(name)
        if conn is not None:
            return conn
        await asyncio.sleep(0.02)
    raise AssertionError(f"{name} never connected")


def test_a_held_guest_is_not_cut_and_its_clock_restarts(tmp_path: Path) -> None:
    root = layout.prepare_data_dir(tmp_path / "data")

    async def main() -> None:
        store = Store(root, FsyncPolicy.BATCH)
        limits = GuestLimits(idle_seconds=1.0, pause_seconds=90.0)
        collector = server.Collector(store, guest_limits=limits)
        port = (await collector.listen_tcp(Endpoint("127.0.0.1", 0))).port
        ticker = asyncio.get_running_loop().create_task(collector.periodic())
        socks = []
        try:
            for name in ("held", "free"):
                sock = socket.create_connection(("127.0.0.1", port))
                sock.sendall(fc.PREFACE + fc.encode_hello(fc.Hello(name, os.urandom(16))))
                socks.append(sock)
            held = await connection_of(collector, "held")
            free = await connection_of(collector, "free")
            sock = held.transport.get_extra_info("socket") if held.transport else None
            assert sock is not None
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 90_000
            collector.hold_instance("held", True)
            await asyncio.sleep(3.5)  # the idle limit passes three times over
            assert free.closing and collector.limit_hits["idle"] == 1  # the limit works
            assert not held.closing and collector.live_connection("held") is held
            collector.hold_instance("held", False)  # it runs again: 1 s from now
            released = time.monotonic()
            while not held.closing:
                await asyncio.sleep(0.05)
            assert time.monotonic() - released >= 1.0
            assert collector.limit_hits["idle"] == 2
        finally:
            ticker.cancel()
            for s in socks:
                s.close()
            await collector.shutdown()
            store.close()

    asyncio.run(main())
