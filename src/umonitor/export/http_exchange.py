"""HTTP/1.1 requests and their answers over one kept-alive connection, framed by h11.

How this works: ``ClientConnection`` is the sans-I/O part. It holds an
``h11.Connection`` that does all the framing: it writes each request (its body sized
by Content-Length) and cuts the answer out of the bytes pushed in with
``receive_data``, however the server frames it (Content-Length, chunked coding, or
the end of the connection). ``next_response_untrusted`` returns the whole answer
once it is there, bounds its head and body, skips 1xx answers, and turns h11's
errors into ``ProtocolError`` with a one-line message: nothing else escapes it.

``HttpConnection`` owns the socket (asyncio streams; TLS when given a context) and
loops over that core: write the request, read until the answer is whole. When h11
has both sides of the connection back at IDLE after an answer (``start_next_cycle``),
the connection carries the next request; when it has not (``Connection: close``,
HTTP/1.0, a body ended by the close, bytes past the answer) it is closed, and the
next request opens a new one. A kept connection that the server closed while idle,
so that no byte of an answer came, is replaced once, at once. Every failure is a
retryable ``DeliveryError`` with one sentence for people, and drops the connection.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

import h11

from umonitor.errors import DeliveryError, ProtocolError, UmonitorError

MAX_RESPONSE_HEAD = 64 << 10
MAX_RESPONSE_BODY = 1 << 20  # OTLP answers are tiny; this bounds error pages
MAX_RESPONSE_HEADERS = 100
_READ_SIZE = 65536


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """One complete HTTP response."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]  # names in lower case, in the order sent
    body: bytes
    keep_alive: bool  # whether the connection may carry another request

    def header(self, name: str) -> str | None:
        """The last value of header ``name`` (lower case), or None."""
        found = None
        for key, value in self.headers:
            if key == name:
                found = value
        return found


_BYTEARRAY = re.compile(r"bytearray\((b['\"].*?['\"])\)")


def _h11_words(exc: h11.ProtocolError) -> str:
    """h11's reason, fit to follow a colon: one line, bounded, bytes shown as bytes."""
    text = " ".join(_BYTEARRAY.sub(r"\1", str(exc)).split())
    return text if len(text) <= 120 else text[:119] + "…"


