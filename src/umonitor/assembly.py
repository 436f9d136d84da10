"""The one assembly of a running umonitor: what starts, in which order, how it stops.

``umonitor serve`` (a collector) and ``umonitor up`` (a collector with a fleet on top)
both run ``run(Assembly)``, so the two cannot start or stop differently.

Start, in this order:

1. the open-file limit raised (thousands of guest connections); one collector per data
   directory (a live control socket there is refused in one sentence);
2. the exporters' positions prepared, so that an exporter starting at ``end`` starts
   before the first record can arrive; log files a crash left ahead of their saved
   state recovered, in a thread (``Store.recover_unsettled``);
3. the collector's listeners: native TCP (and UDP on the same addresses), then syslog
   UDP, TCP, RELP and TLS; one that cannot open ends everything started so far, with
   its one sentence (collector/base.py ``listen_error``);
4. the control socket (``level`` and ``ping`` for every guest, ``metrics`` for the
   collector's counters, the part's operations such as ``ps`` or ``down``); without a
   part, a control socket that cannot open is said once and the collector collects on;
5. dials to guests that listen, the status file;
6. the helper processes that follow the store: the indexer, the exporter runner, and
   the dashboard (``umonitor web``) when one is configured;
7. the part (a fleet: its instances are started here, once the collector listens);
8. the once-a-second ticker; ``ready`` with the addresses listened on.

Run until SIGTERM or SIGINT, or until the part sets ``stopping`` (``umonitor down``).

Stop, in this order: the dashboard, the control socket, the part (a fleet stops its instances), the
ticker, the collector (stores and acknowledges what arrived, says goodbye), then the
exporters and the indexer together (the indexer catches up once more; the loop waits
for them without blocking).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from umonitor.collector.base import Dial, Endpoint
from umonitor.collector.control import (
    GuestControl,
    check_no_collector,
    in_data_dir,
    serve_control,
    stop_control,
)
from umonitor.collector.counters import metrics_answer
from umonitor.collector.server import Collector
from umonitor.collector.syslog_listeners import listen_syslog
from umonitor.errors import EnvironmentProblem
from umonitor.export.config import ExportSpec, spec_lines
from umonitor.export.runner import prepare_exports
from umonitor.store import layout

SYSLOG_KINDS = ("udp", "tcp", "relp", "tls")
WEB_TOKEN_ENV = "UMONITOR_WEB_TOKEN"  # how ``umonitor web`` takes a token it is given
# What only a fleet's control socket answers (fleet/daemon.py).
FLEET_OPS = frozenset({"ps", "stop", "restart", "rm", "run", "down", "cont", "debug"})
Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]


class Part(Protocol):
    """What runs on top of the collector (a fleet): started once the collector listens,
    asked first about control requests, stopped before the collector."""

    async def start(self) -> None: ...

    def knows(self, name: str) -> bool:
        """Whether ``name`` is one of its instances (for guest control)."""
        ...

    async def handle(self, request: dict[str, Any]) -> dict[str, Any] | None: ...

    async def stop(self) -> None: ...


@dataclass
class Listeners:
    """Where the collector listens: native guests (TCP, and UDP on the same
    addresses), and syslog by kind (``udp``, ``tcp``, ``relp``, ``tls``)."""

    native: list[Endpoint]
    udp: bool = True
    syslog: list[tuple[str, Endpoint]] = field(default_factory=list)
    tls: ssl.SSLContext | None = None  # for the tls syslog listeners


@dataclass(frozen=True, slots=True)
class WebSpec:
    """The dashboard (``umonitor web``, docs/web.md) as a helper process: where it
    listens, and its token (given to it in its environment, never in argv)."""

    listen: str
    token: str | None = None


@dataclass
class Assembly:
    root: Path
    collector: Collector
    listeners: Listeners
    exports: list[ExportSpec] = field(default_factory=list)
    dials: list[Dial] = field(default_factory=list)
    indexer: bool = True
    part: Part | None = None
    web: WebSpec | None = None
    ready: Callable[[list[str]], None] | None = None
    stopping: asyncio.Event = field(default_factory=asyncio.Event)


async def run(app: Assembly) -> None:
    """Start everything in order, run until stopped, stop everything in order."""
    raise_open_file_limit()
    check_no_collector(app.root)
    prepare_exports(app.root, app.exports)
    collector = app.collector
    collector.status_path = app.root / layout.STATUS
    control: asyncio.AbstractServer | None = None
    indexer: subprocess.Popen[bytes] | None = None
    exporters: subprocess.Popen[bytes] | None = None
    web: subprocess.Popen[bytes] | None = None
    started = False
    try:
        # Log files a crash left ahead of their state are read now, in a thread, not
        # on the loop when their guests first connect.
        await asyncio.to_thread(collector.store.recover_unsettled)
        await _listen(collector, app.listeners)
        control = await open_control(app)
        for dial in app.dials:
            collector.dial(dial)
        collector.write_status()
        await asyncio.to_thread(collector.store.worker.wait)  # on disk before `ready`
        if app.indexer:
            indexer = start_helper("umonitor.store.indexer", app.root)
        exporters = start_exporters(app.root, app.exports)
        web = start_web(app.root, app.web)
        if app.part is not None:
            await app.part.start()
        started = True
    finally:
        if not started:  # a listener, the control socket or the part failed: undo
            await _stop(app, control, None, indexer, exporters, web)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, app.stopping.set)
    ticker = loop.create_task(collector.periodic())
    if app.ready is not None:
        app.ready(collector.listening)
    try:
        await app.stopping.wait()
    finally:
        await _stop(app, control, ticker, indexer, exporters, web)


async def _listen(collector: Collector, listeners: Listeners) -> None:
    for endpoint in listeners.native:
        bound = await collector.listen_tcp(endpoint)
        if listeners.udp:
            await collector.listen_udp(bound)
    for kind in SYSLOG_KINDS:  # in this order, whatever order they were given in
        for endpoint in (e for k, e in listeners.syslog if k == kind):
            await listen_syslog(collector, kind, endpoint, listeners.tls)


async def open_control(app: Assembly) -> asyncio.AbstractServer | None:
    """The control socket: guest control, then the part's operations."""
    part = app.part
    by_dir = in_data_dir(app.root)  # guests the collector only has the files of
    guests = GuestControl(
        app.collector, lambda name: (part is not None and part.knows(name)) or by_dir(name)
    )

    async def handle(request: dict[str, Any]) -> dict[str, Any]:
        if request.get("op") == "metrics":  # the collector's counters (docs/metrics.md)
            return {"ok": True, "fleet": part is not None, **metrics_answer(app.collector)}
        answer = await part.handle(request) if part is not None else None
        if answer is None:
            answer = await guests.handle(request)
        if answer is not None:
            return answer
        if part is None and request.get("op") in FLEET_OPS:
            return {
                "ok": False,
                "error": f"'umonitor serve' runs on {app.root}, not a fleet; "
                "'umonitor ls' lists its instances",
            }
        return {"ok": False, "error": f"unknown operation {request.get('op')!r}"}

    try:
        return await serve_control(app.root, handle)
    except EnvironmentProblem as exc:
        if part is not None:
            raise  # a fleet without its control socket could not be stopped
        sys.stderr.write(f"umonitor: {exc}; 'umonitor level' and 'ping' cannot reach guests\n")
        return None


