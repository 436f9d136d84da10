"""The collector daemon: listeners, dialers, group commit, status, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from umonitor.collector.admission import Admission, OpenAdmission, Refused
from umonitor.collector.connection import Connection
from umonitor.collector.control import (
    GuestControl,
    check_no_collector,
    in_data_dir,
    serve_control,
    stop_control,
)
from umonitor.collector.flow import DISK, ReadGate
from umonitor.collector.syslog_listeners import SyslogIntake, listen_syslog, tls_context
from umonitor.errors import EnvironmentProblem, ProtocolError, UsageError
from umonitor.export.config import ExportSpec
from umonitor.protocol import frame_codec as fc
from umonitor.records import Origin
from umonitor.store import layout
from umonitor.store.logfile import escape
from umonitor.store.names import sanitize_instance_name
from umonitor.store.retention import Limits
from umonitor.store.writer import FsyncPolicy, Store

log = logging.getLogger(__name__)

DEFAULT_PORT = 2333
SECURITY_LOG = "security.log"  # refused guests, one line each, cut at SECURITY_LOG_LIMIT
SECURITY_LOG_LIMIT = 10 << 20
# Queued text that makes the collector write at once instead of at the loop's turn.
COMMIT_BYTES = 1 << 20
# While the disk refuses writes: retry this often, say so on stderr at most this often,
# and take UDP datagrams (which cannot be paused) only while less than this is queued.
DISK_RETRY = 1.0
DISK_SAY_EVERY = 10.0
DISK_BACKLOG = 64 << 20
# What only a fleet's control socket answers (fleet/daemon.py).
FLEET_OPS = frozenset({"ps", "stop", "restart", "rm", "run", "down"})


@dataclass(frozen=True, slots=True)
class GuestLimits:
    """What one guest (or a crowd) may take of the collector; each hit is counted.

    ``max_connections`` in total and ``max_per_source`` per peer address: a connection
    beyond them is closed at once. ``handshake_seconds``: from accept until the guest
    has said who it is (HELLO, or a text/legacy line). ``frame_seconds``: a frame or
    line that has started must be complete within this (a slow sender, slowloris), and a
    guest that stops reading what the collector sends it (its ACKs) while more than a
    socket buffer of it waits is cut after as long; until then it is not read either.
    ``idle_seconds``: no bytes at all for this long (0: never). ``rate``: records per
    second per instance (0: unlimited), with a burst of ``2 * rate`` (at least 100);
    above it the instance's TCP connections stop being read until it is back under
    (its guests keep the records, back-pressured, nothing is dropped here) and its
    UDP datagrams are dropped. ``pause_seconds``: how long the host keeps sending to a
    guest that does not acknowledge (``TCP_USER_TIMEOUT`` on every guest connection,
    instead of Linux's ~15 min of retransmissions), so that a guest stopped in a
    debugger keeps its connection that long; while the fleet says an instance's VM is
    stopped, its connections' time limits do not run (``Collector.hold_instance``).
    """

    max_connections: int = 16384
    max_per_source: int = 1024
    handshake_seconds: float = 10.0
    frame_seconds: float = 30.0
    idle_seconds: float = 0.0
    rate: float = 0.0
    pause_seconds: float = 3600.0


LIMIT_NAMES = ("connections", "per_source", "handshake", "slow", "unread", "idle", "rate")


class Acknowledger(Protocol):
    """A connection that acknowledges what the collector has written (native, RELP)."""

    def send_ack(self) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_endpoint(text: str, default_port: int = DEFAULT_PORT) -> Endpoint:
    """``HOST:PORT``, ``HOST``, ``:PORT`` or ``[V6]:PORT``."""
    host, port_text = text, ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    try:
        port = int(port_text) if port_text else default_port
    except ValueError:
        raise UsageError(f"bad address {text!r}: the port must be a number") from None
    if not 0 <= port <= 65535:
        raise UsageError(f"bad address {text!r}: the port must be 0-65535")
    return Endpoint(host or "127.0.0.1", port)


@dataclass(slots=True)
class Dial:
    """``--dial NAME=HOST:PORT``: connect out to a guest that listens (original mode)."""

    name: str
    endpoint: Endpoint
    connected: bool = False
    attempts: int = 0
    task: asyncio.Task[None] | None = None


def parse_dial(text: str) -> Dial:
    name, sep, address = text.partition("=")
    if not sep or not name or not address:
        raise UsageError(f"bad --dial {text!r}: use NAME=HOST:PORT")
    return Dial(name, parse_endpoint(address))


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
        if collector.charge(name, 1) > 0:
            return  # over its rate: a datagram cannot be held back, only dropped (counted)
        store = collector.store
        if store.failure is not None and store.unwritten_bytes + store.queued_bytes > DISK_BACKLOG:
            collector.shed_datagrams += 1  # the disk refuses and memory is not infinite
            return
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
    _buckets: dict[str, list[float]] = field(default_factory=dict)  # instance -> [tokens, t]
    connections: set[Connection] = field(default_factory=set)
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
    shed_datagrams: int = 0
    _paused: set[ReadGate] = field(default_factory=set)  # held for the disk
    _disk_retry: asyncio.TimerHandle | None = None
    _disk_said: float = 0.0
    _store_version: int = 0

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
        path = self.store.root / SECURITY_LOG
        try:
            if path.exists() and path.stat().st_size > SECURITY_LOG_LIMIT:
                path.replace(path.with_suffix(".log.old"))
            with open(path, "a") as out:
                out.write(f"{time.time():.6f} {peer_host} name={escape(requested)[:200]} {why}\n")
        except OSError:
            pass  # the count still says it happened

    # -- commit -------------------------------------------------------------------

    def want_commit(self, conn: Acknowledger | None, then_close: bool = False) -> None:
        if conn is not None:
            self._to_ack.add(conn)
            if then_close:
                self._to_close.add(conn)
        if self.store.failure is not None:
            # The disk refuses writes: hold the ACKs, read no more; the retry commits.
            if conn is not None:
                self._pause(getattr(conn, "gate", None))
            return
        if self.store.queued_bytes >= COMMIT_BYTES:
            # One loop iteration may bring many reads (libuv reads a readable socket up
            # to 32 times): write now rather than hold them all in memory.
            self.commit()
        elif not self._commit_scheduled:
            self._commit_scheduled = True
            asyncio.get_running_loop().call_soon(self.commit)

    def commit(self) -> None:
        self._commit_scheduled = False
        self.store.commit()
        if self.store.status_version != self._store_version:
            self._store_version = self.store.status_version
            self.status_changed()
            for note in self.store.disk.take_notes():  # the quota refusing someone, say
                sys.stderr.write(f"umonitor: {note}\n")
        if self.store.failure is not None:
            self._disk_failed()
            return
        if self._paused or self._disk_retry is not None:
            self._disk_recovered()
        to_ack, self._to_ack = self._to_ack, set()
        for conn in to_ack:
            conn.send_ack()
        to_close, self._to_close = self._to_close, set()
        for conn in to_close:
            conn.close()

    # -- disk: when the store cannot write ------------------------------------------

    def _disk_failed(self) -> None:
        """Nothing more is acknowledged or read until the disk takes what is queued.

        Guests keep what was not acknowledged and send it again; reading no more keeps
        this process's memory bounded meanwhile. A retry runs every second.
        """
        self._pause_all()
        now = time.monotonic()
        if not self._disk_said or now - self._disk_said >= DISK_SAY_EVERY:
            self._disk_said = now
            sys.stderr.write(
                f"umonitor: cannot write to {self.store.root}: {self.store.failure}; "
                f"not acknowledging, reading paused, {self.store.unwritten_bytes} bytes "
                "queued; retrying every second\n"
            )
            sys.stderr.flush()
        if self._disk_retry is None:
            self._disk_retry = asyncio.get_running_loop().call_later(DISK_RETRY, self._retry)

    def _retry(self) -> None:
        self._disk_retry = None
        self.commit()

    def _disk_recovered(self) -> None:
        if self._disk_retry is not None:
            self._disk_retry.cancel()
            self._disk_retry = None
        for gate in self._paused:
            gate.release(DISK)
        self._paused.clear()
        if self._disk_said:
            self._disk_said = 0.0
            sys.stderr.write(f"umonitor: writing to {self.store.root} again\n")
            sys.stderr.flush()

    def _pause(self, gate: ReadGate | None) -> None:
        if gate is not None:
            gate.hold(DISK)
            self._paused.add(gate)

    def _pause_all(self) -> None:
        for conn in self.connections:
            self._pause(conn.gate)
        for intake in self.syslog:
            for stream in intake.relp:
                self._pause(stream.gate)
        for gate in self._udp:
            self._pause(gate)

    # -- connections --------------------------------------------------------------

    def connection_opened(self, conn: Connection) -> bool:
        """Count a new connection in; False (and counted) when a limit says no."""
        host = conn.peer_host
        if len(self.connections) >= self.guest_limits.max_connections:
            self.hit("connections")
            return False
        if self._per_source.get(host, 0) >= self.guest_limits.max_per_source:
            self.hit("per_source")
            return False
        self._per_source[host] = self._per_source.get(host, 0) + 1
        self.connections.add(conn)
        return True

    def hit(self, limit: str, instance: str | None = None) -> None:
        self.limit_hits[limit] += 1
        if instance is not None:
            self.throttled[instance] = self.throttled.get(instance, 0) + 1
        self.status_changed()

    def charge(self, instance: str, records: int) -> float:
        """Take ``records`` from ``instance``'s rate; seconds to wait before reading more."""
        rate = self.guest_limits.rate
        if rate <= 0 or records <= 0:
            return 0.0
        burst = max(2 * rate, 100.0)
        now = time.monotonic()
        bucket = self._buckets.setdefault(instance, [burst, now])
        bucket[0] = min(burst, bucket[0] + (now - bucket[1]) * rate) - records
        bucket[1] = now
        if bucket[0] >= 0:
            return 0.0
        self.hit("rate", instance)
        return -bucket[0] / rate

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
        for conn in self.connections:
            if conn.instance is not None and conn.instance.name == name:
                conn.restart_clocks(now)

    def sweep(self) -> None:
        """Close connections over a time limit (called once a second)."""
        now = time.monotonic()
        for conn in list(self.connections):
            if conn.instance is not None and conn.instance.name in self.held:
                continue
            over = conn.over_time(now, self.guest_limits)
            if over is not None:
                self.hit(over)
                conn.close_for(over)

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

    def connection_closed(self, conn: Connection) -> None:
        if conn in self.connections:
            left = self._per_source.get(conn.peer_host, 1) - 1
            if left > 0:
                self._per_source[conn.peer_host] = left
            else:
                self._per_source.pop(conn.peer_host, None)
        self.connections.discard(conn)
        self._to_ack.discard(conn)
        self._to_close.discard(conn)
        if self._commit_scheduled is False and conn.instance is not None:
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
        write_status_file(self.status_path, json.dumps(status, indent=1))

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
            raise _listen_error(exc, endpoint, "TCP") from exc
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
            raise _listen_error(exc, endpoint, "UDP") from exc
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
        goodbye = fc.ErrorFrame(fc.ErrorCode.SHUTTING_DOWN, "collector shutting down")
        for conn in list(self.connections):
            conn.close(goodbye)
        await asyncio.sleep(0)
        self.commit()
        if self._disk_retry is not None:
            self._disk_retry.cancel()
            self._disk_retry = None
        self.store.close()
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


def _listen_error(exc: OSError, endpoint: Endpoint, what: str) -> UsageError:
    if exc.errno == errno.EADDRINUSE:
        return UsageError(
            f"{what} port {endpoint.port} on {endpoint.host} is already in use (is another "
            "collector or syslog server running?); choose another port (serve: --listen or "
            "--syslog-*; up: [collector] or [syslog] port in umonitor.toml)"
        )
    if exc.errno == errno.EACCES:
        return UsageError(
            f"not allowed to listen on {what} port {endpoint.port}; use a port above 1023 "
            "or run as root"
        )
    if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT) or exc.errno is None:
        return UsageError(f"cannot listen on {endpoint}: no such local address")
    return UsageError(f"cannot listen on {what} {endpoint}: {exc.strerror}")