class ClientConnection:
    """The client side of one HTTP/1.1 connection, without I/O: h11 does the framing.

    For each request: ``send_request`` gives the bytes to write; push what the server
    sends with ``receive_data`` (``b""`` once it closed its side) and call
    ``next_response_untrusted`` until it returns the answer. If that answer left the
    connection reusable (``HttpResponse.keep_alive``), ``start_next_cycle`` readies it
    for the next request.
    """

    def __init__(self, max_body: int = MAX_RESPONSE_BODY) -> None:
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_RESPONSE_HEAD)
        self._max_body = max_body
        self._reset()

    def _reset(self) -> None:
        self._head: h11.Response | None = None
        self._body = bytearray()
        self._closed = False
        self.started = False  # whether any byte of the answer arrived

    def send_request(
        self, method: str, target: str, headers: Sequence[tuple[bytes, bytes]], body: bytes
    ) -> list[bytes]:
        """The bytes of one request with ``body``; raises h11.LocalProtocolError if bad."""
        out = [
            self._h11.send(
                h11.Request(
                    method=method,
                    target=target,
                    headers=[*headers, (b"Content-Length", b"%d" % len(body))],
                )
            )
            or b""
        ]
        if body:
            out += self._h11.send_with_data_passthrough(h11.Data(data=body)) or []
        out.append(self._h11.send(h11.EndOfMessage()) or b"")
        return out

    def receive_data(self, data: bytes) -> None:
        if data:
            self.started = True
        else:
            self._closed = True
        self._h11.receive_data(data)

    def next_response_untrusted(self) -> HttpResponse | None:
        """The answer once it is complete; None while more bytes are needed."""
        while True:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                raise self._error(exc) from exc
            if event is h11.NEED_DATA:
                return None
            if isinstance(event, h11.InformationalResponse):
                continue  # 100 Continue and the like: the real answer follows
            if isinstance(event, h11.Response):
                self._take_head_untrusted(event)
            elif isinstance(event, h11.Data):
                if len(self._body) + len(event.data) > self._max_body:
                    raise ProtocolError(f"response body longer than {self._max_body} bytes")
                self._body += event.data
            elif isinstance(event, h11.EndOfMessage) and self._head is not None:
                return self._finish(self._head)
            else:  # the connection closed, or h11 paused, before the answer's end
                raise ProtocolError(f"unexpected {type(event).__name__} in the answer")

    def start_next_cycle(self) -> None:
        """Ready the connection for another request after a keep-alive answer."""
        self._h11.start_next_cycle()
        self._reset()

    def _take_head_untrusted(self, head: h11.Response) -> None:
        if len(head.headers) > MAX_RESPONSE_HEADERS:
            raise ProtocolError(f"more than {MAX_RESPONSE_HEADERS} response headers")
        for name, value in head.headers:
            if name == b"content-length" and int(value) > self._max_body:
                raise ProtocolError(f"response body longer than {self._max_body} bytes")
        self._head = head

    def _finish(self, head: h11.Response) -> HttpResponse:
        trailing, closed = self._h11.trailing_data
        reusable = (
            self._h11.our_state is h11.DONE
            and self._h11.their_state is h11.DONE
            and not closed
            and not trailing  # bytes nobody asked for: the two sides are out of step
        )
        return HttpResponse(
            head.status_code,
            head.reason.decode("latin-1"),
            tuple((k.decode("ascii"), v.decode("latin-1")) for k, v in head.headers),
            bytes(self._body),
            reusable,
        )

    def _error(self, exc: h11.RemoteProtocolError) -> ProtocolError:
        """Our error for one of h11's, saying where in the answer it went wrong."""
        if self._closed:  # the end of the connection is what h11 could not take
            if not self.started:
                return ProtocolError("the server closed the connection without answering")
            return ProtocolError("the server closed the connection in the middle of its answer")
        words = _h11_words(exc)
        if self._head is None:
            if exc.error_status_hint == 431:
                return ProtocolError(f"response head longer than {MAX_RESPONSE_HEAD >> 10} KiB")
            if "_SWITCH_UPGRADE" in words:  # a 101 to a request that asked for none
                return ProtocolError("the server switched protocols")
            if words.startswith("illegal status line"):
                return ProtocolError(f"not an HTTP/1.x status line{words[19:]}")
            return ProtocolError(f"bad response head: {words}")
        return ProtocolError(f"bad response body: {words}")


class _ClosedUnanswered(UmonitorError):
    """The connection ended before any byte of the answer came."""


