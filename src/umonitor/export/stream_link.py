"""A TCP connection to a downstream, optionally TLS, watched and measured.

How this works: ``StreamLink`` counts the bytes it hands to asyncio's transport and
asks the kernel (``SIOCOUTQ``, on a second descriptor of the socket that outlives
asyncio's) how many of them the peer's TCP has acknowledged, so a sink can say
exactly which messages got through when the connection fails. With TLS, done in
memory, every message is sealed in TLS records of its own, and those record bytes
are what is counted. A watcher task reads whatever the peer sends (TLS records,
RELP answers) and notes the end of the connection; ``alive`` looks, without waiting,
whether the peer already closed. ``abort`` resets the connection (SO_LINGER 0), so
the kernel does not go on sending what is still queued.

Every failure is raised as ``LinkDown`` (errors.py), whose message is the sentence
the sinks (syslog_sink.py, relp_sink.py) put in their ``DeliveryError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import re
import socket
import ssl
import struct
import termios
from collections.abc import Callable, Sequence

from umonitor.errors import LinkDown, ProtocolError

_INT = struct.Struct("i")
_LINGER_RESET = struct.pack("ii", 1, 0)  # struct linger: on, 0 s: close sends RST
_READ_SIZE = 65536
# How many times the pre-batch check lets the event loop take in bytes that already
# arrived before it decides the peer is still there.
_PEEK_ROUNDS = 8
_POLL_FIRST = 0.0005
_POLL_MAX = 0.02


def endpoint(host: str, port: int) -> str:
    """``host:port`` as messages and targets show it (an IPv6 address in brackets)."""
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


class StreamLink:
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
    ) -> StreamLink:
        where = endpoint(host, port)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, limit=_READ_SIZE), timeout
            )
        except TimeoutError:
            raise LinkDown(f"no connection to {where} within {timeout:g} s") from None
        except OSError as exc:
            if _refused(exc):
                raise LinkDown(f"connection to {where} refused") from None
            raise LinkDown(f"cannot connect to {where}: {_os_reason(exc)}") from exc
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
                raise LinkDown(f"TLS handshake with {self.where} failed: {reason or exc}") from exc
            remaining = deadline - loop.time()
            try:
                data = await asyncio.wait_for(self.reader.read(_READ_SIZE), max(remaining, 0))
            except TimeoutError:
                raise LinkDown(f"TLS handshake with {self.where} timed out") from None
            except OSError as exc:
                raise LinkDown(
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

        Raises LinkDown when the connection fails, or when neither the transport's
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
                raise LinkDown(f"{self.where} {self.gone}")
            now = loop.time()
            if (self.in_kernel, self.acked) != progress:
                progress = (self.in_kernel, self.acked)
                last_progress = now
                delay = _POLL_FIRST
            elif now - last_progress >= timeout:
                pending = end - self.acked
                raise LinkDown(
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
