"""How the API answers: JSON bodies, errors as one sentence, records as JSON, and the
headers every response carries.

Everything a guest sent is untrusted: it reaches the page only inside JSON strings
(never as HTML), and every response forbids the browser to load anything from
elsewhere (``Content-Security-Policy: default-src 'self'``) or to guess a type
(``X-Content-Type-Options: nosniff``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from umonitor.records import SEVERITY_NAMES
from umonitor.store.index_query import Row
from umonitor.timeparse import rfc3339

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_QUERY = 4096  # bytes of a query string (docs/web.md: more is 414)
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def dumps(value: Any) -> str:
    """JSON text; line and paragraph separators escaped so a record stays one line."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).translate(_SEPARATORS)


_SEPARATORS = {0x2028: "\\u2028", 0x2029: "\\u2029"}


def reply(value: Any, status: int = 200) -> web.Response:
    return web.Response(text=dumps(value), status=status, content_type="application/json")


class ApiError(Exception):
    """An answer other than success: its status and one sentence (``answers`` writes
    it as ``{"error": sentence}``)."""

    def __init__(self, status: int, sentence: str) -> None:
        super().__init__(sentence)
        self.status = status
        self.sentence = sentence


def fail(status: int, sentence: str) -> ApiError:
    """The error to raise for ``status`` with ``sentence``."""
    return ApiError(status, sentence)


def _sentence(exc: web.HTTPException) -> str:
    if exc.status == 404:
        return "there is nothing at this address"
    if exc.status == 405:
        return "this address does not take that method"
    return exc.reason


@web.middleware
async def answers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The outermost middleware: bounded query strings, and every error as JSON with
    one sentence (a bug in a handler too, logged with its traceback)."""
    try:
        if len(request.query_string) > MAX_QUERY:
            raise fail(414, f"the query string is longer than {MAX_QUERY} bytes")
        return await handler(request)
    except ApiError as exc:
        return reply({"error": exc.sentence}, exc.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            return web.Response(status=exc.status, headers=exc.headers)  # e.g. a redirect
        response = reply({"error": _sentence(exc)}, exc.status)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return reply({"error": "the dashboard failed to answer; its log says why"}, 500)


async def secure_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every response, streams and files included (``on_response_prepare``)."""
    response.headers.update(SECURITY_HEADERS)


def record_json(row: Row) -> dict[str, Any]:
    """A stored record as the API gives it (docs/web.md, "Live tail")."""
    stored = row.stored
    rec = stored.record
    return {
        "instance": stored.instance,
        "time": rfc3339(stored.time_ns),
        "time_ns": stored.time_ns,
        "severity": SEVERITY_NAMES[rec.severity],
        "origin": stored.origin.value,
        "kind": rec.kind.name.lower(),
        "message": rec.message,
        "fields": [list(pair) for pair in rec.fields],
        "file": rec.file,
        "line": rec.line,
        "function": rec.function,
        "boot": row.boot,
        "seq": rec.seq,
    }