def _describe(exc: OSError) -> str:
    """A few words for a socket error, fit to follow a colon."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate not accepted ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed ({exc.reason or exc})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, BrokenPipeError | ConnectionAbortedError):
        return "connection closed"
    text = exc.strerror or str(exc) or type(exc).__name__
    return text[:1].lower() + text[1:]


def _how_far_it_got(exc: OSError) -> int:
    """Lower for a connection error that tells more about the server."""
    if isinstance(exc, ssl.SSLError):
        return 0
    if isinstance(exc, ConnectionRefusedError):
        return 1
    return 2


class HttpConnection:
    """One HTTP/1.1 server, one request at a time, over a connection kept between them.

    ``timeout`` bounds each request, connecting included. ``where`` names the server
    in messages (``host:port``). Not shared between tasks.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        where: str,
        timeout: float,
        ssl_context: ssl.SSLContext | None = None,
        max_body: int = MAX_RESPONSE_BODY,
    ) -> None:
        self._host = host
        self._port = port
        self._where = where
        self._timeout = timeout
        self._ssl = ssl_context
        self._max_body = max_body
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._framing = ClientConnection(max_body)

    async def request(
        self, method: str, target: str, headers: Sequence[tuple[bytes, bytes]], body: bytes
    ) -> HttpResponse:
        """One request and its answer, on the kept connection or a new one."""
        reader = self._reader
        if reader is not None and (reader.at_eof() or reader.exception() is not None):
            self._abort()
        while True:
            reused = self._writer is not None
            connected = reused
            done = False
            try:
                async with asyncio.timeout(self._timeout):
                    if not reused:
                        await self._connect()
                        connected = True
                    response = await self._round_trip(method, target, headers, body)
                done = True
            except _ClosedUnanswered:
                if reused:  # the server closed it while idle, before our request came
                    continue
                raise DeliveryError(
                    f"{self._where} closed the connection without answering"
                ) from None
            except TimeoutError:
                if not connected:
                    raise DeliveryError(
                        f"cannot connect to {self._where}: no answer within {self._timeout:g} s"
                    ) from None
                raise DeliveryError(
                    f"no answer from {self._where} within {self._timeout:g} s"
                ) from None
            except ProtocolError as exc:
                raise DeliveryError(f"bad HTTP answer from {self._where}: {exc}") from exc
            except h11.LocalProtocolError as exc:
                raise DeliveryError(f"cannot send to {self._where}: {exc}") from exc
            except OSError as exc:
                raise DeliveryError(
                    f"lost the connection to {self._where}: {_describe(exc)}"
                ) from exc
            finally:
                if not done:
                    self._abort()
            if response.keep_alive:
                self._framing.start_next_cycle()
            else:
                await self.close()
            return response

    async def close(self) -> None:
        writer = self._writer
        self._reader = self._writer = None
        self._framing = ClientConnection(self._max_body)
        if writer is None:
            return
        writer.close()
        try:
            async with asyncio.timeout(self._timeout):
                await writer.wait_closed()
        except (OSError, TimeoutError):
            writer.transport.abort()

    def _abort(self) -> None:
        """Drop the connection at once: after a failure it is in no state to reuse."""
        if self._writer is not None:
            self._writer.transport.abort()
        self._reader = self._writer = None
        self._framing = ClientConnection(self._max_body)

    async def _connect(self) -> None:
        """Open a connection, trying each address of the host in turn."""
        loop = asyncio.get_running_loop()
        try:
            addresses = await loop.getaddrinfo(self._host, self._port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise DeliveryError(f"cannot resolve {self._host}: {_describe(exc)}") from exc
        errors: list[OSError] = []
        for *_, sockaddr in addresses:
            try:
                self._reader, self._writer = await asyncio.open_connection(
                    str(sockaddr[0]),
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl else None,
                )
                return
            except OSError as exc:
                errors.append(exc)
        if not errors:
            raise DeliveryError(f"cannot connect to {self._where}: no address for {self._host}")
        # Tell of the address that got furthest: a TLS failure means a server was
        # there; "refused" says nothing listens, which beats "cannot assign requested
        # address" from, say, an IPv6 address the host does not use.
        cause = min(errors, key=_how_far_it_got)
        raise DeliveryError(f"cannot connect to {self._where}: {_describe(cause)}") from cause

    async def _round_trip(
        self, method: str, target: str, headers: Sequence[tuple[bytes, bytes]], body: bytes
    ) -> HttpResponse:
        reader, writer, framing = self._reader, self._writer, self._framing
        assert reader is not None and writer is not None
        try:
            writer.writelines(framing.send_request(method, target, headers, body))
            await writer.drain()
            while (response := framing.next_response_untrusted()) is None:
                framing.receive_data(await reader.read(_READ_SIZE))
        except (ConnectionError, ProtocolError) as exc:
            if not framing.started:
                raise _ClosedUnanswered from exc
            raise
        return response
