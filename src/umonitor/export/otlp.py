"""OpenTelemetry logs out: OTLP over HTTP/1.1 with protobuf bodies.

How this works: ``protocol/otlp_logs.py`` writes the ``ExportLogsServiceRequest``
bodies and reads the answers' protobuf. ``OtlpHttpSink`` posts the bodies over one
kept-alive connection of its own; ``ResponseParser`` cuts the answer out of the byte
stream without doing any I/O. Everything that reads the server's bytes ends in
``_untrusted`` and can raise only ``ProtocolError``.

Delivery: a batch whose body would pass 4 MiB is cut into several requests, each a
run of whole items in store order, so ``DeliveryError.delivered`` counts exactly the
items whose requests were answered 2xx. On 2xx, a ``partial_success`` with rejected
records does not raise: the server has kept the rest for good and will never take
the rejected ones, and it does not say which they were, so a ``delivered`` count
could only blame the wrong records. The sink adds them to ``rejected_total`` and
keeps the server's message in ``last_rejection``. 429, 502, 503 and 504 raise a
retryable ``DeliveryError`` (``retry_after`` holds a Retry-After in seconds); every
other status raises a permanent one, as the OTLP/HTTP spec says those must not be
retried (redirects are not followed). Connection failures, timeouts and malformed
answers raise a retryable one and drop the connection; the next ``send`` reconnects.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import gzip
import importlib.metadata
import re
import socket
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from umonitor.errors import DeliveryError, ProtocolError, UmonitorError, UsageError
from umonitor.export.base import ExportItem
from umonitor.protocol.otlp_logs import (
    LogsEncoder,
    one_line,
    parse_partial_success_untrusted,
    status_message_untrusted,
    text_untrusted,
)

MAX_BODY = 4 << 20  # largest request body (before compression) the sink sends
MAX_RESPONSE_HEAD = 64 << 10
MAX_RESPONSE_BODY = 1 << 20  # OTLP answers are tiny; this bounds error pages
MAX_RESPONSE_HEADERS = 100
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
DEFAULT_PATH = "/v1/logs"


@functools.cache
def package_version() -> str:
    """umonitor's installed version, or "" when it is run from a source tree."""
    try:
        return importlib.metadata.version("umonitor")
    except importlib.metadata.PackageNotFoundError:
        return ""


@functools.cache
def _encoder() -> LogsEncoder:
    """The encoder for this host: every sink of the process shares its resource cache."""
    return LogsEncoder(socket.gethostname(), package_version())


# --- HTTP/1.1 responses, sans I/O -----------------------------------------------------


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


class _Reading(enum.Enum):
    HEAD = "head"
    LENGTH = "length"
    CHUNK_SIZE = "chunk size"
    CHUNK_DATA = "chunk data"
    CHUNK_END = "chunk end"
    TRAILER = "trailer"
    UNTIL_CLOSE = "until close"
    DONE = "done"


_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([1-9][0-9][0-9])(?: ([^\r\n]*))?")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}")
_DIGITS = re.compile(r"[0-9]{1,18}")  # not str.isdigit, which also takes "²"
_MAX_LINE = 4096


