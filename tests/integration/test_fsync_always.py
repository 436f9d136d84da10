"""``--fsync always``: no ACK before the fsync, and the event loop never waits for it.

A real collector in this process, real sockets, a real store; the disk worker's fsync
is held on an event (as a slow disk would hold it). While it is held, the guest's
records are written but not acknowledged, and another guest's PING is answered at
once: the loop is not the one waiting. Once the fsync runs, the ACK covers them all.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from umonitor.collector import server
from umonitor.collector.base import Endpoint
from umonitor.protocol import frame_codec as fc
from umonitor.records import Record, Severity
from umonitor.store import layout
from umonitor.store import worker as worker_module
from umonitor.store.writer import FsyncPolicy, Store


async def next_event(
    reader: asyncio.StreamReader, decoder: fc.FrameDecoder, timeout: float
) -> fc.Event:
    async with asyncio.timeout(timeout):
        while True:
            events = decoder.next_events(limit=1)
            if events:
                return events[0]
            data = await reader.read(4096)
            assert data, "the collector closed the connection"
            decoder.receive_data(data)


def test_acks_wait_for_the_fsync_and_the_loop_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = layout.prepare_data_dir(tmp_path / "data")
    disk_free = threading.Event()
    synced: list[int] = []
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:  # runs in the disk worker's thread
        disk_free.wait(30)
        real_fsync(fd)
        synced.append(fd)

    monkeypatch.setattr(worker_module.os, "fsync", slow_fsync)

    async def main() -> None:
        store = Store(root, FsyncPolicy.ALWAYS)
        collector = server.Collector(store)
        port = (await collector.listen_tcp(Endpoint("127.0.0.1", 0))).port
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            decoder = fc.FrameDecoder(fc.Peer.HOST, expect_preface=False)
            writer.write(fc.PREFACE + fc.encode_hello(fc.Hello("careful", os.urandom(16))))
            writer.write(b"".join(fc.encode(Record(n, Severity.INFO, f"r{n}")) for n in (1, 2, 3)))
            await writer.drain()
            # Written (the file has them) but not acknowledged while the fsync waits.
            log_file = root / "instances" / "careful" / layout.APP_LOG
            for _ in range(200):
                if log_file.exists() and b"r3" in log_file.read_bytes():
                    break
                await asyncio.sleep(0.02)
            assert b"r3" in log_file.read_bytes()
            with pytest.raises(TimeoutError):
                await next_event(reader, decoder, timeout=0.5)
            # Meanwhile another guest is answered: the loop is not blocked.
            r2, w2 = await asyncio.open_connection("127.0.0.1", port)
            d2 = fc.FrameDecoder(fc.Peer.HOST, expect_preface=False)
            w2.write(fc.PREFACE + fc.encode_hello(fc.Hello("other", os.urandom(16))))
            w2.write(fc.encode(fc.Ping(7)))
            assert await next_event(r2, d2, timeout=10) == fc.Pong(7)
            assert not synced
            disk_free.set()
            acked = 0
            while acked < 3:
                event = await next_event(reader, decoder, timeout=10)
                assert isinstance(event, fc.Ack), event
                acked = event.seq
            assert acked == 3 and synced  # after the fsync, all three at once or in steps
            writer.close()
            w2.close()
        finally:
            disk_free.set()
            await collector.shutdown()

    asyncio.run(main())
