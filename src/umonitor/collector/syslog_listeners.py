"""Syslog in: UDP (RFC 5426), TCP (RFC 6587) and TLS (RFC 5425) listeners.

How this works: each datagram, or each frame cut by ``SyslogStreamDecoder`` from a
TCP/TLS stream, is parsed by ``parse_syslog_untrusted`` into one record of origin
``syslog`` in the instance's ``syslog.log``. The instance is the sender's lease when
the fleet knows the address, else the message's hostname or app-name (sanitized).
Severity and facility are kept; structured data becomes fields named
``SDID.param``. A frame that cannot be parsed is counted and written, escaped, to the
listener's reject log (``DATA/rejects/<listener>.log``, cut at 10 MiB, written off the
event loop); the listener goes on serving.

Syslog is held to what native guests are (collector/stream.py): a TCP, TLS or RELP
stream counts against ``--max-connections`` and ``--max-per-source``, is cut when a
frame does not complete in time (or when idle, if set; a RELP session also when it
does not ``open`` in time or does not read its answers), stops being read while its
instance is over its rate or the disk refuses writes; datagrams are dropped then
(counted). Each hit is counted like a native guest's.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from umonitor.collector.base import Acknowledger, Endpoint, listen_error
from umonitor.collector.stream import GuardedStream, GuardHost
from umonitor.errors import ProtocolError, Refused, UsageError
from umonitor.protocol.relp import RELP_OFFERS, RelpDecoder, RelpFrame, encode_relp
from umonitor.protocol.syslog import (
    FACILITIES,
    SyslogMessage,
    SyslogStreamDecoder,
    parse_syslog_untrusted,
)
from umonitor.records import Origin, Record, Severity
from umonitor.store import layout
from umonitor.store.instance_log import InstanceLog
from umonitor.store.logfile import escape
from umonitor.store.side_log import SideLog
from umonitor.store.writer import Store

REJECT_LIMIT = 10 << 20


class SyslogHost(GuardHost, Protocol):
    """What the syslog intake needs of the collector (collector/server.py's
    ``Collector`` is the one)."""

    store: Store
    max_frame: int
    closers: list[Callable[[], None]]
    listening: list[str]
    syslog: list[SyslogIntake]

    def admit(self, requested: str, peer_host: str, token: bytes | None) -> str: ...

    def want_commit(self, conn: Acknowledger | None, then_close: bool = False) -> None: ...

    def commit(self) -> None: ...

    def status_changed(self) -> None: ...

    def charge(self, instance: str, records: int) -> float: ...

    def datagram_fits(self, instance: str) -> bool: ...

    def add_datagram_transport(self, transport: asyncio.BaseTransport) -> None: ...


def syslog_fields(msg: SyslogMessage) -> tuple[tuple[str, str], ...]:
    """The record fields for one message: syslog header values and structured data."""
    fields: list[tuple[str, str]] = [("facility", FACILITIES[msg.facility % 24])]
    for key, value in (
        ("hostname", msg.hostname),
        ("app", msg.app_name),
        ("procid", msg.procid),
        ("msgid", msg.msgid),
    ):
        if value:
            fields.append((key, value))
    for sd_id, params in msg.structured_data:
        fields.extend((f"{sd_id}.{name}", value) for name, value in params)
    return tuple(fields)


def syslog_record(msg: SyslogMessage, seq: int) -> Record:
    """The record one message becomes: its time (if any), severity, text and fields."""
    fields = syslog_fields(msg)
    return Record(seq, Severity(msg.severity), msg.message, wall_ns=msg.timestamp_ns, fields=fields)


@dataclass(frozen=True, slots=True)
class FastPath:
    """Where a stream's plain RFC 5424 frames from one hostname go."""

    host: bytes
    instance: str
    requested: str


