"""The collector's shared terms: its limits, where it listens or dials, and how a
listener that cannot open is told to the user. Every collector module may use these;
this one imports no other collector module, so that the collector's modules import
downwards only (tests/unit/test_layers.py).
"""

from __future__ import annotations

import asyncio
import errno
from dataclasses import dataclass
from typing import Protocol

from umonitor.errors import UsageError

DEFAULT_PORT = 2333


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


def listen_error(exc: OSError, endpoint: Endpoint, what: str) -> UsageError:
    """One sentence for a listener that cannot open: what to do about it."""
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


class Acknowledger(Protocol):
    """A connection that acknowledges what the collector has written (native, RELP).

    ``ack_mark`` is taken when a commit has written what the connection sent so far;
    ``send_ack`` gets it back once that is on disk as the fsync policy asks (under
    ``always``, after the disk worker's fsync), however much arrived meanwhile.
    """

    def ack_mark(self) -> int: ...

    def send_ack(self, mark: int) -> None: ...

    def close(self) -> None: ...
