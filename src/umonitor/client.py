"""The Python guest library: send records to a collector, never stall the caller.

How this works: ``GuestSession`` is the sans-IO core shared by both clients. It keeps
every record it encoded in a bounded buffer until an ACK covers it; when the buffer is
full the oldest record goes and a DROPPED notice is queued. On each (re)connection it
produces the preface, HELLO and every unacknowledged record again. ``Client`` drives
it with a non-blocking socket (each call does what it can and returns), and
``AsyncClient`` with an asyncio task. ``LogHandler`` plugs ``Client`` into ``logging``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import select
import socket
import time
from collections.abc import Iterable, Mapping

from umonitor.errors import ProtocolError
from umonitor.protocol import frame_codec as fc
from umonitor.records import Kind, Record, Severity

LIBRARY = "umonitor-py/1.0.0"
DEFAULT_BUFFER = 10_000


class GuestSession:
    """Sequence numbers, the unacknowledged buffer, level and drops of one boot."""

    def __init__(
        self,
        name: str,
        token: bytes = b"",
        *,
        boot_id: bytes | None = None,
        capacity: int = DEFAULT_BUFFER,
        level: Severity = Severity.DEBUG,
    ) -> None:
        self.hello = fc.Hello(name, boot_id or os.urandom(16), token, LIBRARY)
        self.capacity = capacity
        self.level = level
        self.seq = 0
        self.acked = 0
        self.dropped = 0
        self.dropped_through = 0
        self.filtered = 0
        self.unacked: collections.deque[tuple[int, bytes]] = collections.deque()
        self._outbox = bytearray()
        self._decoder: fc.FrameDecoder | None = None
        self._drop_notice_due = False
        self.connected = False
        # Records evicted from a full buffer after they went out on a connection: the
        # host may hold them, so they are not dropped until an ACK says (runs lo..hi).
        self._limbo: collections.deque[list[int]] = collections.deque()
        self._wire_seq = 0  # the highest record ever handed to a connection
        self._limbo_cut = 0  # limbo at or below this went out on connections now lost
        self._hello_acked = False

    def record(
        self,
        severity: Severity,
        message: str,
        *,
        fields: Mapping[str, object] | Iterable[tuple[str, object]] = (),
        kind: Kind = Kind.LOG,
        file: str = "",
        line: int = 0,
        function: str = "",
    ) -> int:
        """Queue one record; returns its sequence number, or 0 if filtered by level."""
        if severity > self.level:
            self.filtered += 1
            return 0
        items = fields.items() if isinstance(fields, Mapping) else fields
        self.seq += 1
        frame = fc.encode_record(
            Record(
                self.seq,
                Severity(severity),
                message,
                kind,
                time.monotonic_ns(),
                time.time_ns(),
                file,
                line,
                function,
                tuple((str(k), str(v)) for k, v in items),
            )
        )
        if len(self.unacked) >= self.capacity:
            old_seq, _ = self.unacked.popleft()
            if old_seq <= self._wire_seq:
                self._to_limbo(old_seq)
            else:
                self._drop(old_seq, 1)
        self.unacked.append((self.seq, frame))
        if self.connected:
            if self._drop_notice_due:
                self._queue_drop_notice()
            self._outbox += frame
            self._wire_seq = self.seq
        return self.seq

    def _drop(self, through: int, count: int) -> None:
        self.dropped += count
        self.dropped_through = max(self.dropped_through, through)
        self._drop_notice_due = True

    def _to_limbo(self, seq: int) -> None:
        if self._limbo and self._limbo[-1][1] + 1 == seq:
            self._limbo[-1][1] = seq
        else:
            self._limbo.append([seq, seq])

    def _settle(self, ack: int, *, lost_through: int = 0) -> None:
        """Limbo the host holds (<= ack) is delivered; what went out only on lost
        connections (<= lost_through) and is above the ACK is dropped."""
        kept: collections.deque[list[int]] = collections.deque()
        for lo, hi in self._limbo:
            lo = max(lo, ack + 1)
            if lo > hi:
                continue
            gone_hi = min(hi, lost_through)
            if gone_hi >= lo:
                self._drop(gone_hi, gone_hi - lo + 1)
                lo = gone_hi + 1
            if lo <= hi:
                kept.append([lo, hi])
        self._limbo = kept

    def _queue_drop_notice(self) -> None:
        self._drop_notice_due = False
        self._outbox += fc.encode(fc.Dropped(self.dropped, self.dropped_through))

    def connection_made(self) -> None:
        """A new connection: say HELLO and send every unacknowledged record again."""
        self.connected = True
        self._decoder = fc.FrameDecoder(fc.Peer.HOST, expect_preface=False)
        self._outbox = bytearray(fc.PREFACE + fc.encode_hello(self.hello))
        self._limbo_cut = self._wire_seq
        self._hello_acked = False
        if self.dropped:
            self._queue_drop_notice()
        for seq, frame in self.unacked:
            self._outbox += frame
            self._wire_seq = max(self._wire_seq, seq)

    def connection_lost(self) -> None:
        self.connected = False
        self._decoder = None
        self._outbox.clear()

    def data_to_send(self) -> bytes:
        out, self._outbox = bytes(self._outbox), bytearray()
        return out

    def unsent(self, data: bytes) -> None:
        """Put back what a send could not take."""
        self._outbox[:0] = data

    def receive_data(self, data: bytes) -> None:
        """Frames from the host; raises ProtocolError if the host misbehaves."""
        if self._decoder is None:
            return
        self._decoder.receive_data(data)
        for event in self._decoder.next_events():
            if isinstance(event, fc.Ack):
                self.acked = max(self.acked, event.seq)
                while self.unacked and self.unacked[0][0] <= self.acked:
                    self.unacked.popleft()
                # The first ACK answers HELLO: what it lacks of the lost connections'
                # records is gone for good.
                cut = 0 if self._hello_acked else self._limbo_cut
                self._hello_acked = True
                if self._limbo:
                    self._settle(self.acked, lost_through=cut)
                    if self._drop_notice_due and self.connected:
                        self._queue_drop_notice()
            elif isinstance(event, fc.SetLevel):
                self.level = event.level
            elif isinstance(event, fc.Ping):
                self._outbox += fc.encode(fc.Pong(event.nonce))
            elif isinstance(event, fc.ErrorFrame):
                raise ProtocolError(f"collector said: {event.reason}", event.code)

    @property
    def all_acked(self) -> bool:
        return not self.unacked and not self._limbo


class _ClientBase:
    """What both clients share: the session and a ``log`` that never waits."""

    def __init__(
        self,
        host: str,
        port: int,
        name: str,
        token: bytes = b"",
        *,
        boot_id: bytes | None = None,
        capacity: int = DEFAULT_BUFFER,
    ) -> None:
        self.address = (host, port)
        self.session = GuestSession(name, token, boot_id=boot_id, capacity=capacity)

    def log(
        self,
        severity: Severity,
        message: str,
        *,
        fields: Mapping[str, object] | Iterable[tuple[str, object]] = (),
        kind: Kind = Kind.LOG,
        file: str = "",
        line: int = 0,
        function: str = "",
    ) -> int:
        """Queue one record and start sending it; returns its seq (0: below the level)."""
        seq = self.session.record(
            severity, message, fields=fields, kind=kind, file=file, line=line, function=function
        )
        self._kick()
        return seq

    def _kick(self) -> None:
        raise NotImplementedError


class Client(_ClientBase):
    """A blocking-API client whose calls never wait on the network.

    ``log`` queues and sends what the socket takes at once; ``flush`` is the only call
    that waits, for the ACKs, up to its timeout.
    """

    def __init__(
        self,
        host: str,
        port: int,
        name: str,
        token: bytes = b"",
        *,
        boot_id: bytes | None = None,
        capacity: int = DEFAULT_BUFFER,
        connect_timeout: float = 2.0,
    ) -> None:
        super().__init__(host, port, name, token, boot_id=boot_id, capacity=capacity)
        self._sock: socket.socket | None = None
        self._connect_timeout = connect_timeout
        self._retry_at = 0.0
        self._backoff = 0.1

    def _kick(self) -> None:
        self.poll()

    def _connect(self) -> None:
        now = time.monotonic()
        if now < self._retry_at:
            return
        try:
            sock = socket.create_connection(self.address, timeout=self._connect_timeout)
        except OSError:
            self._retry_at = now + self._backoff
            self._backoff = min(self._backoff * 2, 5.0)
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._backoff = 0.1
        self.session.connection_made()

    def _drop_connection(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        self.session.connection_lost()

    def poll(self) -> None:
        """Connect, send and read what can be done without waiting."""
        if self._sock is None:
            self._connect()
            if self._sock is None:
                return
        sock = self._sock
        try:
            while True:
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    break
                if not data:
                    self._drop_connection()
                    return
                self.session.receive_data(data)
            pending = self.session.data_to_send()
            if pending:
                try:
                    sent = sock.send(pending)
                except BlockingIOError:
                    sent = 0
                if sent < len(pending):
                    self.session.unsent(pending[sent:])
        except (OSError, ProtocolError):
            self._drop_connection()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait up to ``timeout`` seconds until every record is acknowledged."""
        deadline = time.monotonic() + timeout
        while not self.session.all_acked:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.poll()
            if self._sock is None:
                time.sleep(min(0.05, left))
                continue
            if self.session.all_acked:
                break
            select.select([self._sock], [], [], min(left, 0.05))
        return True

    def close(self, timeout: float = 2.0) -> bool:
        """Flush, say BYE and close; True if everything was acknowledged."""
        done = self.flush(timeout)
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.setblocking(True)
                self._sock.settimeout(1.0)
                self._sock.sendall(fc.encode(fc.Bye()))
            self._drop_connection()
        return done

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_ClientBase):
    """The asyncio client: ``log`` never awaits; a background task does the I/O."""

    def __init__(
        self,
        host: str,
        port: int,
        name: str,
        token: bytes = b"",
        *,
        boot_id: bytes | None = None,
        capacity: int = DEFAULT_BUFFER,
    ) -> None:
        super().__init__(host, port, name, token, boot_id=boot_id, capacity=capacity)
        self._wake = asyncio.Event()
        self._acked = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def _kick(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            try:
                reader, writer = await asyncio.open_connection(*self.address)
            except OSError:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            self.session.connection_made()
            reading = asyncio.ensure_future(reader.read(65536))
            try:
                while True:
                    writer.write(self.session.data_to_send())
                    await writer.drain()
                    waking = asyncio.ensure_future(self._wake.wait())
                    await asyncio.wait({reading, waking}, return_when=asyncio.FIRST_COMPLETED)
                    waking.cancel()
                    self._wake.clear()
                    if reading.done():
                        data = reading.result()
                        if not data:
                            break
                        self.session.receive_data(data)
                        if self.session.all_acked:
                            self._acked.set()
                        reading = asyncio.ensure_future(reader.read(65536))
            except (OSError, ProtocolError):
                pass
            finally:
                reading.cancel()
                self.session.connection_lost()
                writer.close()
            await asyncio.sleep(backoff)

    async def flush(self, timeout: float = 5.0) -> bool:
        try:
            async with asyncio.timeout(timeout):
                while not self.session.all_acked:
                    self._acked.clear()
                    self._wake.set()
                    await self._acked.wait()
        except TimeoutError:
            return False
        return True

    async def close(self, timeout: float = 2.0) -> bool:
        done = await self.flush(timeout)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        return done


_LOGGING_LEVELS = (
    (logging.CRITICAL, Severity.CRIT),
    (logging.ERROR, Severity.ERR),
    (logging.WARNING, Severity.WARNING),
    (logging.INFO, Severity.INFO),
)


def severity_of(levelno: int) -> Severity:
    for threshold, severity in _LOGGING_LEVELS:
        if levelno >= threshold:
            return severity
    return Severity.DEBUG


class LogHandler(logging.Handler):
    """A ``logging`` handler that ships records with their source location.

    ``extra={"fields": {...}}`` on a logging call adds key-value fields.
    """

    def __init__(self, client: Client, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.client = client

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = dict(getattr(record, "fields", {}) or {})
            fields.setdefault("logger", record.name)
            self.client.log(
                severity_of(record.levelno),
                self.format(record),
                fields=fields,
                file=record.pathname,
                line=record.lineno or 0,
                function=record.funcName or "",
            )
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        self.client.flush(1.0)

    def close(self) -> None:
        self.client.close()
        super().close()
