"""OpenTelemetry logs out: OTLP over HTTP/1.1 with protobuf bodies.

How this works: ``OtlpHttpSink`` turns each batch into ``ExportLogsServiceRequest``
bodies (``protocol/otlp_logs.py`` writes them, and reads the answers' protobuf),
posts them one after the other over one kept-alive connection
(``export/http_exchange.py``, framed by h11), and decides from each answer whether
the server has the records.

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

import functools
import gzip
import importlib.metadata
import re
import socket
import ssl
from collections.abc import Mapping, Sequence
from typing import Literal
from urllib.parse import urlsplit

import h11

from umonitor.errors import DeliveryError, ProtocolError, UsageError
from umonitor.export.base import ExportItem
from umonitor.export.http_exchange import HttpConnection, HttpResponse
from umonitor.protocol.otlp_logs import (
    LogsEncoder,
    one_line,
    parse_partial_success_untrusted,
    status_message_untrusted,
    text_untrusted,
)

MAX_BODY = 4 << 20  # largest request body (before compression) the sink sends
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
DEFAULT_PATH = "/v1/logs"

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_DIGITS = re.compile(r"[0-9]{1,18}")  # not str.isdigit, which also takes "²"
_RESERVED_HEADERS = frozenset(
    {
        *("host", "content-length", "content-type", "content-encoding", "transfer-encoding"),
        *("connection", "keep-alive", "te", "upgrade", "expect"),
    }
)


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
        self._port = port if port is not None else default_port
        self._ssl = (ssl_context or ssl.create_default_context()) if tls else None
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
        fixed = [
            ("Host", authority),
            ("User-Agent", f"umonitor/{package_version() or 'unknown'}"),
            ("Content-Type", "application/x-protobuf"),
        ]
        if self._gzip:
            fixed.append(("Content-Encoding", "gzip"))
        for name, value in (headers or {}).items():
            if not _TOKEN.fullmatch(name.encode("latin-1", "replace")):
                raise UsageError(f"bad OTLP header name {name!r}")
            if name.lower() in _RESERVED_HEADERS:
                raise UsageError(f"the OTLP header {name} is set by umonitor itself")
            if any(c in value for c in "\r\n\0"):
                raise UsageError(f"the OTLP header {name} has a line break in its value")
            try:
                value.encode("latin-1")
            except UnicodeEncodeError:
                raise UsageError("OTLP headers must be Latin-1 text") from None
            fixed.append((name, value.strip(" \t")))  # spaces around a value are not in it
        self._path = path
        self._headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in fixed]
        try:  # h11 checks the request line and headers as it will when sending
            h11.Request(method="POST", target=path, headers=self._headers)
        except h11.LocalProtocolError as exc:
            raise UsageError(f"OTLP endpoint {url!r} makes a bad request: {exc}") from None
        self._connection = HttpConnection(
            host, self._port, where=self._where, timeout=timeout, ssl_context=self._ssl
        )
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
            try:
                response = await self._connection.request("POST", self._path, self._headers, body)
            except DeliveryError as exc:
                raise DeliveryError(str(exc), delivered) from exc.__cause__
            self._check(response, delivered)
            delivered += count

    async def close(self) -> None:
        await self._connection.close()

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
