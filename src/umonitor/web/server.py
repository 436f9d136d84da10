"""The dashboard's HTTP server: its routes, listening, and running until a signal.

``umonitor web`` runs ``run``; a process that wants the server inside its own event
loop calls ``start`` and later ``Running.close``. Either way the server only reads
the data directory and asks over the control socket, as the CLI does (docs/web.md),
so it can stop or fail without touching the collector.

A fleet (below this package in the layers) starts it as a helper process instead:
``python -m umonitor web --listen HOST:PORT --data DATA [--token-file FILE]``, a
token given inline in ``UMONITOR_WEB_TOKEN``; the first line on its stdout is
``web: URL`` once it listens, a mistake is one sentence on stderr and exit 2, and
SIGTERM stops it (exit 0).
"""

from __future__ import annotations

import asyncio
import errno
import importlib
import ipaddress
import re
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from umonitor.errors import UsageError
from umonitor.web import access, instance_api
from umonitor.web.answers import answers, fail, secure_headers
from umonitor.web.events import CLOSING, STREAMS
from umonitor.web.fleet_view import FLEET_VIEW, FleetView, fleet_events, get_fleet
from umonitor.web.reading import READER, Reader
from umonitor.web.tail import tail

STATIC = Path(__file__).resolve().parent / "static"
_STATIC_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9]+)+")
_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
}
MAX_CLIENT_BODY = 64 << 10  # bytes of any request body aiohttp reads at most
SHUTDOWN_S = 5.0  # seconds given to open requests when the server stops


def _static_file(name: str) -> web.StreamResponse:
    suffix = Path(name).suffix
    path = STATIC / name
    if not _STATIC_NAME.fullmatch(name) or suffix not in _TYPES or not path.is_file():
        raise fail(404, f"there is no page file named {name[:80]!r}")
    response = web.FileResponse(path, headers={"Cache-Control": "no-cache"})
    response.content_type = _TYPES[suffix]
    if suffix in (".html", ".js", ".css", ".svg", ".json"):
        response.charset = "utf-8"
    return response


async def index(request: web.Request) -> web.StreamResponse:
    return _static_file("index.html")


async def static(request: web.Request) -> web.StreamResponse:
    return _static_file(request.match_info["file"])


async def metrics(request: web.Request) -> web.StreamResponse:
    """Prometheus text (docs/metrics.md), built in a thread by ``web.metrics``."""
    reader = request.app[READER]
    try:  # imported here: only a scrape pays for it
        module = importlib.import_module("umonitor.web.metrics")
    except ImportError:
        raise fail(503, "metrics are not available in this installation") from None
    body = await reader.call(lambda: bytes(module.exposition(reader.root)))
    return web.Response(
        body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
    )


def make_app(reader: Reader, token: str | None) -> web.Application:
    """The application: every route of docs/web.md behind the access rules."""
    app = web.Application(
        middlewares=[answers, access.make_access(token)], client_max_size=MAX_CLIENT_BODY
    )
    app[READER] = reader
    app[FLEET_VIEW] = FleetView(reader)
    app[CLOSING] = asyncio.Event()
    app[STREAMS] = [0]
    app.on_response_prepare.append(secure_headers)

    async def closing(app: web.Application) -> None:
        app[CLOSING].set()  # event streams end now rather than hold the shutdown

    app.on_shutdown.append(closing)
    one = "/api/instances/{name}"
    app.add_routes(
        [
            web.get("/", index),
            web.get("/static/{file}", static),
            web.get("/api/fleet", get_fleet),
            web.get("/api/fleet/events", fleet_events),
            web.get("/api/tail", tail),
            web.get(f"{one}/records", instance_api.records),
            web.get(f"{one}/rate", instance_api.rate),
            web.get(f"{one}/crashes", instance_api.crash_list),
            web.get(f"{one}/crashes/{{file}}", instance_api.crash_report),
            web.get(f"{one}/console", instance_api.console),
            web.post(f"{one}/level", instance_api.set_level),
            web.post(f"{one}/stop", instance_api.stop),
            web.post(f"{one}/restart", instance_api.restart),
            web.get("/metrics", metrics),
        ]
    )
    return app


@dataclass
class Running:
    """A listening server."""

    url: str
    runner: web.AppRunner
    reader: Reader

    async def close(self) -> None:
        await self.runner.cleanup()
        self.reader.close()


def _url(host: str, port: int) -> str:
    try:
        shown = f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        shown = host
    return f"http://{shown}:{port}/"


def _listen_error(exc: OSError, host: str, port: int) -> UsageError:
    if exc.errno == errno.EADDRINUSE:
        return UsageError(
            f"port {port} on {host} is already in use; choose another with --listen HOST:PORT"
        )
    if exc.errno == errno.EACCES:
        return UsageError(f"not allowed to listen on port {port}; use a port above 1023")
    if isinstance(exc, socket.gaierror) or exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
        return UsageError(f"cannot listen on {host}: no such local address")
    return UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


async def start(root: Path, host: str, port: int, token: str | None) -> Running:
    """Listen on ``host:port`` for ``root``'s dashboard; UsageError (one sentence) for
    a public address without a token, a data directory without data, or an address
    that cannot be listened on."""
    access.check_exposure(host, token)
    reader = Reader(root)
    reader.check()
    runner = web.AppRunner(make_app(reader, token), access_log=None, shutdown_timeout=SHUTDOWN_S)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        reader.close()
        raise _listen_error(exc, host, port) from None
    bound = runner.addresses[0]
    return Running(_url(str(bound[0]), int(bound[1])), runner, reader)


def run(
    root: Path, host: str, port: int, token: str | None, announce: Callable[[str], None]
) -> None:
    """Serve until SIGTERM or SIGINT; ``announce`` gets ``web: URL`` once listening."""

    async def serve() -> None:
        running = await start(root, host, port, token)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            announce(f"web: {running.url}")
            await stop.wait()
        finally:
            await running.close()

    asyncio.run(serve())
