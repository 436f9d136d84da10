"""The control socket: the CLI's way into a running collector (``serve`` or ``up``).

Both ``umonitor serve`` and ``umonitor up`` listen on ``DATA/run/control.sock`` (mode
0600 in the 0700 data directory; local only). It takes one JSON object per line and
answers one JSON object per line: ``{"ok": true, ...}`` or ``{"ok": false, "error":
"..."}``. ``GuestControl`` answers the operations on a guest's connection, ``level``,
``trace`` and ``ping``, for both; ``metrics`` answers the collector's counters
(collector/counters.py, docs/metrics.md); the fleet adds its own (fleet/daemon.py).

How a guest is controlled (docs/protocol.md §2.5): the collector writes SET_LEVEL (for
``level``) and then a PING on the guest's live connection, and waits at most
``ANSWER_SECONDS`` for the PONG. A guest handles frames in order, so a library that
answers SET_LEVEL has sent its LEVEL before that PONG; a PONG without a LEVEL comes
from an older library, which applies SET_LEVEL without saying so. SET_TRACE (for
``trace``) goes only to a library whose HELLO said it takes it (flags bit 4): an older
one would take the unknown frame for a protocol error. Nothing is queued for a guest
that is not connected: it gets one sentence saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from umonitor.errors import EnvironmentProblem, UmonitorError, UsageError
from umonitor.protocol import frame_codec as fc
from umonitor.protocol.sniff import Dialect
from umonitor.records import Severity
from umonitor.store import layout
from umonitor.store.names import is_instance_name

if TYPE_CHECKING:
    from umonitor.collector.connection import Connection


class ControlHost(Protocol):
    """What guest control needs of the collector (collector/server.py's ``Collector``)."""

    def live_connection(self, name: str) -> Connection | None: ...

    def status_changed(self) -> None: ...


CONTROL = "control.sock"
ANSWER_SECONDS = 5.0  # how long a guest has to answer a control request
NO_COLLECTOR = (
    "no collector is running on {root} (start one with 'umonitor serve' or 'umonitor up')"
)

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
Reply = dict[str, Any]


def control_path(root: Path) -> Path:
    return root / "run" / CONTROL


def control_alive(root: Path) -> bool:
    """Whether a process listens on ``root``'s control socket (not one left behind)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(control_path(root)))
        except OSError:
            return False
    return True


def check_no_collector(root: Path) -> None:
    """UsageError when a collector already runs on ``root``: a data directory has one."""
    if control_alive(root):
        raise UsageError(
            f"a collector is already running on {root} ('umonitor ls' shows it); "
            "stop it first or pass another --data"
        )


async def serve_control(root: Path, handle: Handler) -> asyncio.AbstractServer:
    """Listen on ``root``'s control socket and answer each request with ``handle``.

    UsageError when another collector already answers there (one data directory has
    one collector); EnvironmentProblem when the socket cannot be made.
    """
    path = control_path(root)
    check_no_collector(root)
    try:
        path.parent.mkdir(mode=layout.DIR_MODE, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # left behind by a collector that died
        server = await asyncio.start_unix_server(_answer_with(handle), str(path))
    except OSError as exc:  # e.g. a path longer than a unix socket's 107 bytes
        raise EnvironmentProblem(f"cannot make the control socket {path}: {exc}") from None
    os.chmod(path, 0o600)
    return server


def _answer_with(
    handle: Handler,
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """A control connection's handler: one request per line, each answered in turn."""

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    request = json.loads(line)
                    if not isinstance(request, dict):
                        raise ValueError("not an object")
                    reply = await handle(request)
                except (ValueError, KeyError, TypeError) as exc:
                    reply = {"ok": False, "error": f"bad request: {exc}"}
                except UmonitorError as exc:
                    reply = {"ok": False, "error": str(exc)}
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except ConnectionError:
            pass  # the CLI went away (Ctrl-C): nothing to answer
        finally:
            writer.close()

    return client


def stop_control(root: Path, server: asyncio.AbstractServer) -> None:
    server.close()
    with contextlib.suppress(FileNotFoundError):
        control_path(root).unlink()


def request(
    root: Path, message: dict[str, Any], timeout: float = 120.0, absent: str = NO_COLLECTOR
) -> Reply:
    """Send one request to the collector running on ``root``; UsageError if it says no.

    ``absent`` is the sentence for no one listening (``{root}`` is filled in).
    """
    path = control_path(root)

    async def ask() -> Reply:
        try:
            reader, writer = await asyncio.open_unix_connection(str(path))
        except OSError as exc:
            raise UsageError(absent.format(root=root)) from exc
        writer.write(json.dumps(message).encode() + b"\n")
        await writer.drain()
        try:
            async with asyncio.timeout(timeout):
                line = await reader.readline()
        except TimeoutError:
            raise UsageError(
                f"the collector on {root} did not answer within {timeout:.0f} s"
            ) from None
        finally:
            writer.close()
        reply = json.loads(line) if line else {"ok": False, "error": "the collector went away"}
        return reply if isinstance(reply, dict) else {"ok": False, "error": "bad reply"}

    reply = asyncio.run(ask())
    if not reply.get("ok"):
        raise UsageError(str(reply.get("error", "the collector refused")))
    return reply


def set_level(root: Path, name: str, level: str) -> Reply:
    """Ask the collector on ``root`` to set connected guest ``name``'s minimum level
    (``umonitor level``, and the dashboard's); the guest's answer: ``level`` it has,
    ``was``, ``confirmed``. UsageError for a level that is none, no collector, or its
    refusal in one sentence."""
    try:
        severity = Severity.parse(level)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    message = {"op": "level", "name": name, "level": severity.label}
    return request(root, message, timeout=ANSWER_SECONDS + 5)


def _refuse(error: str) -> Reply:
    return {"ok": False, "error": error}


def in_data_dir(root: Path) -> Callable[[str], bool]:
    """Whether a name is an instance with a directory in ``root`` (known, maybe offline)."""

    def known(name: str) -> bool:
        return is_instance_name(name) and layout.instance_dir(root, name).is_dir()

    return known


class GuestControl:
    """``level`` and ``ping`` on the live connection of a named instance."""

    OPS = ("level", "trace", "ping")

    def __init__(self, collector: ControlHost, known: Callable[[str], bool]) -> None:
        self.collector = collector
        self.known = known  # names that exist though not connected (data dir, fleet)

    async def handle(self, request: dict[str, Any]) -> Reply | None:
        """The answer to a guest-control request; None for any other operation."""
        op = request.get("op")
        if op not in self.OPS:
            return None
        name = str(request.get("name", ""))
        level = None
        trace = None
        if op == "level":
            try:
                level = Severity.parse(str(request.get("level", "")))
            except ValueError as exc:
                return _refuse(str(exc))
        elif op == "trace":
            try:
                trace = _set_trace(request)
            except ValueError as exc:
                return _refuse(f"bad trace request: {exc}")
        conn = self.collector.live_connection(name)
        if conn is None:
            if not self.known(name):
                return _refuse(f"no instance named {name!r}; see 'umonitor ls'")
            if op == "level":
                return _refuse(
                    f"instance {name} is not connected, so nothing was changed: a guest "
                    "starts at its own level (umon.level) each time it connects"
                )
            if op == "trace":
                return _refuse(f"instance {name} is not connected, so nothing was changed")
            return _refuse(f"instance {name} is not connected")
        if not conn.controllable:
            dialect = "2018 Umonitor" if conn.dialect is Dialect.LEGACY else "plain text"
            return _refuse(
                f"instance {name} speaks the {dialect} format, which has no control "
                "channel; only guests of the native protocol (umonitor.c, umonitor.guest.client) "
                "take a level or answer a ping"
            )
        if trace is not None and not conn.tracing:
            return _refuse(
                f"instance {name}'s guest library does not take function tracing (it "
                "predates it, or is not the C library); nothing was sent"
            )
        was = conn.level
        answers = conn.level_answers
        traces = conn.trace_answers
        frames: list[fc.Event] = [fc.SetLevel(level)] if level is not None else []
        if trace is not None:
            frames.append(trace)
        try:
            seconds = await conn.ask(frames, ANSWER_SECONDS)
        except TimeoutError:
            maybe = "; its level may have changed" if level is not None else ""
            maybe = "; its tracing may have changed" if trace is not None else maybe
            return _refuse(f"instance {name} did not answer within {ANSWER_SECONDS:.0f} s{maybe}")
        except ConnectionError:
            return _refuse(f"instance {name} disconnected before it answered")
        reply: Reply = {"ok": True, "name": name, "rtt_ms": seconds * 1000}
        if level is not None:
            confirmed = conn.level_answers > answers
            if not confirmed:  # an older library: it applied SET_LEVEL silently
                conn.level = level
                self.collector.status_changed()
            now = conn.level if conn.level is not None else level
            reply.update(
                level=now.label, was=was.label if was is not None else None, confirmed=confirmed
            )
        if trace is not None:
            if conn.trace_answers == traces or conn.trace is None:
                return _refuse(f"instance {name} answered without saying whether it traces")
            reply.update(on=conn.trace.on, ranges=conn.trace.ranges)
        return reply


def _set_trace(request: dict[str, Any]) -> fc.SetTrace:
    """The SET_TRACE frame a ``trace`` request asks for; ValueError if it is not one."""
    on = request.get("on")
    anchor = request.get("anchor", 0)
    ranges = request.get("ranges", [])
    if not isinstance(on, bool) or not isinstance(anchor, int) or not isinstance(ranges, list):
        raise ValueError("needs on (true or false), anchor (a number), ranges (a list)")
    pairs = tuple((int(r[0]), int(r[1])) for r in ranges)
    event = fc.SetTrace(on, anchor, pairs)
    fc.encode(event)  # ValueError for what the frame cannot hold
    return event
