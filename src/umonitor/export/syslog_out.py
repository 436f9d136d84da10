"""Syslog out: stored records forwarded as RFC 5424 over TCP, TLS or RELP.

How this works: ``format_item`` turns one stored record into one RFC 5424 message
(protocol/syslog_format.py says how). ``SyslogSink`` sends the messages of a batch over TCP or TLS
with RFC 6587 octet counting (``LEN SP MSG``), so messages may hold newlines.
``RelpSink`` sends each message as one RELP ``syslog`` command and waits for the
server's ``200 OK`` to every one of them.

What a successful ``send`` means, per sink:

``SyslogSink`` (TCP, TLS). Plain syslog has no acknowledgements, so the sink uses
what the kernel knows:

* Before each batch it checks, without waiting, whether the peer has already closed
  the connection (a FIN or RST received, seen by the reader task or by a
  ``MSG_PEEK`` on the socket); if so it reconnects instead of writing into a dead
  connection.
* After writing a batch it returns only once the peer's TCP has acknowledged every
  byte of it: the transport's buffer is empty and ``SIOCOUTQ`` (bytes sent but not
  acknowledged) is zero. It polls both rather than awaiting ``drain()``, which only
  says the buffer fell below a mark. ``timeout`` bounds connecting, the TLS
  handshake, and how long the peer may go without taking or acknowledging a byte.
* On any failure it raises ``DeliveryError`` whose ``delivered`` counts the
  messages whose every byte the peer's TCP had acknowledged, then resets the
  connection (SO_LINGER 0, so the kernel does not go on sending the rest later). The
  count comes from the bytes the kernel had taken minus ``SIOCOUTQ``, read on a
  second descriptor of the socket that outlives asyncio's (the kernel keeps that
  number after a reset), mapped to the batch's message boundaries. It never counts
  a message the peer did not acknowledge. A batch acknowledged in full before the
  connection failed counts as sent.
* With TLS every message is sealed in TLS records of its own, and those record
  bytes are what is counted, so ``delivered`` is just as exact.

Hence nothing is lost while the receiver is down, or when it closed between
batches after reading what it was sent; and a message whose bytes the peer's TCP
acknowledged is not sent twice. (A message cut short by the end of a connection is
sent again whole; a receiver that keeps the cut part when the peer closes mid-frame,
as umonitor's own listener does, then has both.) What can still be lost is what the
receiver's kernel acknowledged but the receiving process never read: a receiver
stopped or crashed with data in its socket buffer (rsyslog, stopped with SIGTERM,
does not read its connections dry first), at most that buffer's worth. The sender
cannot see this loss. tests/integration/test_forward_rsyslog.py measures it; use
RELP where it matters.

``RelpSink`` (RELP, rsyslog's Reliable Event Logging Protocol). The server answers
each ``syslog`` command once it has taken the message (rsyslog: queued it for its
actions), so ``send`` returns only when every message of the batch was answered
``200 OK``; up to ``window`` messages are unanswered at a time. ``delivered`` is
the number answered in order from the start of the batch; anything not answered is
sent again by the runner. So a receiver restarted mid-stream loses nothing, as long
as it keeps what it answered (rsyslog, stopped in order, writes it out first). A
message the server took but whose answer it never sent (stopped between the two) is
sent twice: RELP delivers at least once. The server's frames are read with bounded
sizes; anything off-protocol, an answer that is not ``200``, a ``serverclose`` or
no answer within ``timeout`` ends the session with a DeliveryError.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import errno
import fcntl
import os
import re
import socket
import ssl
import struct
import termios
from collections import deque
from collections.abc import Callable, Sequence

from umonitor.errors import DeliveryError, ProtocolError, UmonitorError
from umonitor.export.base import ExportItem
from umonitor.protocol.relp import (
    MAX_TXNR,
    RELP_OFFERS,
    RelpDecoder,
    RelpFrame,
    encode_relp,
    relp_offers_untrusted,
    relp_status_untrusted,
)
from umonitor.protocol.syslog_format import format_rfc5424, octet_counted


def format_item(item: ExportItem) -> bytes:
    """The RFC 5424 message of one exported record."""
    stored = item.stored
    return format_rfc5424(stored.record, stored.instance, stored.origin, stored.time_ns, item.boot)


# ---------------------------------------------------------------------------------
# One TCP connection (optionally TLS), watched and measured.

_INT = struct.Struct("i")
_LINGER_RESET = struct.pack("ii", 1, 0)  # struct linger: on, 0 s: close sends RST
_READ_SIZE = 65536
# How many times the pre-batch check lets the event loop take in bytes that already
# arrived before it decides the peer is still there.
_PEEK_ROUNDS = 8
_POLL_FIRST = 0.0005
_POLL_MAX = 0.02


class _LinkDown(UmonitorError):
    """The connection failed; ``str()`` is the sentence for DeliveryError.

    ``delivered`` is set where the failing step knows how many messages got through.
    """

    def __init__(self, message: str, delivered: int = 0) -> None:
        super().__init__(message)
        self.delivered = delivered


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# asyncio joins the errors of a name with several addresses into one message.
_ERRNOS = re.compile(r"\[Errno (\d+)\]")


def _refused(exc: OSError) -> bool:
    """Whether every address refused the connection."""
    if isinstance(exc, ConnectionRefusedError):
        return True
    codes = set(_ERRNOS.findall(str(exc))) if exc.errno is None else set()
    return codes == {str(errno.ECONNREFUSED)}


def _os_reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


class _Link:
    """One TCP connection, optionally carrying TLS done in memory.

    Counts the bytes it hands to the transport (``wire_written``, TLS records
    included) and learns from the kernel how many of them the peer's TCP has
    acknowledged. A second descriptor for the socket (``probe``) keeps the kernel
    socket open after asyncio closed its own on an error, so the acknowledged count
    can still be read then. A watcher task reads whatever the peer sends: TLS
    records, RELP answers (``on_data``), and the end of the connection.
    """

    def __init__(
        self,
        where: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        probe: socket.socket,
        on_data: Callable[[bytes], None] | None,
    ) -> None:
        self.where = where
        self.reader = reader
        self.writer = writer
        self.probe = probe
        self.on_data = on_data
        self.tls: ssl.SSLObject | None = None
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self.wire_written = 0  # bytes handed to the transport on this connection
        self.in_kernel = 0  # of those, how many the kernel had taken, last seen
        self.acked = 0  # of those, how many the peer's TCP had acknowledged, last seen
        self.gone: str | None = None  # why the connection is over, once it is
        self.changed = asyncio.Event()  # set when data arrives or the peer goes
        self._watcher: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        timeout: float,
        *,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        on_data: Callable[[bytes], None] | None = None,
    ) -> _Link:
        where = _where(host, port)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, limit=_READ_SIZE), timeout
            )
        except TimeoutError:
            raise _LinkDown(f"no connection to {where} within {timeout:g} s") from None
        except OSError as exc:
            if _refused(exc):
                raise _LinkDown(f"connection to {where} refused") from None
            raise _LinkDown(f"cannot connect to {where}: {_os_reason(exc)}") from exc
        sock = writer.get_extra_info("socket")
        probe = socket.socket(fileno=os.dup(sock.fileno()))
        link = cls(where, reader, writer, probe, on_data)
        try:
            if ssl_context is not None:
                await link._handshake(ssl_context, server_hostname or host, deadline)
        except BaseException:
            link.abort()
            raise
        link._watcher = asyncio.create_task(link._watch())
        return link

    async def _handshake(
        self, context: ssl.SSLContext, server_hostname: str, deadline: float
    ) -> None:
        tls = context.wrap_bio(self._incoming, self._outgoing, server_hostname=server_hostname)
        loop = asyncio.get_running_loop()
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush_tls()
            except (ssl.SSLError, ssl.CertificateError) as exc:
                reason = getattr(exc, "verify_message", None) or getattr(exc, "reason", None)
                raise _LinkDown(f"TLS handshake with {self.where} failed: {reason or exc}") from exc
            remaining = deadline - loop.time()
            try:
                data = await asyncio.wait_for(self.reader.read(_READ_SIZE), max(remaining, 0))
            except TimeoutError:
                raise _LinkDown(f"TLS handshake with {self.where} timed out") from None
            except OSError as exc:
                raise _LinkDown(
                    f"TLS handshake with {self.where} failed: {_os_reason(exc)}"
                ) from exc
            if data:
                self._incoming.write(data)
            else:
                self._incoming.write_eof()
        self._flush_tls()
        self.tls = tls

    def _flush_tls(self) -> None:
        data = self._outgoing.read()
        if data:
            self._write(data)

    def _write(self, data: bytes) -> None:
        self.writer.write(data)
        self.wire_written += len(data)

    def write_messages(self, messages: Sequence[bytes]) -> list[int]:
        """Hand ``messages`` to the transport; where each ends, as a count of wire bytes.

        With TLS each message is sealed in records of its own, so a message has
        reached the peer's TCP once that many wire bytes are acknowledged.
        """
        ends: list[int] = []
        position = self.wire_written
        tls = self.tls
        if tls is None:
            for message in messages:
                position += len(message)
                ends.append(position)
            self._write(b"".join(messages))
            return ends
        self._flush_tls()
        position = self.wire_written
        sealed: list[bytes] = []
        for message in messages:
            tls.write(message)
            record = self._outgoing.read()
            sealed.append(record)
            position += len(record)
            ends.append(position)
        self._write(b"".join(sealed))
        return ends

    def write(self, data: bytes) -> None:
        """Hand ``data`` to the transport (sealed, with TLS)."""
        self.write_messages([data])

    def _outq(self) -> int | None:
        """Bytes the peer's TCP has not acknowledged yet (SIOCOUTQ), if the kernel says."""
        try:
            raw = fcntl.ioctl(self.probe.fileno(), termios.TIOCOUTQ, _INT.pack(0))
        except OSError:
            return None
        return int(_INT.unpack(raw)[0])

    def sample(self) -> None:
        """Update ``acked`` from the kernel, while the transport's own count is valid."""
        transport = self.writer.transport
        if transport.is_closing():
            return  # it dropped its buffer: wire_written no longer says what it sent
        in_kernel = self.wire_written - transport.get_write_buffer_size()
        outq = self._outq()
        if outq is None:
            return
        self.in_kernel = max(self.in_kernel, in_kernel)
        self.acked = max(self.acked, in_kernel - outq)

    def final_acked(self) -> int:
        """Wire bytes surely acknowledged, asked once more after a failure.

        The kernel socket outlives asyncio's descriptor (``probe``), and SIOCOUTQ
        stays ``sent - acknowledged`` after a reset; ``in_kernel`` is no more than
        what was sent, so the difference is never more than what was acknowledged.
        """
        self.sample()
        outq = self._outq()
        if outq is not None:
            self.acked = max(self.acked, self.in_kernel - outq)
        return self.acked

    async def wait_acked(self, end: int, timeout: float) -> None:
        """Return once the peer's TCP acknowledged the first ``end`` wire bytes.

        Raises _LinkDown when the connection fails, or when neither the transport's
        buffer nor the kernel's queue moved for ``timeout`` seconds.
        """
        loop = asyncio.get_running_loop()
        delay = _POLL_FIRST
        progress = (self.in_kernel, self.acked)
        last_progress = loop.time()
        while True:
            self.sample()
            if self.acked >= end:
                return
            self.check_transport()
            if self.gone is not None:
                raise _LinkDown(f"{self.where} {self.gone}")
            now = loop.time()
            if (self.in_kernel, self.acked) != progress:
                progress = (self.in_kernel, self.acked)
                last_progress = now
                delay = _POLL_FIRST
            elif now - last_progress >= timeout:
                pending = end - self.acked
                raise _LinkDown(
                    f"{self.where} did not acknowledge {pending} bytes within {timeout:g} s"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, _POLL_MAX)

    def check_transport(self) -> None:
        """Note a transport that asyncio closed (after an error) as the peer gone."""
        if self.gone is None and self.writer.transport.is_closing():
            exc = self.reader.exception()
            self._lost(_reason(exc) if exc is not None else "closed the connection")

    async def alive(self) -> bool:
        """Whether the peer is still there, from what already arrived; never waits."""
        for _ in range(_PEEK_ROUNDS):
            # Let the event loop deliver what the kernel holds (data, FIN, RST).
            await asyncio.sleep(0)
            self.check_transport()
            if self.gone is not None:
                return False
            try:
                peeked = self.probe.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                return True
            except OSError as exc:
                self._lost(_reason(exc))
                return False
            if not peeked:
                self._lost("closed the connection")
                return False
            # Bytes the watcher has not read yet; look again once it has.
        return True

    def _lost(self, why: str) -> None:
        if self.gone is None:
            self.gone = why
        self.changed.set()

    async def _watch(self) -> None:
        """Read what the peer sends until it goes; never raises."""
        try:
            while True:
                data = await self.reader.read(_READ_SIZE)
                if not data:
                    self._lost("closed the connection")
                    return
                if self.tls is not None:
                    data = self._unseal_untrusted(data)
                if data and self.on_data is not None:
                    self.on_data(data)
                self.changed.set()
                if self.gone is not None:
                    return
        except ProtocolError as exc:
            self._lost(f"sent bad data: {exc}")
        except OSError as exc:
            self._lost(_reason(exc))

    def _unseal_untrusted(self, data: bytes) -> bytes:
        """Application data in the TLS records just received; notes close_notify."""
        tls = self.tls
        assert tls is not None
        self._incoming.write(data)
        plain = bytearray()
        try:
            while chunk := tls.read(_READ_SIZE):
                plain += chunk
            self._lost("closed the TLS session")  # read() gives b"" after close_notify
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:
            self._lost("closed the TLS session")
        except ssl.SSLError as exc:
            self._lost(f"broke the TLS session: {exc.reason or exc}")
        self._flush_tls()  # e.g. an answer to a key update
        return bytes(plain)

    def abort(self) -> None:
        """Drop the connection at once, with a reset.

        Without SO_LINGER 0, closing leaves the kernel sending what is still queued;
        those bytes could then arrive after the runner sent the same records again.
        """
        self._lost("connection closed here")
        if self._watcher is not None:
            self._watcher.cancel()
        with contextlib.suppress(OSError):
            self.probe.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        self.writer.transport.abort()
        self.probe.close()

    async def close(self, timeout: float) -> None:
        """Close politely: TLS close_notify, then FIN once the transport is flushed."""
        if self._watcher is not None:
            self._watcher.cancel()
        if self.tls is not None and self.gone is None:
            with contextlib.suppress(ssl.SSLError):
                self.tls.unwrap()
            self._flush_tls()
        self._lost("connection closed here")
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), timeout)
        except (OSError, TimeoutError):
            self.writer.transport.abort()
        finally:
            self.probe.close()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionResetError):
        return "reset the connection"
    if isinstance(exc, BrokenPipeError):
        return "closed the connection"
    if isinstance(exc, OSError):
        return f"connection failed: {_os_reason(exc)}"
    return f"connection failed: {exc}"