@dataclass
class SyslogIntake:
    """What every syslog listener shares: naming, numbering, storing, rejecting."""

    collector: SyslogHost
    name: str  # the listener, e.g. "syslog-udp-514"
    received: int = 0
    rejected: int = 0
    _boots: dict[tuple[str, str | None], tuple[str, int]] = field(default_factory=dict)
    _rejects: SideLog | None = None

    def take_untrusted(
        self, frame: bytes, peer_host: str, stream: SyslogStream | RelpStream | None = None
    ) -> FastPath | None:
        """Store one frame; for a stream, say how the frames after it may take the fast path."""
        try:
            msg = parse_syslog_untrusted(frame, max_frame=self.collector.max_frame)
        except ProtocolError as exc:
            self.reject(frame, peer_host, str(exc))
            return None
        requested = msg.hostname or msg.app_name or peer_host or "syslog"
        try:
            instance = self.collector.admit(requested, peer_host, None)
        except Refused as exc:
            self.reject(frame, peer_host, str(exc))
            return None
        if stream is None and not self.collector.datagram_fits(instance):
            return None
        self.received += 1
        store = self.collector.store
        log = store.log(instance, layout.SYSLOG_LOG)
        stream_boot = stream.boot if stream is not None else None
        boot, seq = self._next(log, instance, stream_boot, peer_host, requested)
        store.add_records(log, boot, [syslog_record(msg, seq)], Origin.SYSLOG, time.time_ns())
        self.collector.want_commit(stream)
        if stream is None:
            return None
        stream.filed.add(instance)
        stream.throttle(self.collector.charge(instance, 1))
        if msg.rfc != 5424 or not msg.hostname or isinstance(stream, RelpStream):
            return None
        return FastPath(msg.hostname.encode("utf-8", "surrogateescape"), instance, requested)

    def _next(
        self, log: InstanceLog, instance: str, stream_boot: str | None, peer: str, requested: str
    ) -> tuple[str, int]:
        """The boot and seq of the next record of ``instance`` from this connection.

        Numbering is per (instance, connection); datagrams share one per instance.
        """
        key = (instance, stream_boot)
        boot, seq = self._boots.get(key) or (stream_boot or os.urandom(16).hex(), 0)
        if log.context != boot:
            self.collector.store.begin_boot(log, boot, self.name, peer, requested)
        self._boots[key] = (boot, seq + 1)
        return boot, seq + 1

    def take_run(self, fast: FastPath, stream: SyslogStream, buf: bytearray, end: int) -> int:
        """Store the run of plain frames from ``fast.host`` at the start of ``buf``."""
        store = self.collector.store
        log = store.log(fast.instance, layout.SYSLOG_LOG)
        boot, seq = self._next(log, fast.instance, stream.boot, stream.peer_host, fast.requested)
        seq -= 1  # _next counted one record ahead
        stop, last = store.add_syslog_run(
            log, boot, buf, end, self.collector.max_frame, fast.host, seq
        )
        self._boots[fast.instance, stream.boot] = (boot, last)
        if last != seq:
            self.received += last - seq
            self.collector.want_commit(stream)
            stream.throttle(self.collector.charge(fast.instance, last - seq))
        return stop

    def forget(self, stream_boot: str) -> None:
        """A connection ended: drop its numbering."""
        for key in [k for k in self._boots if k[1] == stream_boot]:
            del self._boots[key]

    def reject(self, frame: bytes, peer_host: str, why: str) -> None:
        self.rejected += 1
        self.collector.status_changed()
        if self._rejects is None:
            store = self.collector.store
            path = store.root / "rejects" / f"{self.name}.log"
            self._rejects = SideLog(path, REJECT_LIMIT, store.worker)
        text = escape(frame[:4096].decode("utf-8", "replace"))
        self._rejects.write(f"{time.time():.6f} {peer_host} {escape(why)}: {text}\n")


class SyslogDatagrams(asyncio.DatagramProtocol):
    def __init__(self, intake: SyslogIntake) -> None:
        self.intake = intake

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.intake.take_untrusted(data, str(addr[0]))


class SyslogStream(GuardedStream):
    """One TCP or TLS syslog connection."""

    handshake = False  # a syslog sender need not speak first

    def __init__(self, intake: SyslogIntake, max_frame: int) -> None:
        super().__init__(intake.collector)
        self.intake = intake
        self.decoder = SyslogStreamDecoder(max_frame=max_frame)
        self.boot = os.urandom(16).hex()
        self.fast: FastPath | None = None
        self.filed: set[str] = set()  # the instances it has filed records for

    def buffered(self) -> int:
        return self.decoder.buffered

    def instances(self) -> set[str]:
        return self.filed

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        now = self.took(len(data))
        before = self.decoder.buffered
        self.decoder.receive_data(data)
        try:
            # The fast path takes runs of plain frames from the host of the frame
            # before; the parser takes one frame wherever it stops. A bad length is
            # raised on the call after the frames that came before it.
            while True:
                if self.fast is not None:
                    self.decoder.take_run(self._take_fast)
                frames = self.decoder.next_frames(limit=1)
                if not frames:
                    break
                self.fast = self.intake.take_untrusted(frames[0], self.peer_host, self)
        except ProtocolError as exc:
            self.intake.reject(data[:256], self.peer_host, str(exc))
            self.close()
            return
        self.note_partial(before, len(data), now)

    def _take_fast(self, buf: bytearray, end: int) -> int:
        assert self.fast is not None
        return self.intake.take_run(self.fast, self, buf, end)

    def connection_lost(self, exc: Exception | None) -> None:
        self.intake.forget(self.boot)
        super().connection_lost(exc)

    def eof_received(self) -> bool | None:
        try:
            for frame in self.decoder.end_of_stream():
                self.intake.take_untrusted(frame, self.peer_host, self)
        except ProtocolError:
            pass
        return None