class ResponseParser:
    """Cuts one HTTP/1.x response out of the bytes a server sends; does no I/O.

    Push bytes with ``receive_data`` (``b""`` once the server closed its side) and
    call ``next_response_untrusted`` until it returns the response. Informational
    (1xx) responses are skipped. Bodies are framed by Content-Length, chunked
    transfer coding, or the end of the connection, and bounded by ``max_body``.
    """

    def __init__(self, max_body: int = MAX_RESPONSE_BODY) -> None:
        self._max_body = max_body
        self._buffer = bytearray()
        self._eof = False
        self._state = _Reading.HEAD
        self._remaining = 0
        self._body = bytearray()
        self._status = 0
        self._reason = ""
        self._headers: tuple[tuple[str, str], ...] = ()
        self._keep_alive = False
        self.started = False  # whether any byte of the answer arrived

    def receive_data(self, data: bytes) -> None:
        if data:
            self._buffer += data
            self.started = True
        else:
            self._eof = True

    def next_response_untrusted(self) -> HttpResponse | None:
        """The response once it is complete; None while more bytes are needed."""
        while True:
            state = self._state
            if state is _Reading.HEAD:
                end = self._buffer.find(b"\r\n\r\n", 0, MAX_RESPONSE_HEAD + 4)
                if end < 0:
                    if len(self._buffer) >= MAX_RESPONSE_HEAD + 4:
                        raise ProtocolError("response head longer than 64 KiB")
                    self._check_eof_untrusted()
                    return None
                head = bytes(self._buffer[:end])
                del self._buffer[: end + 4]
                self._start_untrusted(head)
            elif state in (_Reading.LENGTH, _Reading.CHUNK_DATA):
                take = min(self._remaining, len(self._buffer))
                self._body += self._buffer[:take]
                del self._buffer[:take]
                self._remaining -= take
                if self._remaining:
                    self._check_eof_untrusted()
                    return None
                self._state = _Reading.DONE if state is _Reading.LENGTH else _Reading.CHUNK_END
            elif state is _Reading.CHUNK_SIZE:
                line = self._line_untrusted()
                if line is None:
                    self._check_eof_untrusted()
                    return None
                size_text = line.split(b";", 1)[0].strip(b" \t")
                if not _HEX.fullmatch(size_text):
                    raise ProtocolError(f"bad chunk size line {line[:40]!r}")
                size = int(size_text, 16)
                self._grow(size)
                self._remaining = size
                self._state = _Reading.CHUNK_DATA if size else _Reading.TRAILER
            elif state is _Reading.CHUNK_END:
                if len(self._buffer) < 2:
                    self._check_eof_untrusted()
                    return None
                if self._buffer[:2] != b"\r\n":
                    raise ProtocolError("chunk data not followed by CRLF")
                del self._buffer[:2]
                self._state = _Reading.CHUNK_SIZE
            elif state is _Reading.TRAILER:
                line = self._line_untrusted()
                if line is None:
                    self._check_eof_untrusted()
                    return None
                self._grow(len(line))  # trailer fields count against the body's bound
                if not line:  # and are of no use here, so they are skipped
                    self._state = _Reading.DONE
            elif state is _Reading.UNTIL_CLOSE:
                self._grow(len(self._buffer))
                self._body += self._buffer
                self._buffer.clear()
                if not self._eof:
                    return None
                self._state = _Reading.DONE
            else:
                return HttpResponse(
                    self._status,
                    self._reason,
                    self._headers,
                    bytes(self._body),
                    self._keep_alive and not self._buffer,  # extra bytes: out of step
                )

    def _check_eof_untrusted(self) -> None:
        """Raise if more bytes are needed but the server has closed the connection."""
        if self._eof:
            if not self.started:
                raise ProtocolError("the server closed the connection without answering")
            raise ProtocolError("the server closed the connection in the middle of its answer")

    def _grow(self, size: int) -> None:
        if len(self._body) + size > self._max_body:
            raise ProtocolError(f"response body longer than {self._max_body} bytes")

    def _line_untrusted(self) -> bytes | None:
        end = self._buffer.find(b"\r\n")
        if end < 0:
            if len(self._buffer) > _MAX_LINE:
                raise ProtocolError("line in a chunked body too long")
            return None
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 2]
        return line

    def _start_untrusted(self, head: bytes) -> None:
        """Take a response head; set up reading its body."""
        status_line, *lines = head.split(b"\r\n")
        match = _STATUS_LINE.fullmatch(status_line)
        if match is None:
            raise ProtocolError(f"not an HTTP/1.x status line: {status_line[:60]!r}")
        if len(lines) > MAX_RESPONSE_HEADERS:
            raise ProtocolError(f"more than {MAX_RESPONSE_HEADERS} response headers")
        headers = []
        for line in lines:
            name, colon, value = line.partition(b":")
            if not colon or not _TOKEN.fullmatch(name):
                raise ProtocolError(f"bad response header line {line[:60]!r}")
            headers.append((name.decode("ascii").lower(), value.strip(b" \t").decode("latin-1")))
        status = int(match[2])
        if status < 200:
            if status == 101:
                raise ProtocolError("the server switched protocols")
            return  # informational: the real answer follows
        self._status = status
        self._reason = (match[3] or b"").decode("latin-1")
        self._headers = tuple(headers)
        options = {
            token.strip().lower()
            for key, value in headers
            if key == "connection"
            for token in value.split(",")
        }
        self._keep_alive = "close" not in options and (match[1] == b"1" or "keep-alive" in options)
        codings = [
            coding.strip().lower()
            for key, value in headers
            if key == "transfer-encoding"
            for coding in value.split(",")
        ]
        lengths = {value.strip() for key, value in headers if key == "content-length"}
        if status in (204, 304):
            self._state = _Reading.DONE
        elif codings:
            if codings[-1] == "chunked":
                self._state = _Reading.CHUNK_SIZE
            else:
                self._state, self._keep_alive = _Reading.UNTIL_CLOSE, False
        elif lengths:
            text = lengths.pop()
            if lengths or not _DIGITS.fullmatch(text):
                raise ProtocolError(f"bad Content-Length in the response: {text[:30]!r}")
            self._remaining = int(text)
            self._grow(self._remaining)
            self._state = _Reading.LENGTH
        else:
            self._state, self._keep_alive = _Reading.UNTIL_CLOSE, False