@dataclass
class ServeOptions:
    data: Path
    listen: list[Endpoint]
    udp: bool = True
    dials: list[Dial] = field(default_factory=list)
    fsync: FsyncPolicy = FsyncPolicy.BATCH
    max_frame: int = fc.DEFAULT_MAX_FRAME
    indexer: bool = True
    ready: Callable[[list[str]], None] | None = None
    syslog_udp: list[Endpoint] = field(default_factory=list)
    syslog_tcp: list[Endpoint] = field(default_factory=list)
    syslog_tls: list[Endpoint] = field(default_factory=list)
    syslog_relp: list[Endpoint] = field(default_factory=list)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    exports: list[ExportSpec] = field(default_factory=list)
    limits: Limits = field(default_factory=Limits)
    guest_limits: GuestLimits = field(default_factory=GuestLimits)


def start_indexer(data: Path) -> subprocess.Popen[bytes]:
    return start_helper("umonitor.store.indexer", data)


def start_exporters(data: Path, exports: list[ExportSpec]) -> subprocess.Popen[bytes] | None:
    """The exporter process (umonitor.export.runner), if any exporter is configured.

    Its argv holds the data directory and the exporters' names only; the specs, which
    may carry credentials (OTLP headers), go to it on its standard input.
    """
    if not exports:
        return None
    from umonitor.export.config import spec_lines
    from umonitor.export.runner import prepare_exports

    prepare_exports(data, exports)
    return start_helper(
        "umonitor.export.runner", data, *(e.name for e in exports), stdin=spec_lines(exports)
    )


