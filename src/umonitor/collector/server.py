"""The collector daemon: listeners, dialers, group commit, status, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from umonitor.collector.admission import Admission, OpenAdmission
from umonitor.collector.base import (
    LIMIT_NAMES,
    Acknowledger,
    Dial,
    Endpoint,
    GuestLimits,
    listen_error,
)
from umonitor.collector.connection import Connection
from umonitor.collector.disk_pause import DiskPause
from umonitor.collector.flow import ReadGate
from umonitor.collector.latency import LatencyHistogram
from umonitor.collector.rate import RateBuckets
from umonitor.collector.stream import GuardedStream
from umonitor.collector.sync_rounds import Batch, SyncRounds
from umonitor.collector.syslog_listeners import SyslogIntake
from umonitor.errors import ProtocolError, Refused
from umonitor.protocol import frame_codec as fc
from umonitor.records import Origin
from umonitor.store.logfile import escape
from umonitor.store.names import sanitize_instance_name
from umonitor.store.side_log import SideLog
from umonitor.store.writer import FsyncPolicy, Store

log = logging.getLogger(__name__)

SECURITY_LOG = "security.log"  # refused guests, one line each, cut at SECURITY_LOG_LIMIT
SECURITY_LOG_LIMIT = 10 << 20
# Queued text that makes the collector write at once instead of at the loop's turn.
COMMIT_BYTES = 1 << 20
# While the disk refuses writes (collector/disk_pause.py), UDP datagrams (which cannot
# be paused) are taken only while less than this is queued.
DISK_BACKLOG = 64 << 20


class Datagrams(asyncio.DatagramProtocol):
    """UDP: one record per datagram, no acknowledgement (docs/protocol.md §3)."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        collector = self.collector
        try:
            hello, body = fc.decode_datagram_untrusted(data, collector.max_frame)
        except ProtocolError:
            collector.bad_datagrams += 1
            return
        peer_host = str(addr[0])
        try:
            name = collector.admit(hello.name, peer_host, hello.token)
        except Refused:
            return
        if not collector.datagram_fits(name):
            return
        store = collector.store
        instance = store.log(name)
        boot = hello.boot_id.hex()
        if instance.context != boot:
            store.begin_boot(instance, boot, hello.library, f"{peer_host}:{addr[1]}", hello.name)
        if isinstance(body, fc.Dropped):
            store.add_dropped(instance, boot, body.count, body.through_seq)
        else:
            store.add_records(instance, boot, [body], Origin.APP, time.time_ns())
        collector.datagrams += 1
        collector.want_commit(None)


