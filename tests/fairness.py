"""Steady guests next to a flooding one: what each steady record cost, and whether it got in.

Used by tests/integration/test_fairness.py and bench/fairness.py.

``steady_guests`` runs N native guests in one asyncio loop. Each logs ``rate``
numbered records per second on a fixed schedule (record n is due at start + n/rate,
so a slow collector cannot slow the offered load down) and notes, for every record,
the time from writing it to the first ACK that covers it: the acknowledgement
latency a guest library sees. ``flood`` (``python -m tests.fairness flood ...``, its
own process) is one native guest that writes pre-encoded records as fast as the
socket takes them, reading its ACKs on the side, and prints its counts as JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field

from umonitor.protocol import frame_codec as fc
from umonitor.records import Record, Severity

BLOCK = 2000  # records per pre-encoded flood block


@dataclass
class SteadyGuest:
    name: str
    sent: int = 0
    acked: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, one per acked record
    error: str = ""


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of ``values``; 0.0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


async def _steady(
    guest: SteadyGuest, port: int, rate: float, seconds: float, settle: float
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    writer.write(fc.PREFACE + fc.encode_hello(fc.Hello(guest.name, os.urandom(16))))
    sent_at: dict[int, float] = {}

    async def read_acks() -> None:
        decoder = fc.FrameDecoder(fc.Peer.HOST, expect_preface=False)
        while data := await reader.read(65536):
            now = time.perf_counter()
            decoder.receive_data(data)
            for event in decoder.next_events():
                if isinstance(event, fc.Ack):
                    for seq in range(guest.acked + 1, min(event.seq, guest.sent) + 1):
                        guest.latencies.append(now - sent_at.pop(seq))
                    guest.acked = max(guest.acked, min(event.seq, guest.sent))
                elif isinstance(event, fc.ErrorFrame):
                    guest.error = event.reason

    acks = asyncio.create_task(read_acks())
    start = time.perf_counter()
    total = int(rate * seconds)
    for n in range(1, total + 1):
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent_at[n] = time.perf_counter()
        writer.write(fc.encode(Record(n, Severity.INFO, f"{guest.name} n={n}")))
        guest.sent = n
    deadline = time.perf_counter() + settle
    while guest.acked < guest.sent and time.perf_counter() < deadline and not acks.done():
        await asyncio.sleep(0.01)
    if guest.acked < guest.sent:
        guest.error = guest.error or f"{guest.sent - guest.acked} not acknowledged"
    acks.cancel()
    writer.close()


def steady_guests(
    port: int, names: list[str], rate: float, seconds: float, settle: float = 30.0
) -> list[SteadyGuest]:
    """Run the steady guests to the end; each entry says what was sent, acked, and when."""
    guests = [SteadyGuest(name) for name in names]

    async def run() -> None:
        await asyncio.gather(*(_steady(g, port, rate, seconds, settle) for g in guests))

    asyncio.run(run())
    return guests


def flood(port: int, name: str, seconds: float) -> dict[str, int]:
    """Records as fast as the collector takes them for ``seconds``; counts at the end."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(fc.PREFACE + fc.encode_hello(fc.Hello(name, os.urandom(16))))
    frames = [
        fc.encode(Record(n, Severity.DEBUG, f"flood {'x' * 80}")) for n in range(1, BLOCK + 1)
    ]
    offsets = []  # where each frame's seq is in the block
    at = 0
    for frame in frames:
        offsets.append(at + 5)  # length (4) and type (1), then the seq
        at += len(frame)
    block = bytearray(b"".join(frames))
    acked = [0]

    def read_acks() -> None:
        decoder = fc.FrameDecoder(fc.Peer.HOST, expect_preface=False)
        while data := sock.recv(65536):
            decoder.receive_data(data)
            for event in decoder.next_events():
                if isinstance(event, fc.Ack):
                    acked[0] = event.seq

    reader = threading.Thread(target=read_acks, daemon=True)
    reader.start()
    sent = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for i, offset in enumerate(offsets):
            struct.pack_into(">Q", block, offset, sent + i + 1)
        sock.sendall(block)
        sent += BLOCK
    settle = time.monotonic() + 60
    while acked[0] < sent and time.monotonic() < settle:
        time.sleep(0.05)
    sock.shutdown(socket.SHUT_WR)
    reader.join(timeout=10)
    sock.close()
    return {"sent": sent, "acked": acked[0]}


if __name__ == "__main__":
    if len(sys.argv) != 5 or sys.argv[1] != "flood":
        raise SystemExit("usage: python -m tests.fairness flood PORT NAME SECONDS")
    print(json.dumps(flood(int(sys.argv[2]), sys.argv[3], float(sys.argv[4]))))
