"""One guest connection: sniff the dialect, decode, store, acknowledge.

How this works: ``data_received`` pushes bytes into the connection's sans-IO decoder
and hands every decoded record to the store at once (formatting only). It then asks
the collector for a commit; the collector commits once per event-loop turn for all
connections and only then calls ``send_ack`` on each (under ``--fsync always``, once the
disk worker has synced what it wrote), so an ACK always follows the write it confirms.
A protocol error ends this connection only.

Until the dialect is known the bytes wait in ``_head``, with the end of every read
remembered, and are then fed read by read: the legacy format (docs/protocol.md §4)
takes each read as the end of a message, as the 2018 host did, so the first
messages must not be glued together while sniffing waits for more bytes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Protocol

from umonitor.collector.base import Acknowledger, GuestLimits
from umonitor.collector.latency import LatencyHistogram
from umonitor.collector.stream import GuardedStream, GuardHost
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
# Reads whose records wait for an ACK, kept for the ACK latency (one entry per read);
# past this many the newer reads are not timed (a guest never acknowledged).
TIMED_READS = 4096


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


class ConnectionHost(GuardHost, Protocol):
    """What a guest's connection needs of the collector (collector/server.py's
    ``Collector`` is the one)."""

    store: Store
    max_frame: int
    guest_limits: GuestLimits
    protocol_errors: int
    ack_latency: LatencyHistogram

    def admit(self, requested: str, peer_host: str, token: bytes | None) -> str: ...

    def want_commit(self, conn: Acknowledger | None, then_close: bool = False) -> None: ...

    def instance_attached(self, conn: Connection) -> None: ...

    def charge(self, instance: str, records: int) -> float: ...

    def status_changed(self) -> None: ...


class Connection(GuardedStream):
    """A TCP connection from (or, in dial mode, to) one guest."""

    def __init__(self, collector: ConnectionHost, fixed_name: str | None = None) -> None:
        super().__init__(collector)
        self.collector = collector
        # A dialed guest is named by the user and, unless it starts with the native
        # preface, speaks the original format (it is the original Umonitor guest).
        self.fixed_name = fixed_name
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
        # Control (collector/control.py): the level the guest last said it has, how
        # many LEVEL answers came, and the PINGs sent to it that wait for their PONG.
        self.level: Severity | None = None
        self.level_answers = 0
        # Function tracing: whether the library takes SET_TRACE (HELLO's flags), and
        # its last TRACE answer (on, ranges) with how many came.
        self.tracing = False
        self.trace: fc.Trace | None = None
        self.trace_answers = 0
        self._pings: dict[int, asyncio.Future[float]] = {}
        # (high after a read, when it arrived) for reads not yet acknowledged.
        self._arrivals: collections.deque[tuple[int, float]] = collections.deque()

    # -- asyncio callbacks --------------------------------------------------------

    def opened(self) -> None:
        if self.transport is not None:
            keep_while_paused(self.transport, self.collector.guest_limits.pause_seconds)

    def buffered(self) -> int:
        decoder = self._native or self._lines
        return decoder.buffered if decoder is not None else 0

    def identified(self) -> bool:
        return self.instance is not None

    def instances(self) -> set[str]:
        return {self.instance.name} if self.instance is not None else set()

    def goodbye(self, why: str) -> None:
        self.close(fc.ErrorFrame(fc.ErrorCode.NOT_ALLOWED, why))

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        now = self.took(len(data))
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
                before = self.buffered()
                self._feed_head()
            else:
                before = self.buffered()
                self._feed(data)
        except ProtocolError as exc:
            self._fail(exc)
            return
        self.note_partial(before, len(data), now)
        if self.instance is not None and self.high > high:
            if self._native is not None and len(self._arrivals) < TIMED_READS:
                self._arrivals.append((self.high, now))
            self.throttle(self.collector.charge(self.instance.name, self.high - high))

    def eof_received(self) -> bool | None:
        self._finish_stream()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._quiet is not None:
            self._quiet.cancel()
        if not self._closing:
            self._finish_stream()
        for waiter in self._pings.values():
            if not waiter.done():
                waiter.set_exception(ConnectionError("the connection closed"))
        self._pings.clear()
        super().connection_lost(exc)

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
            self.tracing = event.tracing
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
        elif isinstance(event, fc.Trace):
            self.trace = event
            self.trace_answers += 1
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

    def ack_mark(self) -> int:
        return self.high

    def send_ack(self, mark: int) -> None:
        """Acknowledge this connection's boot through ``mark`` (its high when committed)."""
        if self._native is not None and self.instance is not None and mark > self._acked:
            self._acked = mark
            self._send(fc.encode(fc.Ack(mark)))
            arrivals = self._arrivals
            if arrivals:
                now = time.monotonic()
                observe = self.collector.ack_latency.observe
                while arrivals and arrivals[0][0] <= mark:
                    observe(now - arrivals.popleft()[1])

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
        if goodbye is not None and self._native is not None and not self._closing:
            self._send(fc.encode(goodbye))
        super().close()
