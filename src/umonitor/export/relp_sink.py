"""RELP out: stored records as RFC 5424 messages, each one answered by the server.

How this works: ``RelpSink`` sends each message (``format_item``, syslog_sink.py) as
one RELP ``syslog`` command over a ``StreamLink`` (stream_link.py) and waits for the
server's ``200 OK`` to every one of them; ``_RelpSession`` numbers the transactions
and matches the answers (protocol/relp.py reads and writes the frames).

What a successful ``send`` means (RELP is rsyslog's Reliable Event Logging
Protocol). The server answers
each ``syslog`` command once it has taken the message (rsyslog: queued it for its
actions), so ``send`` returns only when every message of the batch was answered
``200 OK``; up to ``window`` messages are unanswered at a time. ``delivered`` is
the number answered in order from the start of the batch; anything not answered is
sent again by the runner. So a receiver restarted mid-stream loses nothing, as long
as it keeps what it answered (rsyslog, stopped in order, writes it out first). A
message the server took but whose answer it never sent (stopped between the two) is
sent twice: RELP delivers at least once. The server's frames are read with bounded
sizes; anything off-protocol, an answer that is not ``200``, a ``serverclose`` or
no answer within ``timeout`` ends the session with a DeliveryError.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence

from umonitor.errors import DeliveryError, LinkDown, ProtocolError
from umonitor.export.base import ExportItem
from umonitor.export.stream_link import StreamLink, endpoint
from umonitor.export.syslog_sink import format_item
from umonitor.protocol.relp import (
    MAX_TXNR,
    RELP_OFFERS,
    RelpDecoder,
    RelpFrame,
    encode_relp,
    relp_offers_untrusted,
    relp_status_untrusted,
)


class _RelpSession:
    """One open RELP session: numbers transactions, matches answers."""

    def __init__(self, link: StreamLink, decoder: RelpDecoder, frames: deque[RelpFrame]) -> None:
        self.link = link
        self.decoder = decoder
        self.frames = frames
        self.next_txnr = 1
        self.closing = False  # the server said serverclose

    @classmethod
    async def open(cls, host: str, port: int, timeout: float) -> _RelpSession:
        decoder = RelpDecoder()
        frames: deque[RelpFrame] = deque()

        def on_data(data: bytes) -> None:
            decoder.receive_data(data)
            while batch := decoder.next_frames():
                frames.extend(batch)

        link = await StreamLink.open(host, port, timeout, on_data=on_data)
        session = cls(link, decoder, frames)
        try:
            txnr = session.take_txnr()
            link.write(encode_relp(RelpFrame(txnr, "open", RELP_OFFERS)))
            answer = await session.next_frame(timeout)
            if answer.command != "rsp" or answer.txnr != txnr:
                raise LinkDown(
                    f"{link.where} answered RELP open with {answer.command} {answer.txnr}"
                )
            code, text = relp_status_untrusted(answer.data)
            if code != 200:
                raise LinkDown(f"{link.where} refused the RELP session: {code} {text}")
            commands = relp_offers_untrusted(answer.data).get("commands", "").split(",")
            if "syslog" not in commands:
                raise LinkDown(f"{link.where} does not offer the RELP syslog command")
        except ProtocolError as exc:
            link.abort()
            raise LinkDown(f"{link.where} sent bad data: {exc}") from None
        except BaseException:
            link.abort()
            raise
        return session

    def take_txnr(self) -> int:
        txnr = self.next_txnr
        self.next_txnr = 1 if txnr >= MAX_TXNR else txnr + 1
        return txnr

    async def next_frame(self, timeout: float) -> RelpFrame:
        """The next frame from the server; LinkDown if none comes within ``timeout``."""
        link = self.link
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.frames:
            link.check_transport()
            if link.gone is not None:
                raise LinkDown(f"{link.where} {link.gone}")
            link.changed.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise LinkDown(f"{link.where} did not answer within {timeout:g} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(link.changed.wait(), remaining)
        return self.frames.popleft()

    async def usable(self) -> bool:
        """Whether the session can take another batch: no serverclose, peer still there."""
        if self.closing or not await self.link.alive():
            return False
        # Anything unasked for between batches (serverclose, stray answers) ends it.
        return not self.frames

    async def transfer(self, messages: Sequence[bytes], timeout: float, window: int) -> None:
        """Send every message and wait for all answers.

        On failure raises LinkDown whose ``delivered`` counts the messages answered
        200 in order from the first.
        """
        link = self.link
        count = len(messages)
        pending: dict[int, int] = {}  # txnr -> index in messages
        answered = [False] * count
        delivered = 0
        sent = 0
        try:
            while delivered < count:
                if sent < count and len(pending) < window:
                    chunk: list[bytes] = []
                    while sent < count and len(pending) < window:
                        txnr = self.take_txnr()
                        pending[txnr] = sent
                        chunk.append(encode_relp(RelpFrame(txnr, "syslog", messages[sent])))
                        sent += 1
                    link.write(b"".join(chunk))
                frame = await self.next_frame(timeout)
                while True:
                    if frame.command == "serverclose":
                        self.closing = True
                        raise LinkDown(f"{link.where} closed the RELP session")
                    if frame.command != "rsp":
                        raise LinkDown(
                            f"{link.where} sent an unexpected RELP command {frame.command!r}"
                        )
                    index = pending.pop(frame.txnr, None)
                    if index is None:
                        raise LinkDown(
                            f"{link.where} answered RELP transaction {frame.txnr}, "
                            "which was not pending"
                        )
                    code, text = relp_status_untrusted(frame.data)
                    if code != 200:
                        raise LinkDown(f"{link.where} refused a message: {code} {text}")
                    answered[index] = True
                    while delivered < count and answered[delivered]:
                        delivered += 1
                    if delivered == count or not self.frames:
                        break  # what follows the last answer (serverclose) waits for usable()
                    frame = self.frames.popleft()
        except ProtocolError as exc:
            raise LinkDown(f"{link.where} sent bad data: {exc}", delivered) from None
        except LinkDown as exc:
            exc.delivered = delivered
            raise

    async def close(self, timeout: float) -> None:
        """Say ``close``, wait briefly for its answer, then close the connection."""
        link = self.link
        if not self.closing and link.gone is None:
            try:
                txnr = self.take_txnr()
                link.write(encode_relp(RelpFrame(txnr, "close")))
                await self.next_frame(timeout)
            except (LinkDown, ProtocolError):
                pass
        await link.close(timeout)


class RelpSink:
    """RFC 5424 messages over RELP: each one answered by the server (see the module doc)."""

    def __init__(self, host: str, port: int, *, timeout: float = 10.0, window: int = 128) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self.host = host
        self.port = port
        self.timeout = timeout
        self.window = window
        self._session: _RelpSession | None = None

    @property
    def target(self) -> str:
        return f"relp://{endpoint(self.host, self.port)}"

    async def _ready_session(self) -> _RelpSession:
        session = self._session
        if session is not None and not await session.usable():
            session.link.abort()
            self._session = session = None
        if session is None:
            session = await _RelpSession.open(self.host, self.port, self.timeout)
            self._session = session
        return session

    async def send(self, items: Sequence[ExportItem]) -> None:
        if not items:
            return
        messages = [format_item(item) for item in items]
        try:
            session = await self._ready_session()
        except LinkDown as exc:
            raise DeliveryError(str(exc), 0) from None
        try:
            await session.transfer(messages, self.timeout, self.window)
        except LinkDown as exc:
            session.link.abort()
            self._session = None
            raise DeliveryError(str(exc), exc.delivered) from None

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close(min(self.timeout, 5.0))