# --- the sink ---------------------------------------------------------------------------

_READ_SIZE = 65536
_RESERVED_HEADERS = frozenset(
    {
        *("host", "content-length", "content-type", "content-encoding", "transfer-encoding"),
        *("connection", "keep-alive", "te", "upgrade", "expect"),
    }
)


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


class OtlpHttpSink:
    """Sends records to an OTLP/HTTP logs endpoint (an OTel Collector, or a backend).

    ``url`` is the endpoint, ``http://host:4318/v1/logs`` or ``https://…``; a URL
    without a path gets ``/v1/logs``. ``headers`` go with every request (say an
    Authorization). ``timeout`` bounds each request, connecting included.
    ``compression="gzip"`` compresses bodies. One connection is kept open between
    requests; one that the server closed while idle is replaced once, at once.
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
        compression: Literal["none", "gzip"] = "none",
        max_body: int = MAX_BODY,
    ) -> None:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise UsageError(f"an OTLP endpoint is an http:// or https:// URL, not {url!r}")
        try:
            port = parts.port
        except ValueError:
            raise UsageError(f"bad port in OTLP endpoint {url!r}") from None
        host = parts.hostname
        if not host:
            raise UsageError(f"no host in OTLP endpoint {url!r}")
        if parts.username is not None or parts.password is not None:
            raise UsageError("put OTLP credentials in a header (Authorization), not in the URL")
        if compression not in ("none", "gzip"):
            raise UsageError(f"unknown OTLP compression {compression!r}; use none or gzip")
        if scheme == "http" and ssl_context is not None:
            raise UsageError(f"a TLS context was given for the plain-HTTP endpoint {url!r}")
        if timeout <= 0:
            raise UsageError("the OTLP timeout must be positive")
        tls = scheme == "https"
        default_port = 443 if tls else 80
        self._host = host
        self._port = port if port is not None else default_port
        self._ssl = (ssl_context or ssl.create_default_context()) if tls else None
        self._timeout = timeout
        self._gzip = compression == "gzip"
        self._max_body = max_body
        shown = f"[{host}]" if ":" in host else host
        path = parts.path if parts.path not in ("", "/") else DEFAULT_PATH
        if parts.query:
            path += "?" + parts.query
        self._where = f"{shown}:{self._port}"
        self._target = f"otlp+{scheme}://{self._where}{path}"
        try:
            ascii_host = shown if shown.isascii() else shown.encode("idna").decode("ascii")
        except UnicodeError:
            raise UsageError(f"bad host name in OTLP endpoint {url!r}") from None
        authority = ascii_host if port in (None, default_port) else f"{ascii_host}:{port}"
        lines = [
            f"POST {path} HTTP/1.1",
            f"Host: {authority}",
            f"User-Agent: umonitor/{package_version() or 'unknown'}",
            "Content-Type: application/x-protobuf",
        ]
        if self._gzip:
            lines.append("Content-Encoding: gzip")
        for name, value in (headers or {}).items():
            if not _TOKEN.fullmatch(name.encode("latin-1", "replace")):
                raise UsageError(f"bad OTLP header name {name!r}")
            if name.lower() in _RESERVED_HEADERS:
                raise UsageError(f"the OTLP header {name} is set by umonitor itself")
            if any(c in value for c in "\r\n\0"):
                raise UsageError(f"the OTLP header {name} has a line break in its value")
            lines.append(f"{name}: {value}")
        try:
            self._head = ("\r\n".join(lines) + "\r\n").encode("latin-1")
        except UnicodeEncodeError:
            raise UsageError("OTLP headers must be Latin-1 text") from None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.rejected_total = 0  # records the server refused through partial_success
        self.last_rejection = ""  # what it said about the last of them
        self.retry_after: float | None = None  # the last 429/503 answer's Retry-After

    @property
    def target(self) -> str:
        return self._target

    async def send(self, items: Sequence[ExportItem]) -> None:
        self.retry_after = None
        delivered = 0
        for count, body in _encoder().encode_split(items, self._max_body):
            if self._gzip:
                body = gzip.compress(body, compresslevel=6, mtime=0)
            request = self._head + b"Content-Length: %d\r\n\r\n" % len(body) + body
            try:
                response = await self._exchange(request)
            except DeliveryError as exc:
                raise DeliveryError(str(exc), delivered) from exc.__cause__
            self._check(response, delivered)
            delivered += count

    async def close(self) -> None:
        writer = self._writer
        self._reader = self._writer = None
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

    async def _exchange(self, request: bytes) -> HttpResponse:
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
                    response = await self._round_trip(request)
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
            except OSError as exc:
                raise DeliveryError(
                    f"lost the connection to {self._where}: {_describe(exc)}"
                ) from exc
            finally:
                if not done:
                    self._abort()
            if not response.keep_alive:
                await self.close()
            return response

    async def _round_trip(self, request: bytes) -> HttpResponse:
        reader, writer = self._reader, self._writer
        assert reader is not None and writer is not None
        parser = ResponseParser()
        try:
            writer.write(request)
            await writer.drain()
            while (response := parser.next_response_untrusted()) is None:
                parser.receive_data(await reader.read(_READ_SIZE))
        except (ConnectionError, ProtocolError) as exc:
            if not parser.started:
                raise _ClosedUnanswered from exc
            raise
        return response

    def _check(self, response: HttpResponse, delivered: int) -> None:
        """Return if the server took the request; raise DeliveryError if not."""
        status = response.status
        if 200 <= status < 300:
            self._note_partial_success(response)
            return
        reason = f" {one_line(response.reason)}" if response.reason.strip() else ""
        detail = self._error_detail(response)
        message = f"{self._target} answered HTTP {status}{reason}{detail}"
        if status in RETRYABLE_STATUSES:
            self.retry_after = _retry_after(response.header("retry-after"))
            raise DeliveryError(message, delivered)
        raise DeliveryError(message, delivered, permanent=True)

    def _note_partial_success(self, response: HttpResponse) -> None:
        if not response.body or not _is_protobuf(response):
            return
        try:
            rejected, message = parse_partial_success_untrusted(response.body)
        except ProtocolError:
            return  # the server took the request (2xx); an unreadable body changes nothing
        if rejected:
            self.rejected_total += rejected
            self.last_rejection = message or f"{rejected} records rejected"

    @staticmethod
    def _error_detail(response: HttpResponse) -> str:
        """': what the server said' from an error answer, or ''."""
        if not response.body or response.header("content-encoding") not in (None, "identity"):
            return ""
        if _is_protobuf(response):
            try:
                text = status_message_untrusted(response.body)
            except ProtocolError:
                text = ""
        else:
            text = text_untrusted(response.body)
        return f": {text}" if text else ""


def _is_protobuf(response: HttpResponse) -> bool:
    """Whether the body is protobuf: said so, or not said otherwise."""
    content_type = response.header("content-type")
    return content_type is None or "protobuf" in content_type.lower()


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header; its HTTP-date form is not used by OTLP servers."""
    if value is None or not _DIGITS.fullmatch(value.strip()):
        return None
    return float(value.strip())
