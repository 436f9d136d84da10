"""A stream's close toward a peer that never reads: aborted after the frame limit.

A real socket pair and asyncio transport: the peer end never reads, so what the
collector queued cannot leave and a graceful close would wait for ever.
"""

from __future__ import annotations

import asyncio
import socket

from umonitor.collector.base import GuestLimits
from umonitor.collector.stream import GuardedStream


class Host:
    """The little a guarded stream asks of its collector."""

    def __init__(self, frame_seconds: float) -> None:
        self.guest_limits = GuestLimits(frame_seconds=frame_seconds)
        self.closed: asyncio.Event | None = None

    def stream_opened(self, stream: GuardedStream) -> bool:
        return True

    def stream_closed(self, stream: GuardedStream) -> None:
        assert self.closed is not None
        self.closed.set()


SIZE = 8 << 20


async def close_toward(peer_reads: bool) -> bool:
    """Queue 8 MiB for the peer, close; whether the connection was lost within 5 s
    (the peer that reads must get every byte)."""
    host = Host(30.0 if peer_reads else 0.2)
    host.closed = asyncio.Event()
    ours, theirs = socket.socketpair()
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    loop = asyncio.get_running_loop()
    try:
        transport, stream = await loop.connect_accepted_socket(lambda: GuardedStream(host), ours)
        transport.set_write_buffer_limits(high=64 << 20)  # all of it stays queued here
        transport.write(b"x" * SIZE)
        assert transport.get_write_buffer_size() > 0
        stream.close()
        if peer_reads:
            theirs.setblocking(False)
            got = 0
            while got < SIZE:
                try:
                    while chunk := theirs.recv(1 << 20):
                        got += len(chunk)
                except BlockingIOError:
                    pass
                await asyncio.sleep(0.01)
            await asyncio.wait_for(host.closed.wait(), 5.0)
            return got == SIZE
        try:
            await asyncio.wait_for(host.closed.wait(), 5.0)
        except TimeoutError:
            transport.abort()
            return False
        return True
    finally:
        theirs.close()


def test_a_close_toward_a_peer_that_never_reads_is_aborted() -> None:
    assert asyncio.run(close_toward(peer_reads=False))


def test_a_peer_that_reads_gets_everything_before_the_close() -> None:
    assert asyncio.run(close_toward(peer_reads=True))
