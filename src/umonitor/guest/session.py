"""The Python guest library's sans-IO core: one boot's records, until the collector has them.

How this works: ``GuestSession`` numbers records and keeps every record it encoded in a
bounded buffer until an ACK covers it; when the buffer is full the oldest record goes
and a DROPPED notice is queued (a record that already went out on a connection waits
in limbo until an ACK says whether the host holds it). On each (re)connection it
produces the preface, HELLO and every unacknowledged record again. It does no I/O:
the clients (guest/client.py) hand it the bytes they read and send what it produces.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import time
from collections.abc import Iterable, Mapping

from umonitor.errors import ProtocolError
from umonitor.protocol import frame_codec as fc
from umonitor.records import Kind, Record, Severity

LIBRARY = "umonitor-py/1.0.0"
DEFAULT_BUFFER = 10_000


class GuestSession:
    """Sequence numbers, the unacknowledged buffer, level and drops of one boot."""

    def __init__(
        self,
        name: str,
        token: bytes = b"",
        *,
        boot_id: bytes | None = None,
        capacity: int = DEFAULT_BUFFER,
        level: Severity = Severity.DEBUG,
    ) -> None:
        self.hello = fc.Hello(name, boot_id or os.urandom(16), token, LIBRARY)
        self.capacity = capacity
        self.level = level
        self.seq = 0
        self.acked = 0
        self.dropped = 0
        self.dropped_through = 0
        self.filtered = 0
        self.unacked: collections.deque[tuple[int, bytes]] = collections.deque()
        self._outbox = bytearray()
        self._decoder: fc.FrameDecoder | None = None
        self._drop_notice_due = False
        self.connected = False
        # Records evicted from a full buffer after they went out on a connection: the
        # host may hold them, so they are not dropped until an ACK says (runs lo..hi).
        self._limbo: collections.deque[list[int]] = collections.deque()
        self._wire_seq = 0  # the highest record ever handed to a connection
        self._limbo_cut = 0  # limbo at or below this went out on connections now lost
        self._hello_acked = False

    def record(
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
        """Queue one record; returns its sequence number, or 0 if filtered by level."""
        if severity > self.level:
            self.filtered += 1
            return 0
        items = fields.items() if isinstance(fields, Mapping) else fields
        self.seq += 1
        frame = fc.encode_record(
            Record(
                self.seq,
                Severity(severity),
                message,
                kind,
                time.monotonic_ns(),
                time.time_ns(),
                file,
                line,
                function,
                tuple((str(k), str(v)) for k, v in items),
            )
        )
        if len(self.unacked) >= self.capacity:
            old_seq, _ = self.unacked.popleft()
            if old_seq <= self._wire_seq:
                self._to_limbo(old_seq)
            else:
                self._drop(old_seq, 1)
        self.unacked.append((self.seq, frame))
        if self.connected:
            if self._drop_notice_due:
                self._queue_drop_notice()
            self._outbox += frame
            self._wire_seq = self.seq
        return self.seq

    def _drop(self, through: int, count: int) -> None:
        self.dropped += count
        self.dropped_through = max(self.dropped_through, through)
        self._drop_notice_due = True

    def _to_limbo(self, seq: int) -> None:
        if self._limbo and self._limbo[-1][1] + 1 == seq:
            self._limbo[-1][1] = seq
        else:
            self._limbo.append([seq, seq])

    def _settle(self, ack: int, *, lost_through: int = 0) -> None:
        """Limbo the host holds (<= ack) is delivered; what went out only on lost
        connections (<= lost_through) and is above the ACK is dropped."""
        kept: collections.deque[list[int]] = collections.deque()
        for lo, hi in self._limbo:
            lo = max(lo, ack + 1)
            if lo > hi:
                continue
            gone_hi = min(hi, lost_through)
            if gone_hi >= lo:
                self._drop(gone_hi, gone_hi - lo + 1)
                lo = gone_hi + 1
            if lo <= hi:
                kept.append([lo, hi])
        self._limbo = kept

    def _queue_drop_notice(self) -> None:
        self._drop_notice_due = False
        self._outbox += fc.encode(fc.Dropped(self.dropped, self.dropped_through))

    def connection_made(self) -> None:
        """A new connection: say HELLO and send every unacknowledged record again."""
        self.connected = True
        self._decoder = fc.FrameDecoder(fc.Peer.HOST, expect_preface=False)
        # HELLO says the level in force now: the host shows it (`umonitor ls`).
        self.hello = dataclasses.replace(self.hello, level=self.level)
        self._outbox = bytearray(fc.PREFACE + fc.encode_hello(self.hello))
        self._limbo_cut = self._wire_seq
        self._hello_acked = False
        if self.dropped:
            self._queue_drop_notice()
        for seq, frame in self.unacked:
            self._outbox += frame
            self._wire_seq = max(self._wire_seq, seq)

    def connection_lost(self) -> None:
        self.connected = False
        self._decoder = None
        self._outbox.clear()

    def data_to_send(self) -> bytes:
        out, self._outbox = bytes(self._outbox), bytearray()
        return out

    def unsent(self, data: bytes) -> None:
        """Put back what a send could not take."""
        self._outbox[:0] = data

    def receive_data(self, data: bytes) -> None:
        """Frames from the host; raises ProtocolError if the host misbehaves."""
        if self._decoder is None:
            return
        self._decoder.receive_data(data)
        for event in self._decoder.next_events():
            if isinstance(event, fc.Ack):
                self.acked = max(self.acked, event.seq)
                while self.unacked and self.unacked[0][0] <= self.acked:
                    self.unacked.popleft()
                # The first ACK answers HELLO: what it lacks of the lost connections'
                # records is gone for good.
                cut = 0 if self._hello_acked else self._limbo_cut
                self._hello_acked = True
                if self._limbo:
                    self._settle(self.acked, lost_through=cut)
                    if self._drop_notice_due and self.connected:
                        self._queue_drop_notice()
            elif isinstance(event, fc.SetLevel):
                self.level = event.level
                self._outbox += fc.encode(fc.Level(self.level))  # the answer (§2.5)
            elif isinstance(event, fc.Ping):
                self._outbox += fc.encode(fc.Pong(event.nonce))
            elif isinstance(event, fc.ErrorFrame):
                raise ProtocolError(f"collector said: {event.reason}", event.code)

    @property
    def all_acked(self) -> bool:
        return not self.unacked and not self._limbo