def start_helper(
    module: str, data: Path, *args: str, stdin: bytes | None = None
) -> subprocess.Popen[bytes]:
    """A helper process that follows the store (and exits when this process is gone).

    ``stdin``: bytes for the helper to read on its standard input, which is closed
    after them (else it reads nothing). Use it for anything secret: unlike argv, a
    pipe cannot be read by other users of the host.
    """
    helper = subprocess.Popen(
        [sys.executable, "-m", module, str(data), *args],
        stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
    )
    if helper.stdin is not None:
        # A helper that died at once shows in its exit status, not as an error here.
        with contextlib.suppress(BrokenPipeError):
            helper.stdin.write(stdin or b"")
        with contextlib.suppress(BrokenPipeError):
            helper.stdin.close()
    return helper


def raise_open_file_limit() -> None:
    """Let one process hold thousands of guest connections (soft limit up to hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > 1 << 20:
        hard = 1 << 20
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def stop_helper(helper: subprocess.Popen[bytes] | None) -> None:
    """Let a helper finish what it does (the indexer catches up once more) and exit."""
    if helper is None:
        return
    helper.terminate()
    try:
        helper.wait(timeout=60)
    except subprocess.TimeoutExpired:
        helper.kill()
        helper.wait()


async def serve(options: ServeOptions) -> None:
    """Run the collector until SIGTERM or SIGINT."""
    raise_open_file_limit()
    check_no_collector(options.data)
    store = Store(options.data, options.fsync, options.limits)
    collector = Collector(store, max_frame=options.max_frame, guest_limits=options.guest_limits)
    collector.status_path = options.data / layout.STATUS
    indexer = None
    control = None
    # Before any listener: exporters starting at "end" start before the first record.
    exporters = start_exporters(options.data, options.exports)
    try:
        control = await serve_standalone_control(collector, options.data)
        for endpoint in options.listen:
            bound = await collector.listen_tcp(endpoint)
            if options.udp:
                await collector.listen_udp(bound)
        for endpoint in options.syslog_udp:
            await listen_syslog(collector, "udp", endpoint)
        for endpoint in options.syslog_tcp:
            await listen_syslog(collector, "tcp", endpoint)
        for endpoint in options.syslog_relp:
            await listen_syslog(collector, "relp", endpoint)
        if options.syslog_tls:
            if options.tls_cert is None or options.tls_key is None:
                raise UsageError("--syslog-tls needs --tls-cert and --tls-key")
            context = tls_context(options.tls_cert, options.tls_key)
            for endpoint in options.syslog_tls:
                await listen_syslog(collector, "tls", endpoint, context)
    except BaseException:
        if control is not None:
            stop_control(options.data, control)
        await collector.shutdown()
        stop_helper(exporters)
        raise
    for dial in options.dials:
        collector.dial(dial)
    collector.write_status()
    if options.indexer:
        indexer = start_indexer(options.data)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ticker = loop.create_task(collector.periodic())
    if options.ready is not None:
        options.ready(collector.listening)
    try:
        await stop.wait()
    finally:
        if control is not None:
            stop_control(options.data, control)
        ticker.cancel()
        await collector.shutdown()
        stop_helper(exporters)
        stop_helper(indexer)


async def serve_standalone_control(
    collector: Collector, root: Path
) -> asyncio.AbstractServer | None:
    """``serve``'s control socket: guest control (``level``, ``ping``) only.

    Without one (say the path is too long for a unix socket) the collector still
    collects; it says so once, and ``level`` and ``ping`` cannot reach it.
    """
    guests = GuestControl(collector, in_data_dir(root))

    async def handle(request: dict[str, Any]) -> dict[str, Any]:
        answer = await guests.handle(request)
        if answer is not None:
            return answer
        if request.get("op") in FLEET_OPS:
            return {
                "ok": False,
                "error": f"'umonitor serve' runs on {root}, not a fleet; "
                "'umonitor ls' lists its instances",
            }
        return {"ok": False, "error": f"unknown operation {request.get('op')!r}"}

    try:
        return await serve_control(root, handle)
    except EnvironmentProblem as exc:
        sys.stderr.write(f"umonitor: {exc}; 'umonitor level' and 'ping' cannot reach guests\n")
        return None


def run(options: ServeOptions) -> None:
    """Run ``serve`` on uvloop when it is installed."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(options))
    else:
        uvloop.run(serve(options))