@dataclass
class Collector:
    """Serves every guest from one event loop; see collector/connection.py."""

    store: Store
    max_frame: int = fc.DEFAULT_MAX_FRAME
    admission: Admission = field(default_factory=OpenAdmission)
    guest_limits: GuestLimits = field(default_factory=GuestLimits)
    limit_hits: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LIMIT_NAMES, 0))
    throttled: dict[str, int] = field(default_factory=dict)  # instance -> rate limit hits
    _per_source: dict[str, int] = field(default_factory=dict)
    streams: set[GuardedStream] = field(default_factory=set)  # native, syslog, RELP
    connections: set[Connection] = field(default_factory=set)  # the native ones
    held: set[str] = field(default_factory=set)  # instances whose VM is stopped
    protocol_errors: int = 0
    refused: int = 0
    bad_datagrams: int = 0
    datagrams: int = 0
    status_path: Path | None = None
    listening: list[str] = field(default_factory=list)
    _to_ack: set[Acknowledger] = field(default_factory=set)
    _to_close: set[Acknowledger] = field(default_factory=set)
    _commit_scheduled: bool = False
    _status_scheduled: bool = False
    _servers: list[asyncio.AbstractServer] = field(default_factory=list)
    _udp: list[ReadGate] = field(default_factory=list)  # the UDP transports' gates
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    dials: list[Dial] = field(default_factory=list)
    closers: list[Callable[[], None]] = field(default_factory=list)
    syslog: list[SyslogIntake] = field(default_factory=list)
    shed_datagrams: int = 0  # dropped while the disk refused writes
    rate_dropped_datagrams: int = 0  # dropped over their instance's rate
    ack_latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    started_ns: int = field(default_factory=time.time_ns)
    _store_version: int = 0
    _security: SideLog | None = None  # refusals, written off the loop
    _rounds: SyncRounds | None = None  # --fsync always: ACKs after the disk worker's fsync
    _rate: RateBuckets = field(init=False)
    _disk: DiskPause = field(init=False)

    def __post_init__(self) -> None:
        self._rate = RateBuckets(self.guest_limits.rate)
        self._disk = DiskPause(self.store.root, self.commit)

    def admit(self, requested: str, peer_host: str, token: bytes | None) -> str:
        """The instance a guest is filed under (admission.py); Refused is counted and logged."""
        try:
            return self.admission.admit(requested, peer_host, token)
        except Refused as exc:
            self.refused += 1
            self.status_changed()
            log.warning("refused: %s", exc)
            self._note_refusal(peer_host, requested, str(exc))
            raise

    def _note_refusal(self, peer_host: str, requested: str, why: str) -> None:
        if self._security is None:
            path = self.store.root / SECURITY_LOG
            self._security = SideLog(path, SECURITY_LOG_LIMIT, self.store.worker)
        name = escape(requested)[:200]
        self._security.write(f"{time.time():.6f} {peer_host} name={name} {why}\n")

    # -- commit -------------------------------------------------------------------

    def want_commit(self, conn: Acknowledger | None, then_close: bool = False) -> None:
        if conn is not None:
            self._to_ack.add(conn)
            if then_close:
                self._to_close.add(conn)
        if self.store.failure is not None:
            # The disk refuses writes: hold the ACKs, read no more; the retry commits.
            if conn is not None:
                self._disk.pause(getattr(conn, "gate", None))
            return
        if self.store.queued_bytes >= COMMIT_BYTES:
            # One loop iteration may bring many reads (libuv reads a readable socket up
            # to 32 times): write now rather than hold them all in memory.
            self.commit()
        elif not self._commit_scheduled:
            self._commit_scheduled = True
            asyncio.get_running_loop().call_soon(self.commit)

    def commit(self) -> None:
        """Write what is queued, then acknowledge it: at once, or under ``--fsync always``
        once the disk worker has synced it."""
        self._commit_scheduled = False
        self.store.commit()
        if self.store.status_version != self._store_version:
            self._store_version = self.store.status_version
            self.status_changed()
            for note in self.store.disk.take_notes():  # the quota refusing someone, say
                sys.stderr.write(f"umonitor: {note}\n")
        if self.store.failure is not None:
            # Nothing more is acknowledged or read until the disk takes what is queued.
            gates = [stream.gate for stream in self.streams] + self._udp
            self._disk.failed(gates, self.store.failure, self.store.unwritten_bytes)
            return
        if self._disk.active:
            self._disk.recovered()
        marks = [(conn, conn.ack_mark()) for conn in self._to_ack]
        to_close = self._to_close
        self._to_ack, self._to_close = set(), set()
        if self.store.fsync is not FsyncPolicy.ALWAYS:
            self._answer((marks, to_close))
        elif marks or to_close:
            if self._rounds is None:
                self._rounds = SyncRounds(self.store, self._answer, self._unsynced)
            self._rounds.add((marks, to_close))

    async def settled(self) -> None:
        """Until everything committed so far is acknowledged (under ``always``: synced)."""
        if self._rounds is not None:
            await self._rounds.idle()

    def _unsynced(self, batches: list[Batch]) -> None:
        """An fsync failed: acknowledge nothing; the next commit reports the disk."""
        for marks, to_close in batches:
            self._to_ack.update(conn for conn, _ in marks)
            self._to_close |= to_close
        self.commit()

    def _answer(self, batch: Batch) -> None:
        marks, to_close = batch
        for conn, mark in marks:
            conn.send_ack(mark)
        for conn in to_close:
            conn.close()

    def datagram_fits(self, instance: str) -> bool:
        """Whether a datagram of ``instance`` may be stored; a datagram cannot be held
        back, so over its rate, or while the disk refuses with much queued, it is
        dropped (and counted)."""
        if self.charge(instance, 1) > 0:
            self.rate_dropped_datagrams += 1
            return False
        store = self.store
        if store.failure is not None and store.unwritten_bytes + store.queued_bytes > DISK_BACKLOG:
            self.shed_datagrams += 1  # the disk refuses and memory is not infinite
            self.status_changed()
            return False
        return True

    def add_datagram_transport(self, transport: asyncio.BaseTransport) -> None:
        """A UDP listener: paused with the rest while the disk refuses, closed at the end."""
        self._udp.append(ReadGate(transport))

    # -- connections --------------------------------------------------------------

    def stream_opened(self, stream: GuardedStream) -> bool:
        """Count a new stream in; False (and counted) when a limit says no."""
        host = stream.peer_host
        if len(self.streams) >= self.guest_limits.max_connections:
            self.hit("connections")
            return False
        if self._per_source.get(host, 0) >= self.guest_limits.max_per_source:
            self.hit("per_source")
            return False
        self._per_source[host] = self._per_source.get(host, 0) + 1
        self.streams.add(stream)
        if isinstance(stream, Connection):
            self.connections.add(stream)
        if self.store.failure is not None:
            self._disk.pause(stream.gate)  # read nothing while the disk refuses
        return True

    def hit(self, limit: str, instance: str | None = None) -> None:
        self.limit_hits[limit] += 1
        if instance is not None:
            self.throttled[instance] = self.throttled.get(instance, 0) + 1
        self.status_changed()

    def charge(self, instance: str, records: int) -> float:
        """Take ``records`` from ``instance``'s rate; seconds to wait before reading more."""
        wait = self._rate.charge(instance, records)
        if wait > 0:
            self.hit("rate", instance)
        return wait

    def hold_instance(self, name: str, held: bool) -> None:
        """The fleet says ``name``'s VM stopped (held) or runs again (or ended).

        A stopped guest can neither send nor read: its connections' time limits do not
        run while it is held, and count again from when it runs.
        """
        if held:
            self.held.add(name)
            return
        self.held.discard(name)
        now = time.monotonic()
        for stream in self.streams:
            if name in stream.instances():
                stream.restart_clocks(now)

    def sweep(self) -> None:
        """Close streams over a time limit (called once a second)."""
        now = time.monotonic()
        for stream in list(self.streams):
            if self.held and not self.held.isdisjoint(stream.instances()):
                continue
            over = stream.over_time(now, self.guest_limits)
            if over is not None:
                self.hit(over)
                stream.close_for(over)

    def instance_attached(self, conn: Connection) -> None:
        self.status_changed()

    def live_connection(self, name: str) -> Connection | None:
        """The newest connection of instance ``name`` that is still open, if any."""
        return self.live_connections().get(name)

    def live_connections(self) -> dict[str, Connection]:
        """Each instance's newest open connection (control goes there; its level shows)."""
        live: dict[str, Connection] = {}
        for conn in sorted(self.connections, key=lambda c: c.opened_at):
            if conn.instance is not None and not conn.closing:
                live[conn.instance.name] = conn
        return live

    def stream_closed(self, stream: GuardedStream) -> None:
        if stream in self.streams:
            left = self._per_source.get(stream.peer_host, 1) - 1
            if left > 0:
                self._per_source[stream.peer_host] = left
            else:
                self._per_source.pop(stream.peer_host, None)
        self.streams.discard(stream)
        self._disk.forget(stream.gate)
        if isinstance(stream, Connection):
            self.connections.discard(stream)
        self._to_ack.discard(stream)
        self._to_close.discard(stream)
        if self._commit_scheduled is False and stream.instances():
            self.want_commit(None)
        self.status_changed()

    # -- status file (read by `umonitor ls`) ---------------------------------------

    def status_changed(self) -> None:
        if self.status_path is None or self._status_scheduled:
            return
        self._status_scheduled = True
        asyncio.get_running_loop().call_later(0.2, self.write_status)

    def write_status(self) -> None:
        self._status_scheduled = False
        if self.status_path is None:
            return
        connected: dict[str, list[str]] = {}
        for conn in self.connections:
            if conn.instance is not None:
                connected.setdefault(conn.instance.name, []).append(conn.peer)
        # The level each connected guest said it has (HELLO, LEVEL).
        levels = {
            name: conn.level.label
            for name, conn in self.live_connections().items()
            if conn.level is not None
        }
        status = {
            "pid": os.getpid(),
            "listening": self.listening,
            "connected": connected,
            "levels": levels,
            "dials": {
                sanitize_instance_name(d.name): {
                    "address": str(d.endpoint),
                    "connected": d.connected,
                }
                for d in self.dials
            },
            "protocol_errors": self.protocol_errors,
            "refused": self.refused,
            "limits": self.limit_hits,
            "throttled": self.throttled,
            "bad_datagrams": self.bad_datagrams,
            "syslog": {
                s.name: {"received": s.received, "rejected": s.rejected} for s in self.syslog
            },
            "store": {**self.store.status(), "shed_datagrams": self.shed_datagrams},
            "updated_ns": time.time_ns(),
        }
        # Replacing a file can wait for the journal (ext4 flushes a file renamed over
        # another): the disk worker does it, in order, so the newest status stays.
        path, text = self.status_path, json.dumps(status, indent=1)
        self.store.worker.submit(lambda: write_status_file(path, text))

    # -- listeners ----------------------------------------------------------------

    async def listen_tcp(self, endpoint: Endpoint) -> Endpoint:
        loop = asyncio.get_running_loop()
        try:
            server = await loop.create_server(
                lambda: Connection(self),
                endpoint.host,
                endpoint.port,
                reuse_address=True,
                backlog=4096,
            )
        except OSError as exc:
            raise listen_error(exc, endpoint, "TCP") from exc
        self._servers.append(server)
        port = server.sockets[0].getsockname()[1]
        bound = Endpoint(endpoint.host, port)
        self.listening.append(f"tcp://{bound}")
        return bound

    async def listen_udp(self, endpoint: Endpoint) -> Endpoint:
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: Datagrams(self), local_addr=(endpoint.host, endpoint.port)
            )
        except OSError as exc:
            raise listen_error(exc, endpoint, "UDP") from exc
        self._udp.append(ReadGate(transport))
        port = transport.get_extra_info("sockname")[1]
        bound = Endpoint(endpoint.host, port)
        self.listening.append(f"udp://{bound}")
        return bound

    def dial(self, dial: Dial) -> None:
        """Keep connecting to ``dial``'s guest: again whenever it goes away."""
        self.undial(dial.name)
        self.dials.append(dial)
        dial.task = asyncio.get_running_loop().create_task(self._dial_loop(dial))
        self._tasks.append(dial.task)

    def undial(self, name: str) -> None:
        """Stop connecting to the guest dialled as ``name`` (its instance went away)."""
        for dial in [d for d in self.dials if d.name == name]:
            self.dials.remove(dial)
            if dial.task is not None:
                dial.task.cancel()
                self._tasks.remove(dial.task)
        self.status_changed()

    async def _dial_loop(self, dial: Dial) -> None:
        loop = asyncio.get_running_loop()
        delay = 0.2
        while True:
            dial.attempts += 1
            try:
                transport, _conn = await loop.create_connection(
                    lambda: Connection(self, fixed_name=dial.name),
                    dial.endpoint.host,
                    dial.endpoint.port,
                )
            except OSError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            dial.connected = True
            self.status_changed()
            delay = 0.2
            while not transport.is_closing():
                await asyncio.sleep(0.1)
            dial.connected = False
            self.status_changed()
            await asyncio.sleep(delay)

    async def periodic(self) -> None:
        """Once a second: fsync (batch policy), state files, retention."""
        while True:
            await asyncio.sleep(1.0)
            self.commit()
            self.sweep()

    async def shutdown(self) -> None:
        """Stop accepting, store and acknowledge what arrived, say goodbye, close."""
        for server in self._servers:
            server.close()
        for gate in self._udp:
            gate.transport.close()
        for task in self._tasks:
            task.cancel()
        for close in self.closers:
            close()
        self.commit()
        await self.settled()
        why = "collector shutting down"
        goodbye = fc.ErrorFrame(fc.ErrorCode.SHUTTING_DOWN, why)
        for stream in list(self.streams):
            if isinstance(stream, Connection):
                stream.close(goodbye)
            else:
                stream.goodbye(why)  # RELP answers what is stored and says serverclose
        await asyncio.sleep(0)
        self.commit()
        await self.settled()
        self._disk.cancel()
        # Last writes, fsyncs and states: nothing else uses the store now.
        await asyncio.to_thread(self.store.close)
        if self.status_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.status_path.unlink()


def write_status_file(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``, padded to whole 4 KiB blocks.

    When the disk is full a new file cannot be written; then the text goes over the
    old file in place (its blocks are already there), which is why it is padded.
    """
    text += " " * (-(len(text) + 1) % 4096) + "\n"
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
            with open(path, "r+") as out:
                size = os.fstat(out.fileno()).st_size
                if len(text) <= size:
                    out.write(text[:-1].ljust(size - 1) + "\n")
