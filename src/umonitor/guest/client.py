"""The Python guest library's clients: send records to a collector, never stall the caller.

How this works: both clients drive a ``GuestSession`` (guest/session.py), the sans-IO
core that keeps every record until an ACK covers it and produces the preface, HELLO
and the unacknowledged records again on each (re)connection. ``Client`` drives it with
a non-blocking socket (each call does what it can and returns), and ``AsyncClient``
with an asyncio task. ``LogHandler`` (guest/log_handler.py) plugs ``Client`` into
``logging``.

Connecting never waits either. ``Client`` walks one attempt through these steps, a
step per ``poll`` (``log`` polls), none of which blocks:

    idle --(retry due)--> resolving --(addresses)--> handshaking --> connected
      ^                       |                          |                |
      +------ back off -------+----- all addresses failed or timed out ---+-- lost

A numeric host (IPv4 or IPv6 literal) is resolved on the spot with AI_NUMERICHOST;
any other name is looked up by a daemon thread, started once per attempt, whose result
a later ``poll`` picks up. Each address gets a non-blocking ``connect``; later polls
ask, with a zero timeout, whether the socket became writable and read ``SO_ERROR``. An
address that neither answers nor fails within ``connect_timeout`` is abandoned for the
next one; when none is left the client backs off (0.1 s, doubling up to 5 s). Until the
connection is made, records simply wait in the session's buffer.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import math
import select
import socket
import threading
import time
from collections.abc import Iterable, Mapping

from umonitor.errors import ProtocolError
from umonitor.guest.session import DEFAULT_BUFFER, GuestSession
from umonitor.protocol import frame_codec as fc
from umonitor.records import Kind, Severity

# What a non-blocking connect() answers while the handshake goes on (as BlockingIOError
# and InterruptedError cover, which asyncio's sock_connect treats the same way).
_IN_PROGRESS = frozenset(
    {errno.EINPROGRESS, errno.EALREADY, errno.EWOULDBLOCK, errno.EAGAIN, errno.EINTR}
)
_FIRST_BACKOFF = 0.1
_MAX_BACKOFF = 5.0

# One getaddrinfo() result: family, type, proto, canonname, sockaddr (IPv4 or IPv6).
_AddrInfo = tuple[
    socket.AddressFamily,
    socket.SocketKind,
    int,
    str,
    tuple[str, int] | tuple[str, int, int, int] | tuple[int, bytes],
]


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


def _ready(sock: socket.socket, *, read: bool = False, write: bool = False, wait: float) -> bool:
    """Whether ``sock`` is readable or writable (or in error) within ``wait`` seconds.

    ``poll`` where there is one: ``select`` fails on descriptors past FD_SETSIZE.
    """
    wait = max(0.0, wait)
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, (select.POLLIN if read else 0) | (select.POLLOUT if write else 0))
        return bool(poller.poll(math.ceil(wait * 1000)))
    readable, writable, failed = select.select(
        [sock] if read else [], [sock] if write else [], [sock], wait
    )
    return bool(readable or writable or failed)


def _addresses(host: str, port: int, flags: int = 0) -> list[_AddrInfo]:
    return list(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=flags))


class _Lookup:
    """One name lookup on a daemon thread, so that no caller of ``log`` waits for DNS.

    ``done`` is set once ``addresses`` (or ``error``) holds the answer. A lookup that
    outlives its client ends on its own; being a daemon, it never holds up exit.
    """

    def __init__(self, host: str, port: int) -> None:
        self.done = threading.Event()
        self.addresses: list[_AddrInfo] = []
        self.error: Exception | None = None
        thread = threading.Thread(
            target=self._run, args=(host, port), name=f"umonitor-lookup-{host}", daemon=True
        )
        thread.start()

    def _run(self, host: str, port: int) -> None:
        try:
            self.addresses = _addresses(host, port)
        except Exception as exc:  # gaierror, UnicodeError for a bad name: all "no address"
            self.error = exc
        finally:
            self.done.set()


class Client(_ClientBase):
    """A blocking-API client whose calls never wait on the network.

    ``log`` queues and sends what the socket takes at once; ``flush`` is the only call
    that waits, for the ACKs, up to its timeout (``close`` flushes). Connecting is a
    non-blocking state machine advanced by each ``poll`` (see the module docstring):
    names other than IP literals are resolved on a daemon thread, and a connect that
    has not completed ``connect_timeout`` seconds after it began is abandoned.
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
        self._backoff = _FIRST_BACKOFF
        # The attempt in progress: a name lookup, the addresses still to try, and the
        # socket whose handshake is under way (with when to give up on it).
        self._lookup: _Lookup | None = None
        self._candidates: collections.deque[_AddrInfo] = collections.deque()
        self._pending: socket.socket | None = None
        self._pending_deadline = 0.0

    @property
    def connecting(self) -> bool:
        """True while a connection attempt is under way (name lookup or handshake)."""
        return self._lookup is not None or self._pending is not None or bool(self._candidates)

    def _kick(self) -> None:
        self.poll()

    def _connect(self) -> None:
        """Advance the connection attempt as far as it goes without waiting."""
        now = time.monotonic()
        if not self.connecting:
            if now < self._retry_at:
                return
            host, port = self.address
            try:
                self._candidates.extend(_addresses(host, port, socket.AI_NUMERICHOST))
            except socket.gaierror:
                self._lookup = _Lookup(host, port)  # not a literal: look it up off this path
                return
            except (OSError, UnicodeError, OverflowError):
                self._back_off(now)
                return
        if self._lookup is not None:
            if not self._lookup.done.is_set():
                return
            lookup, self._lookup = self._lookup, None
            self._candidates.extend(lookup.addresses)
        while self._pending is not None or self._candidates:
            if self._pending is None:
                self._pending = self._begin(self._candidates.popleft())
                self._pending_deadline = now + self._connect_timeout
                continue
            outcome = self._outcome(self._pending)
            if outcome is None and now < self._pending_deadline:
                return  # still handshaking
            sock, self._pending = self._pending, None
            if outcome:
                self._established(sock)
                return
            sock.close()  # refused, unreachable or timed out: on to the next address
        self._back_off(now)

    @staticmethod
    def _begin(info: _AddrInfo) -> socket.socket | None:
        """Start a non-blocking connect; None if it failed at once."""
        family, kind, proto, _, sockaddr = info
        try:
            sock = socket.socket(family, kind, proto)
        except OSError:
            return None
        sock.setblocking(False)
        try:
            err = sock.connect_ex(sockaddr)
        except OSError:
            err = errno.EINVAL
        if err == 0 or err in _IN_PROGRESS:
            return sock
        sock.close()
        return None

    @staticmethod
    def _outcome(sock: socket.socket) -> bool | None:
        """Without waiting: True if connected, False if the connect failed, None if
        it is still in progress."""
        try:
            if not _ready(sock, write=True, wait=0):
                return None
            return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        except OSError:
            return False

    def _established(self, sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._candidates.clear()
        self._sock = sock
        self._backoff = _FIRST_BACKOFF
        self.session.connection_made()

    def _back_off(self, now: float) -> None:
        self._retry_at = now + self._backoff
        self._backoff = min(self._backoff * 2, _MAX_BACKOFF)

    def _abandon_attempt(self) -> None:
        if self._pending is not None:
            self._pending.close()
        self._pending = None
        self._candidates.clear()
        self._lookup = None

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

    def _wait(self, limit: float) -> None:
        """Wait up to ``limit`` seconds for whatever the next ``poll`` can act on."""
        if self._sock is not None:
            _ready(self._sock, read=True, wait=min(limit, 0.05))
        elif self._pending is not None:
            left = self._pending_deadline - time.monotonic()
            _ready(self._pending, write=True, wait=min(limit, left))
        elif self._lookup is not None:
            self._lookup.done.wait(limit)
        elif not self._candidates:
            time.sleep(max(0.0, min(limit, self._retry_at - time.monotonic())))

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait up to ``timeout`` seconds until every record is acknowledged."""
        deadline = time.monotonic() + timeout
        while not self.session.all_acked:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.poll()
            if self.session.all_acked:
                break
            self._wait(deadline - time.monotonic())
        return True

    def close(self, timeout: float = 2.0) -> bool:
        """Flush, say BYE and close; True if everything was acknowledged.

        An attempt still connecting when the flush gives up is abandoned.
        """
        done = self.flush(timeout)
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.setblocking(True)
                self._sock.settimeout(1.0)
                self._sock.sendall(fc.encode(fc.Bye()))
            self._drop_connection()
        self._abandon_attempt()
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