# ---------------------------------------------------------------------------------
# Syslog over TCP and TLS.


class SyslogSink:
    """RFC 5424 over TCP or TLS with octet counting; see the module doc for guarantees."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.server_hostname = server_hostname
        self.timeout = timeout
        self._link: _Link | None = None

    @property
    def target(self) -> str:
        scheme = "syslog+tls" if self.ssl_context is not None else "syslog+tcp"
        return f"{scheme}://{_where(self.host, self.port)}"

    async def _ready_link(self) -> _Link:
        link = self._link
        if link is not None and not await link.alive():
            link.abort()
            self._link = link = None
        if link is None:
            link = await _Link.open(
                self.host,
                self.port,
                self.timeout,
                ssl_context=self.ssl_context,
                server_hostname=self.server_hostname,
            )
            self._link = link
        return link

    async def send(self, items: Sequence[ExportItem]) -> None:
        if not items:
            return
        frames = [octet_counted(format_item(item)) for item in items]
        try:
            link = await self._ready_link()
        except _LinkDown as exc:
            raise DeliveryError(str(exc), 0) from None
        ends = link.write_messages(frames)
        try:
            await link.wait_acked(ends[-1], self.timeout)
        except _LinkDown as exc:
            delivered = bisect.bisect_right(ends, link.final_acked())
            link.abort()
            self._link = None
            if delivered < len(items):
                raise DeliveryError(str(exc), delivered) from None
            # Every byte was acknowledged before the connection failed: delivered.

    async def close(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            await link.close(min(self.timeout, 5.0))


# ---------------------------------------------------------------------------------
# RELP over TCP.


class _RelpSession:
    """One open RELP session: numbers transactions, matches answers."""

    def __init__(self, link: _Link, decoder: RelpDecoder, frames: deque[RelpFrame]) -> None:
        self.link = link
        self.decoder = decoder
        self.frames = frames
        self.next_txnr = 1
        self.closing = False  # the server said serverclose

    @classmethod
    async def open(cls, host: str, port: int, timeout: float) -> _RelpSession:
        decoder = RelpDecoder()
        frames: deque[RelpFrame] = deque()

        def on_data(data: bytes) -> None:
            decoder.receive_data(data)
            while batch := decoder.next_frames():
                frames.extend(batch)

        link = await _Link.open(host, port, timeout, on_data=on_data)
        session = cls(link, decoder, frames)
        try:
            txnr = session.take_txnr()
            link.write(encode_relp(RelpFrame(txnr, "open", RELP_OFFERS)))
            answer = await session.next_frame(timeout)
            if answer.command != "rsp" or answer.txnr != txnr:
                raise _LinkDown(
                    f"{link.where} answered RELP open with {answer.command} {answer.txnr}"
                )
            code, text = relp_status_untrusted(answer.data)
            if code != 200:
                raise _LinkDown(f"{link.where} refused the RELP session: {code} {text}")
            commands = relp_offers_untrusted(answer.data).get("commands", "").split(",")
            if "syslog" not in commands:
                raise _LinkDown(f"{link.where} does not offer the RELP syslog command")
        except ProtocolError as exc:
            link.abort()
            raise _LinkDown(f"{link.where} sent bad data: {exc}") from None
        except BaseException:
            link.abort()
            raise
        return session

    def take_txnr(self) -> int:
        txnr = self.next_txnr
        self.next_txnr = 1 if txnr >= MAX_TXNR else txnr + 1
        return txnr

    async def next_frame(self, timeout: float) -> RelpFrame:
        """The next frame from the server; _LinkDown if none comes within ``timeout``."""
        link = self.link
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.frames:
            link.check_transport()
            if link.gone is not None:
                raise _LinkDown(f"{link.where} {link.gone}")
            link.changed.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise _LinkDown(f"{link.where} did not answer within {timeout:g} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(link.changed.wait(), remaining)
        return self.frames.popleft()

    async def usable(self) -> bool:
        """Whether the session can take another batch: no serverclose, peer still there."""
        if self.closing or not await self.link.alive():
            return False
        # Anything unasked for between batches (serverclose, stray answers) ends it.
        return not self.frames

    async def transfer(self, messages: Sequence[bytes], timeout: float, window: int) -> None:
        """Send every message and wait for all answers.

        On failure raises _LinkDown whose ``delivered`` counts the messages answered
        200 in order from the first.
        """
        link = self.link
        count = len(messages)
        pending: dict[int, int] = {}  # txnr -> index in messages
        answered = [False] * count
        delivered = 0
        sent = 0
        try:
            while delivered < count:
                if sent < count and len(pending) < window:
                    chunk: list[bytes] = []
                    while sent < count and len(pending) < window:
                        txnr = self.take_txnr()
                        pending[txnr] = sent
                        chunk.append(encode_relp(RelpFrame(txnr, "syslog", messages[sent])))
                        sent += 1
                    link.write(b"".join(chunk))
                frame = await self.next_frame(timeout)
                while True:
                    if frame.command == "serverclose":
                        self.closing = True
                        raise _LinkDown(f"{link.where} closed the RELP session")
                    if frame.command != "rsp":
                        raise _LinkDown(
                            f"{link.where} sent an unexpected RELP command {frame.command!r}"
                        )
                    index = pending.pop(frame.txnr, None)
                    if index is None:
                        raise _LinkDown(
                            f"{link.where} answered RELP transaction {frame.txnr}, "
                            "which was not pending"
                        )
                    code, text = relp_status_untrusted(frame.data)
                    if code != 200:
                        raise _LinkDown(f"{link.where} refused a message: {code} {text}")
                    answered[index] = True
                    while delivered < count and answered[delivered]:
                        delivered += 1
                    if delivered == count or not self.frames:
                        break  # what follows the last answer (serverclose) waits for usable()
                    frame = self.frames.popleft()
        except ProtocolError as exc:
            raise _LinkDown(f"{link.where} sent bad data: {exc}", delivered) from None
        except _LinkDown as exc:
            exc.delivered = delivered
            raise

    async def close(self, timeout: float) -> None:
        """Say ``close``, wait briefly for its answer, then close the connection."""
        link = self.link
        if not self.closing and link.gone is None:
            try:
                txnr = self.take_txnr()
                link.write(encode_relp(RelpFrame(txnr, "close")))
                await self.next_frame(timeout)
            except (_LinkDown, ProtocolError):
                pass
        await link.close(timeout)


class RelpSink:
    """RFC 5424 messages over RELP: each one answered by the server (see the module doc)."""

    def __init__(self, host: str, port: int, *, timeout: float = 10.0, window: int = 128) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self.host = host
        self.port = port
        self.timeout = timeout
        self.window = window
        self._session: _RelpSession | None = None

    @property
    def target(self) -> str:
        return f"relp://{_where(self.host, self.port)}"

    async def _ready_session(self) -> _RelpSession:
        session = self._session
        if session is not None and not await session.usable():
            session.link.abort()
            self._session = session = None
        if session is None:
            session = await _RelpSession.open(self.host, self.port, self.timeout)
            self._session = session
        return session

    async def send(self, items: Sequence[ExportItem]) -> None:
        if not items:
            return
        messages = [format_item(item) for item in items]
        try:
            session = await self._ready_session()
        except _LinkDown as exc:
            raise DeliveryError(str(exc), 0) from None
        try:
            await session.transfer(messages, self.timeout, self.window)
        except _LinkDown as exc:
            session.link.abort()
            self._session = None
            raise DeliveryError(str(exc), exc.delivered) from None

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close(min(self.timeout, 5.0))
