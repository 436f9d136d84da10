"""ReadGate: one reason's end does not resume reading that another reason paused."""

from __future__ import annotations

import asyncio
import socket

from umonitor.collector.flow import DISK, PEER, RATE, ReadGate


def test_reading_resumes_only_when_every_reason_is_released() -> None:
    async def run() -> list[bool]:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
        gate = ReadGate(transport)
        seen = [transport.is_reading()]
        gate.hold(RATE)
        gate.hold(DISK)
        gate.hold(DISK)  # twice: still one reason
        seen.append(transport.is_reading())
        gate.release(RATE)
        seen.append(transport.is_reading())  # the disk still holds it
        gate.release(PEER)  # never held: changes nothing
        seen.append(transport.is_reading())
        gate.release(DISK)
        seen.append(transport.is_reading())
        gate.hold(PEER)
        assert gate.peer_since is not None and gate.held(PEER)
        gate.release(PEER)
        assert gate.peer_since is None
        seen.append(transport.is_reading())
        transport.close()
        theirs.close()
        return seen

    assert asyncio.run(run()) == [True, False, False, False, True, True]


def test_a_closing_transport_is_left_alone() -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
        gate = ReadGate(transport)
        transport.close()
        gate.hold(DISK)  # no error from pausing a closing transport
        gate.release(DISK)
        assert not gate.reasons
        theirs.close()

    asyncio.run(run())
