"""Syslog over TCP or TLS: stored records as RFC 5424 messages, RFC 6587 octet counted.

How this works: ``format_item`` turns one stored record into one RFC 5424 message
(protocol/syslog_format.py says how). ``SyslogSink`` sends the messages of a batch
over a ``StreamLink`` (stream_link.py) with octet counting (``LEN SP MSG``), so
messages may hold newlines. RELP, which the server acknowledges, is relp_sink.py.

What a successful ``send`` means. Plain syslog has no acknowledgements, so the sink
uses what the kernel knows:

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
"""

from __future__ import annotations

import bisect
import ssl
from collections.abc import Sequence

from umonitor.errors import DeliveryError, LinkDown
from umonitor.export.base import ExportItem
from umonitor.export.stream_link import StreamLink, endpoint
from umonitor.protocol.syslog_format import format_rfc5424, octet_counted


def format_item(item: ExportItem) -> bytes:
    """The RFC 5424 message of one exported record."""
    stored = item.stored
    return format_rfc5424(stored.record, stored.instance, stored.origin, stored.time_ns, item.boot)


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
        self._link: StreamLink | None = None

    @property
    def target(self) -> str:
        scheme = "syslog+tls" if self.ssl_context is not None else "syslog+tcp"
        return f"{scheme}://{endpoint(self.host, self.port)}"

    async def _ready_link(self) -> StreamLink:
        link = self._link
        if link is not None and not await link.alive():
            link.abort()
            self._link = link = None
        if link is None:
            link = await StreamLink.open(
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
        except LinkDown as exc:
            raise DeliveryError(str(exc), 0) from None
        ends = link.write_messages(frames)
        try:
            await link.wait_acked(ends[-1], self.timeout)
        except LinkDown as exc:
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