async def _stop(
    app: Assembly,
    control: asyncio.AbstractServer | None,
    ticker: asyncio.Task[None] | None,
    indexer: subprocess.Popen[bytes] | None,
    exporters: subprocess.Popen[bytes] | None,
    web: subprocess.Popen[bytes] | None,
) -> None:
    await stop_helper(web, grace=5.0)  # its streams end; it reads, never writes
    if control is not None:
        stop_control(app.root, control)
    try:
        if app.part is not None:
            await app.part.stop()
    finally:
        if ticker is not None:
            ticker.cancel()
        await app.collector.shutdown()
        await asyncio.gather(stop_helper(exporters), stop_helper(indexer))


def start_exporters(data: Path, exports: list[ExportSpec]) -> subprocess.Popen[bytes] | None:
    """The exporter process (umonitor.export.runner), if any exporter is configured.

    Its argv holds the data directory and the exporters' names only; the specs, which
    may carry credentials (OTLP headers), go to it on its standard input.
    """
    if not exports:
        return None
    return start_helper(
        "umonitor.export.runner", data, *(e.name for e in exports), stdin=spec_lines(exports)
    )


def start_web(data: Path, web: WebSpec | None) -> subprocess.Popen[bytes] | None:
    """``umonitor web`` for the data directory, if configured. Its stdout (``web:
    URL`` once it listens) and stderr (one sentence if it cannot) are this process's."""
    if web is None:
        return None
    env = dict(os.environ)
    env.pop(WEB_TOKEN_ENV, None)
    if web.token is not None:
        env[WEB_TOKEN_ENV] = web.token
    argv = [sys.executable, "-m", "umonitor", "web", "--listen", web.listen, "--data", str(data)]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, env=env)


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


async def stop_helper(helper: subprocess.Popen[bytes] | None, grace: float = 60.0) -> None:
    """Let a helper finish what it does (the indexer catches up once more) and exit;
    killed after ``grace`` seconds. Waits without holding the event loop."""
    if helper is None:
        return
    helper.terminate()
    deadline = time.monotonic() + grace
    while helper.poll() is None:
        if time.monotonic() >= deadline:
            helper.kill()
            deadline = float("inf")
        await asyncio.sleep(0.05)


def raise_open_file_limit() -> None:
    """Let one process hold thousands of guest connections (soft limit up to hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > 1 << 20:
        hard = 1 << 20
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run_loop(main: Awaitable[None]) -> None:
    """Run ``main`` on uvloop when it is installed, else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)  # type: ignore[arg-type]
    else:
        uvloop.run(main)  # type: ignore[arg-type]
