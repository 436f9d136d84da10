"""Who may use the dashboard: the listening address, the token, and what a change needs.

How this works (docs/web.md, "Listening and access"). On loopback without a token
anyone on the host may look, as with the CLI's files. Anywhere else a token is
required, and once one is configured it is required everywhere. A client shows it
as ``Authorization: Bearer TOKEN``, or opens ``/?token=TOKEN`` once and gets a cookie
holding a value derived from the token (so the token itself is not stored by the
browser). Every comparison is ``hmac.compare_digest``. Requests that change
something are POSTs that must carry ``X-Umonitor: 1``: a page of another site cannot
send that header without a CORS preflight, which this server never answers, so the
cookie alone cannot be used against it. Without a token, a request must name a
loopback host in its ``Host`` header: a page whose own name an attacker re-points to
127.0.0.1 (DNS rebinding) would otherwise be able to read the API as same-origin.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Middleware

from umonitor.collector.admission import is_local_host as is_loopback
from umonitor.errors import UsageError
from umonitor.web.answers import fail

DEFAULT_LISTEN = "127.0.0.1:8321"
TOKEN_ENV = "UMONITOR_WEB_TOKEN"
COOKIE = "umon_token"
CHANGE_HEADER = "X-Umonitor"
MAX_TOKEN = 4096  # bytes of a token file's first line

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8321`` for IPv6) as a host and a port; UsageError if not."""
    host, sep, port_text = text.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise UsageError(f"cannot read --listen {text!r}; use HOST:PORT, e.g. {DEFAULT_LISTEN}")
    return host, int(port_text)


def load_token(token_file: Path | None, env: dict[str, str] | None = None) -> str | None:
    """The token: the first line of ``token_file``, else ``$UMONITOR_WEB_TOKEN``, else
    None. UsageError for a file that cannot be read or holds no token."""
    if token_file is not None:
        try:
            with open(token_file, "rb") as src:
                first = src.read(MAX_TOKEN + 1).split(b"\n", 1)[0]
        except OSError as exc:
            raise UsageError(f"cannot read the token file {token_file}: {exc.strerror}") from None
        token = first.decode("utf-8", "replace").strip()
        if not token or len(first) > MAX_TOKEN:
            raise UsageError(
                f"the token file {token_file} holds no token on its first line "
                f"(1 to {MAX_TOKEN} bytes)"
            )
        return token
    token = (os.environ if env is None else env).get(TOKEN_ENV, "").strip()
    return token or None


def check_exposure(host: str, token: str | None) -> None:
    """UsageError when the dashboard would listen beyond this host without a token."""
    if token is None and not is_loopback(host):
        raise UsageError(
            f"listening on {host} (not loopback) needs a token: pass --token-file FILE "
            f"or set {TOKEN_ENV}, or listen on 127.0.0.1"
        )


def host_of(header: str) -> str:
    """The host of a ``Host`` header (``[::1]:8321`` -> ``::1``)."""
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def cookie_value(token: str) -> str:
    """What the cookie holds: derived from the token, never the token itself."""
    return hmac.new(token.encode(), b"umonitor web cookie", hashlib.sha256).hexdigest()


def _same(given: str, wanted: str) -> bool:
    return hmac.compare_digest(given.encode(), wanted.encode())


def presented(request: web.Request, token: str) -> bool:
    """Whether ``request`` carries the token (Bearer header) or its cookie."""
    auth = request.headers.get("Authorization", "")
    scheme, _, given = auth.partition(" ")
    if scheme.lower() == "bearer" and _same(given.strip(), token):
        return True
    cookie = request.cookies.get(COOKIE)
    return cookie is not None and _same(cookie, cookie_value(token))


TOKEN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>umonitor: token needed</title></head>
<body><h1>umonitor</h1>
<p>This dashboard needs its token. Open <code>/?token=TOKEN</code> once (this browser
then keeps a cookie), or send <code>Authorization: Bearer TOKEN</code>.</p>
</body></html>
"""


def make_access(token: str | None) -> Middleware:
    """The middleware that enforces the token and the header on changes."""

    @web.middleware
    async def access(request: web.Request, handler: Handler) -> web.StreamResponse:
        if token is None and not is_loopback(host_of(request.host)):
            raise fail(
                403,
                "without a token the dashboard answers only to a loopback name "
                "(127.0.0.1, [::1], localhost) in the address",
            )
        if token is not None and not presented(request, token):
            offered = request.query.get("token")
            if request.path == "/" and offered is not None and _same(offered, token):
                response = web.Response(status=302, headers={"Location": "/"})
                response.set_cookie(
                    COOKIE, cookie_value(token), httponly=True, samesite="Strict", path="/"
                )
                return response
            if request.path == "/" and request.method == "GET":
                return web.Response(status=401, text=TOKEN_PAGE, content_type="text/html")
            raise fail(401, "the dashboard's token is missing or wrong")
        if request.method not in ("GET", "HEAD") and request.headers.get(CHANGE_HEADER) != "1":
            raise fail(403, f"a change needs the header '{CHANGE_HEADER}: 1'")
        return await handler(request)

    return access