class RelpStream(GuardedStream):
    """One RELP connection (rsyslog's omrelp): every message answered once it is written.

    ``open`` is answered with our offers (``commands=syslog``); each ``syslog`` command
    is stored like a TCP frame and answered ``200 OK`` by the collector's commit, after
    the write, so a sender that gets no answer sends it again. ``close`` is answered,
    after every answer before it, and the connection closed. When the collector stops,
    or a time limit cuts the session, it answers what it stored and sends
    ``serverclose``. A frame that breaks the
    protocol is answered ``500`` when it has a number, rejected, and the connection
    closed.
    """

    def __init__(self, intake: SyslogIntake, max_frame: int) -> None:
        super().__init__(intake.collector)
        self.intake = intake
        self.decoder = RelpDecoder(max_data=max_frame)
        self.boot = os.urandom(16).hex()
        self.began = False  # the peer has sent ``open``
        self.stored: list[int] = []  # txnrs written or about to be, not yet answered
        self.filed: set[str] = set()
        self._last = b""  # what the session ends with, after its answers

    def buffered(self) -> int:
        return self.decoder.buffered

    def identified(self) -> bool:
        return self.began

    def instances(self) -> set[str]:
        return self.filed

    def goodbye(self, why: str) -> None:
        """A time limit, or the collector stopping: answer what is stored, serverclose."""
        self._finish(encode_relp(RelpFrame(0, "serverclose")))

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        now = self.took(len(data))
        before = self.decoder.buffered
        self.decoder.receive_data(data)
        try:
            frames = self.decoder.next_frames()
        except ProtocolError as exc:
            self.intake.reject(data[:256], self.peer_host, str(exc))
            self._finish(b"")
            return
        for frame in frames:
            if frame.command == "syslog" and self.began:
                self.intake.take_untrusted(frame.data, self.peer_host, self)
                self.stored.append(frame.txnr)
            elif frame.command == "open":
                self.began = True
                self._send(RelpFrame(frame.txnr, "rsp", b"200 OK\n" + RELP_OFFERS))
            elif frame.command == "close":
                self._finish(encode_relp(RelpFrame(frame.txnr, "rsp", b"200 OK")))
                return
            else:
                why = "no session: send open first" if not self.began else "unknown command"
                self._send(RelpFrame(frame.txnr, "rsp", f"500 {why}".encode()))
        if self.stored:
            self.intake.collector.want_commit(self)
        self.note_partial(before, len(data), now)

    def ack_mark(self) -> int:
        return len(self.stored)

    def send_ack(self, mark: int) -> None:
        """Called after the collector's commit: the first ``mark`` stored are on disk."""
        done, self.stored = self.stored[:mark], self.stored[mark:]
        if done and self.transport is not None and not self.transport.is_closing():
            self.transport.write(
                b"".join(encode_relp(RelpFrame(t, "rsp", b"200 OK")) for t in done)
            )

    def _finish(self, last: bytes) -> None:
        """Read no more; once what is stored is written (and synced, under ``--fsync
        always``) and answered, send ``last`` and close (the commit calls ``close``)."""
        if self._closing:
            return
        self._closing = True
        self._last = last
        self.intake.collector.want_commit(self, then_close=True)

    def close(self) -> None:
        self._closing = True
        if self.transport is not None and not self.transport.is_closing():
            if self._last:
                self.transport.write(self._last)
            self.transport.close()

    def _send(self, frame: RelpFrame) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(encode_relp(frame))

    def connection_lost(self, exc: Exception | None) -> None:
        self.intake.forget(self.boot)
        super().connection_lost(exc)


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot use TLS certificate {cert} with key {key}: {exc}") from exc
    return context


async def listen_syslog(
    collector: SyslogHost,
    kind: str,
    endpoint: Endpoint,
    tls: ssl.SSLContext | None = None,
) -> SyslogIntake:
    """Start one syslog listener: ``kind`` is ``udp``, ``tcp``, ``tls`` or ``relp``."""
    loop = asyncio.get_running_loop()
    intake = SyslogIntake(collector, f"syslog-{kind}-{endpoint.port}")
    try:
        if kind == "udp":
            transport, _ = await loop.create_datagram_endpoint(
                lambda: SyslogDatagrams(intake), local_addr=(endpoint.host, endpoint.port)
            )
            port = transport.get_extra_info("sockname")[1]
            collector.add_datagram_transport(transport)
        elif kind == "relp":
            server = await loop.create_server(
                lambda: RelpStream(intake, collector.max_frame),
                endpoint.host,
                endpoint.port,
                reuse_address=True,
            )
            port = server.sockets[0].getsockname()[1]
            collector.closers.append(server.close)
        else:
            server = await loop.create_server(
                lambda: SyslogStream(intake, collector.max_frame),
                endpoint.host,
                endpoint.port,
                reuse_address=True,
                ssl=tls if kind == "tls" else None,
            )
            port = server.sockets[0].getsockname()[1]
            collector.closers.append(server.close)
    except OSError as exc:
        raise listen_error(exc, endpoint, f"syslog {kind.upper()}") from exc
    intake.name = f"syslog-{kind}-{port}"
    collector.listening.append(f"syslog+{kind}://{endpoint.host}:{port}")
    collector.syslog.append(intake)
    return intake
