"""What every stream a guest opens shares: the collector's limits and time limits.

How this works: a native connection (connection.py), a syslog TCP or TLS stream and a
RELP session (syslog_listeners.py) are each a ``GuardedStream``. On accept it is
counted against ``max_connections`` and ``max_per_source`` (``GuardHost.stream_opened``
says no: it is closed at once). It is read through a ``ReadGate``, so that the disk
(``DISK``), its instance's rate (``RATE``) and a peer that does not read its answers
(``PEER``) each pause it for their own reason. Once a second the collector sweeps every
stream for its time limits (``over_time``): a frame or line that has started and does
not end (``slow``), no bytes at all (``idle``), answers left unread (``unread``) and,
where the protocol has a first message (native HELLO, RELP ``open``), none in time
(``handshake``). A syslog sender need not speak first, so a plain syslog stream has no
handshake limit.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import sys
import termios
import time
from typing import Protocol, cast

from umonitor.collector.base import GuestLimits
from umonitor.collector.flow import PEER, RATE, ReadGate

log = logging.getLogger(__name__)

WHY = {
    "handshake": "no HELLO in time",
    "slow": "a frame took too long to arrive",
    "unread": "did not read what it was sent",
    "idle": "idle for too long",
}


class GuardHost(Protocol):
    """What a guarded stream needs of the collector (``Collector`` is the one)."""

    guest_limits: GuestLimits

    def stream_opened(self, stream: GuardedStream) -> bool: ...

    def stream_closed(self, stream: GuardedStream) -> None: ...


class GuardedStream(asyncio.Protocol):
    """A stream under the collector's limits; subclasses decode what it carries."""

    # Whether the peer must send a first message within ``handshake_seconds``.
    handshake = True

    def __init__(self, host: GuardHost) -> None:
        self.guard = host
        self.transport: asyncio.Transport | None = None
        self.gate: ReadGate | None = None
        self.peer = ""
        self.peer_host = ""
        self.opened_at = time.monotonic()
        self.last_data = self.opened_at
        self.partial_since: float | None = None  # when the frame now buffered began
        self._closing = False
        self._resume: asyncio.TimerHandle | None = None
        self._linger: asyncio.TimerHandle | None = None  # a close waiting on the peer

    # -- what subclasses say --------------------------------------------------------

    def buffered(self) -> int:
        """Bytes held that do not form a complete frame or line yet."""
        return 0

    def identified(self) -> bool:
        """Whether the peer has sent its first message (the handshake limit ends)."""
        return True

    def instances(self) -> set[str]:
        """The instances this stream has filed records for (their VM may be held)."""
        return set()

    def opened(self) -> None:
        """Called once the stream is counted in."""

    def goodbye(self, why: str) -> None:
        """Close for a time limit: subclasses say why in their protocol first."""
        self.close()

    # -- accept, read, close ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.gate = ReadGate(transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.peer_host = str(peer[0])
            self.peer = f"{peer[0]}:{peer[1]}"
        if not self.guard.stream_opened(self):
            self._closing = True
            self.transport.abort()
            return
        self.opened()

    def took(self, nbytes: int) -> float:
        """Count a read of ``nbytes``; returns its time."""
        self.last_data = now = time.monotonic()
        if self.gate is not None:
            self.gate.took(nbytes)
        return now

    def note_partial(self, before: int, added: int, now: float) -> None:
        """After a read of ``added`` bytes with ``before`` held: when did the frame now
        held begin? Something was taken when less is held than was held plus read, so
        the incomplete frame began in this read: a peer streaming without pause is
        never a slow sender."""
        after = self.buffered()
        if not after:
            self.partial_since = None
        elif self.partial_since is None or after < before + added:
            self.partial_since = now

    def throttle(self, seconds: float) -> None:
        """Stop reading for ``seconds`` (the instance is over its rate)."""
        if seconds <= 0 or self.gate is None or self._resume is not None:
            return
        self.gate.hold(RATE)
        self._resume = asyncio.get_running_loop().call_later(seconds, self._unthrottle)

    def _unthrottle(self) -> None:
        self._resume = None
        if self.gate is not None and not self._closing:
            self.gate.release(RATE)

    def pause_writing(self) -> None:
        """The peer does not read what it is sent: read nothing more from it either.

        Everything the collector writes answers something the peer sent (ACK, PONG,
        ERROR, a RELP answer) or is one control request of a user, so this bounds what
        one peer can make the collector hold for it.
        """
        if self.gate is not None:
            self.gate.hold(PEER)

    def resume_writing(self) -> None:
        if self.gate is not None:
            self.gate.release(PEER)

    def ack_mark(self) -> int:
        return 0

    def send_ack(self, mark: int) -> None:
        """Called after the collector's commit; a stream that answers nothing has nothing."""

    def close(self) -> None:
        """Close after what is queued for the peer is sent; a peer that does not read
        it gets ``frame_seconds`` to, then the connection is aborted (else a close
        toward a peer that never reads would hold the connection for ever)."""
        if self._closing:
            return
        self._closing = True
        if self.transport is None:
            return
        self.transport.close()
        if self.transport.get_write_buffer_size() > 0:
            self._linger = asyncio.get_running_loop().call_later(
                self.guard.guest_limits.frame_seconds, self._abort_lingering
            )

    def _abort_lingering(self) -> None:
        self._linger = None
        if self.transport is not None and self.transport.get_write_buffer_size() > 0:
            log.info("closing %s: %s", self.peer, WHY["unread"])
            self.transport.abort()

    @property
    def closing(self) -> bool:
        return self._closing

    def connection_lost(self, exc: Exception | None) -> None:
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        self._closing = True
        self.guard.stream_closed(self)

    # -- time limits --------------------------------------------------------------

    def restart_clocks(self, now: float) -> None:
        """Time limits count from ``now`` (the guest's VM was stopped until now)."""
        if self.gate is not None:
            self.gate.resumed_at = now
            if self.gate.peer_since is not None:
                self.gate.peer_since = now

    def over_time(self, now: float, limits: GuestLimits) -> str | None:
        """Which time limit this stream is over, if any."""
        if self._closing or self.gate is None:
            return None
        unread = self.gate.peer_since
        if unread is not None and now - unread > limits.frame_seconds:
            return "unread"
        if self.gate.reasons:
            return None  # not read now: whatever is late is not the peer's doing
        resumed = self.gate.resumed_at
        over = None
        if (
            self.handshake
            and not self.identified()
            and now - max(self.opened_at, resumed) > limits.handshake_seconds
        ):
            over = "handshake"
        elif self.partial_since is not None and (
            now - max(self.partial_since, resumed) > limits.frame_seconds
        ):
            over = "slow"
        elif limits.idle_seconds and now - max(self.last_data, resumed) > limits.idle_seconds:
            over = "idle"
        if over is not None and self._waiting() > 0:
            return None  # its bytes are here, not yet read: the collector is late, not it
        return over

    def _waiting(self) -> int:
        """Bytes the kernel holds for this stream that the loop has not read yet."""
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        try:
            buf = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")  # type: ignore[union-attr]
        except (AttributeError, OSError, ValueError):
            return 0
        return int.from_bytes(buf, sys.byteorder, signed=True)

    def close_for(self, limit: str) -> None:
        why = WHY.get(limit, limit)
        log.info("closing %s: %s", self.peer, why)
        if limit == "unread" and self.transport is not None:
            # What it has not read would never drain: drop it with the stream.
            self._closing = True
            self.transport.abort()
            return
        self.goodbye(why)
