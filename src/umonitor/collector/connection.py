"""One guest connection: sniff the dialect, decode, store, acknowledge.

How this works: ``data_received`` pushes bytes into the connection's sans-IO decoder
and hands every decoded record to the store at once (formatting only). It then asks
the collector for a commit; the collector commits once per event-loop turn for all
connections and only then calls ``send_ack`` on each, so an ACK always follows the
write it confirms. A protocol error ends this connection only.

Until the dialect is known the bytes wait in ``_head``, with the end of every read
remembered, and are then fed read by read: the legacy format (docs/protocol.md §4)
takes each read as the end of a message, as the 2018 host did, so the first
messages must not be glued together while sniffing waits for more bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import socket
import sys
import termios
import time
from typing import TYPE_CHECKING, Protocol, cast

from umonitor.collector.base import Acknowledger, GuestLimits
from umonitor.collector.flow import PEER, RATE, ReadGate
from umonitor.errors import ProtocolError, Refused
from umonitor.protocol import frame_codec as fc
from umonitor.protocol.legacy import LegacyDecoder
from umonitor.protocol.sniff import Dialect, sniff_untrusted
from umonitor.protocol.text_lines import LineDecoder
from umonitor.records import Origin, Record, Severity

if TYPE_CHECKING:
    from umonitor.store.instance_log import InstanceLog
    from umonitor.store.writer import Store

log = logging.getLogger(__name__)

QUIET_SECONDS = 0.1


def keep_while_paused(transport: asyncio.BaseTransport, seconds: float) -> None:
    """Let the host retransmit to a guest that does not answer for ``seconds``
    (TCP_USER_TIMEOUT) before it gives the connection up: a guest stopped in a
    debugger does not answer, and Linux alone would give up after about 15 min."""
    sock = transport.get_extra_info("socket")
    if sock is None or not hasattr(socket, "TCP_USER_TIMEOUT"):
        return
    with contextlib.suppress(OSError, AttributeError, TypeError):
        milliseconds = max(1, min(int(seconds * 1000), 2**31 - 1))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, milliseconds)


class ConnectionHost(Protocol):
    """What a guest's connection needs of the collector (collector/server.py's
    ``Collector`` is the one)."""

    store: Store
    max_frame: int
    guest_limits: GuestLimits
    protocol_errors: int

    def admit(self, requested: str, peer_host: str, token: bytes | None) -> str: ...

    def want_commit(self, conn: Acknowledger | None, then_close: bool = False) -> None: ...

    def connection_opened(self, conn: Connection) -> bool: ...

    def connection_closed(self, conn: Connection) -> None: ...

    def instance_attached(self, conn: Connection) -> None: ...

    def charge(self, instance: str, records: int) -> float: ...

    def status_changed(self) -> None: ...


class Connection(asyncio.Protocol):
    """A TCP connection from (or, in dial mode, to) one guest."""

    def __init__(self, collector: ConnectionHost, fixed_name: str | None = None) -> None:
        self.collector = collector
        # A dialed guest is named by the user and, unless it starts with the native
        # preface, speaks the original format (it is the original Umonitor guest).
        self.fixed_name = fixed_name
        self.transport: asyncio.Transport | None = None
        self.gate: ReadGate | None = None
        self.peer = ""
        self.peer_host = ""
        self.dialect: Dialect | None = None
        self._head = bytearray()
        self._head_reads: list[int] = []  # where each read ended in _head
        self._native: fc.FrameDecoder | None = None
        self._lines: LineDecoder | LegacyDecoder | None = None
        self.instance: InstanceLog | None = None
        self.boot = ""
        self._acked = -1
        self.high = 0
        self._quiet: asyncio.TimerHandle | None = None
        self._closing = False
        self.opened_at = time.monotonic()
        self.last_data = self.opened_at
        self.partial_since: float | None = None  # when the frame now buffered began
        self._resume: asyncio.TimerHandle | None = None
        # Control (collector/control.py): the level the guest last said it has, how
        # many LEVEL answers came, and the PINGs sent to it that wait for their PONG.
        self.level: Severity | None = None
        self.level_answers = 0
        self._pings: dict[int, asyncio.Future[float]] = {}

    # -- asyncio callbacks --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.gate = ReadGate(transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.peer_host = str(peer[0])
            self.peer = f"{peer[0]}:{peer[1]}"
        if not self.collector.connection_opened(self):
            self._closing = True
            self.transport.abort()
            return
        keep_while_paused(transport, self.collector.guest_limits.pause_seconds)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self.last_data = now = time.monotonic()
        if self.gate is not None:
            self.gate.took(len(data))
        high = self.high
        try:
            if self.dialect is None:
                self._head += data
                self._head_reads.append(len(self._head))
                if not self._choose(final=False):
                    self._arm_quiet()
                    self.partial_since = self.partial_since or now
                    return
                data = bytes(self._head)
                before = self._buffered()
                self._feed_head()
            else:
                before = self._buffered()
                self._feed(data)
        except ProtocolError as exc:
            self._fail(exc)
            return
        after = self._buffered()
        if not after:
            self.partial_since = None
        elif self.partial_since is None or after < before + len(data):
            # Something was taken, so the incomplete frame (or line) began in this read:
            # a guest streaming without pause is never a slow sender.
            self.partial_since = now
        if self.instance is not None and self.high > high:
            self._throttle(self.collector.charge(self.instance.name, self.high - high))

    def _buffered(self) -> int:
        decoder = self._native or self._lines
        return decoder.buffered if decoder is not None else 0

    def _throttle(self, seconds: float) -> None:
        """Stop reading for ``seconds`` (the instance is over its rate)."""
        if seconds <= 0 or self.gate is None or self._resume is not None:
            return
        self.gate.hold(RATE)
        self._resume = asyncio.get_running_loop().call_later(seconds, self._unthrottle)

    def _unthrottle(self) -> None:
        self._resume = None
        if self.gate is not None and not self._closing:
            self.gate.release(RATE)

    def pause_writing(self) -> None:
        """The guest does not read what it is sent: read nothing more from it either.

        Everything the collector writes answers something the guest sent (ACK, PONG,
        ERROR) or is one control request of a user (SET_LEVEL, PING; collector/control.py),
        so this bounds what one guest can make the collector hold for it.
        """
        if self.gate is not None:
            self.gate.hold(PEER)

    def resume_writing(self) -> None:
        if self.gate is not None:
            self.gate.release(PEER)

    def restart_clocks(self, now: float) -> None:
        """Time limits count from ``now`` (the guest's VM was stopped until now)."""
        if self.gate is not None:
            self.gate.resumed_at = now
            if self.gate.peer_since is not None:
                self.gate.peer_since = now

    def over_time(self, now: float, limits: GuestLimits) -> str | None:
        """Which time limit this connection is over, if any."""
        if self._closing or self.gate is None:
            return None
        unread = self.gate.peer_since
        if unread is not None and now - unread > limits.frame_seconds:
            return "unread"
        if self.gate.reasons:
            return None  # not read now: whatever is late is not the guest's doing
        resumed = self.gate.resumed_at
        over = None
        if self.instance is None and now - max(self.opened_at, resumed) > limits.handshake_seconds:
            over = "handshake"
        elif self.partial_since is not None and (
            now - max(self.partial_since, resumed) > limits.frame_seconds
        ):
            over = "slow"
        elif limits.idle_seconds and now - max(self.last_data, resumed) > limits.idle_seconds:
            over = "idle"
        if over is not None and self._waiting() > 0:
            return None  # its bytes are here, not yet read: the collector is late, not it
        return over

    def _waiting(self) -> int:
        """Bytes the kernel holds for this connection that the loop has not read yet."""
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        try:
            buf = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")  # type: ignore[union-attr]
        except (AttributeError, OSError, ValueError):
            return 0
        return int.from_bytes(buf, sys.byteorder, signed=True)

    def close_for(self, limit: str) -> None:
        why = {
            "handshake": "no HELLO in time",
            "slow": "a frame took too long to arrive",
            "unread": "did not read what it was sent",
            "idle": "idle for too long",
        }.get(limit, limit)
        log.info("closing %s: %s", self.peer, why)
        if limit == "unread" and self.transport is not None:
            # What it has not read would never drain: drop it with the connection.
            self._closing = True
            self.transport.abort()
            return
        self.close(fc.ErrorFrame(fc.ErrorCode.NOT_ALLOWED, why))

    def eof_received(self) -> bool | None:
        self._finish_stream()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._quiet is not None:
            self._quiet.cancel()
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        if not self._closing:
            self._finish_stream()
        self._closing = True
        for waiter in self._pings.values():
            if not waiter.done():
                waiter.set_exception(ConnectionError("the connection closed"))
        self._pings.clear()
        self.collector.connection_closed(self)

    # -- decoding -----------------------------------------------------------------

    def _choose(self, *, final: bool) -> bool:
        if self.fixed_name is not None:
            # Dialed: the first byte decides (the native preface, or the original format).
            native = self._head[:1] == fc.PREFACE[:1]
            dialect: Dialect | None = Dialect.NATIVE if native else Dialect.LEGACY
        else:
            dialect = sniff_untrusted(self._head, final=final)
        if dialect is None:
            return False
        self.dialect = dialect
        max_frame = self.collector.max_frame
        if dialect is Dialect.NATIVE:
            self._native = fc.FrameDecoder(fc.Peer.GUEST, max_frame=max_frame)
            return True
        if dialect is Dialect.LEGACY:
            self._lines = LegacyDecoder(max_line=max_frame)
        else:
            self._lines = LineDecoder(max_line=max_frame)
        self.boot = os.urandom(16).hex()
        try:
            name = self.collector.admit(
                self.fixed_name or self.peer_host or "unknown", self.peer_host, None
            )
        except Refused as exc:
            raise ProtocolError(str(exc), fc.ErrorCode.NOT_ALLOWED) from None
        self._attach(name, dialect.value, name)
        return True

    def _attach(self, name: str, library: str, requested: str) -> None:
        self.instance = self.collector.store.log(name)
        self.high = self.collector.store.begin_boot(
            self.instance, self.boot, library, self.peer, requested
        )
        self.collector.instance_attached(self)

    def _feed_head(self) -> None:
        """Feed what arrived while the dialect was unknown, one read at a time."""
        head, reads = bytes(self._head), self._head_reads
        self._head, self._head_reads = bytearray(), []
        start = 0
        for end in reads:
            self._feed(head[start:end])
            start = end

    def _feed(self, data: bytes) -> None:
        """One read's bytes (a legacy message ends with it)."""
        if self._native is not None:
            decoder = self._native
            decoder.receive_data(data)
            if not self.collector.store.fast:
                self._handle_native(decoder.next_events())
                return
            while True:
                if self.instance is not None:
                    decoder.take_record_run(self._take_records)
                events = decoder.next_events(limit=1)
                if not events:
                    break
                self._handle_native(events)
        elif self._lines is not None:
            self._lines.receive_data(data)
            if isinstance(self._lines, LegacyDecoder):
                self._store(self._lines.end_of_write())
            else:
                self._store(self._lines.next_events())

    def _arm_quiet(self) -> None:
        if self._quiet is not None:
            self._quiet.cancel()
        self._quiet = asyncio.get_running_loop().call_later(QUIET_SECONDS, self._went_quiet)

    def _decide_now(self) -> bool:
        """No more bytes soon: pick the dialect from what arrived; False on an error."""
        if self.dialect is not None or not self._head:
            return True
        try:
            self._choose(final=True)
            self._feed_head()
        except ProtocolError as exc:
            self._fail(exc)
            return False
        return True

    def _went_quiet(self) -> None:
        self._quiet = None
        if not self._closing:
            self._decide_now()

    def _finish_stream(self) -> None:
        if self._decide_now() and self._lines is not None:
            self._store(self._lines.end_of_stream())

    def _take_records(self, buf: bytearray, pos: int, end: int, max_body: int) -> int:
        assert self.instance is not None
        stop = self.collector.store.add_record_run(
            self.instance, self.boot, buf, pos, end, max_body
        )
        if stop != pos:
            self.high = self.instance.high[self.boot]
            self.collector.want_commit(self)
        return stop

    def _store(self, records: list[Record]) -> None:
        if not records or self.instance is None:
            return
        self.high = self.collector.store.add_records(
            self.instance, self.boot, records, Origin.APP, time.time_ns()
        )
        self.collector.want_commit(self)

    def _handle_native(self, events: list[fc.Event]) -> None:
        batch: list[Record] = []
        for event in events:
            if type(event) is Record:
                batch.append(event)
                continue
            if batch:
                self._store_native(batch)
                batch = []
            self._control(event)
        if batch:
            self._store_native(batch)

    def _store_native(self, batch: list[Record]) -> None:
        if self.instance is None:
            raise ProtocolError("RECORD before HELLO", fc.ErrorCode.UNEXPECTED)
        self._store(batch)

    def _control(self, event: fc.Event) -> None:
        if isinstance(event, fc.Hello):
            if self.instance is not None:
                raise ProtocolError("second HELLO on one connection", fc.ErrorCode.UNEXPECTED)
            self.boot = event.boot_id.hex()
            token = None if self.fixed_name else event.token  # a dialled guest is chosen
            try:
                name = self.collector.admit(self.fixed_name or event.name, self.peer_host, token)
            except Refused as exc:
                raise ProtocolError(str(exc), fc.ErrorCode.NOT_ALLOWED) from None
            self.level = event.level
            self._attach(name, event.library, event.name)
            self.collector.want_commit(self)
        elif isinstance(event, fc.Dropped):
            if self.instance is None:
                raise ProtocolError("DROPPED before HELLO", fc.ErrorCode.UNEXPECTED)
            self.high = self.collector.store.add_dropped(
                self.instance, self.boot, event.count, event.through_seq
            )
            self.collector.want_commit(self)
        elif isinstance(event, fc.Ping):
            self._send(fc.encode(fc.Pong(event.nonce)))
        elif isinstance(event, fc.Pong):
            waiter = self._pings.pop(event.nonce, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(time.monotonic())
        elif isinstance(event, fc.Level):
            self.level = event.level
            self.level_answers += 1
            self.collector.status_changed()
        elif isinstance(event, fc.Bye):
            self.collector.want_commit(self, then_close=True)
        elif isinstance(event, fc.ErrorFrame):
            log.info("%s reports error %d: %s", self.peer, event.code, event.reason)
            self.close()
        # A PONG nobody waits for (late, or never asked) needs nothing.

    # -- output -------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def send_ack(self) -> None:
        """Acknowledge everything committed for this connection's boot."""
        if self._native is not None and self.instance is not None and self.high != self._acked:
            self._acked = self.high
            self._send(fc.encode(fc.Ack(self.high)))

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def controllable(self) -> bool:
        """Whether this guest speaks the native protocol (legacy and text have no control)."""
        return self._native is not None and self.instance is not None and not self._closing

    async def ask(self, frames: list[fc.Event], timeout: float) -> float:
        """Send ``frames`` then a PING; the seconds until its PONG came back.

        A guest handles frames in order, so its answers to ``frames`` (a LEVEL for a
        SET_LEVEL) arrive before the PONG. Raises TimeoutError, or ConnectionError
        when the connection closes first.
        """
        nonce = int.from_bytes(os.urandom(8), "big")
        waiter: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._pings[nonce] = waiter
        data = b"".join(fc.encode(f) for f in [*frames, fc.Ping(nonce)])
        sent = time.monotonic()
        self._send(data)
        try:
            async with asyncio.timeout(timeout):
                return await waiter - sent
        finally:
            self._pings.pop(nonce, None)

    def _fail(self, exc: ProtocolError) -> None:
        self.collector.protocol_errors += 1
        log.warning("closing %s: %s", self.peer or "connection", exc)
        if self._native is not None or self.dialect is Dialect.NATIVE or self.dialect is None:
            self._send(fc.encode(fc.ErrorFrame(exc.code, str(exc))))
        self.close()

    def close(self, goodbye: fc.ErrorFrame | None = None) -> None:
        if self._closing:
            return
        self._closing = True
        if goodbye is not None and self._native is not None:
            self._send(fc.encode(goodbye))
        if self.transport is not None:
            self.transport.close()
