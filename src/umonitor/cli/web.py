"""``umonitor web``: the dashboard and /metrics over HTTP (docs/web.md)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import click

from umonitor.cli.app import data_dir, data_option, main


@main.command("web")
@click.option(
    "--listen",
    default="127.0.0.1:8321",
    show_default=True,
    metavar="HOST:PORT",
    help="Address to serve on; port 0 picks a free one. Not loopback: needs a token.",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File whose first line is the token (else $UMONITOR_WEB_TOKEN).",
)
@data_option
def web_command(listen: str, token_file: Path | None, data: Path | None) -> None:
    """Serve the dashboard: the fleet, a live tail, each instance's records, crash
    reports and console, and the actions of the CLI (level, stop, restart).

    Prints 'web: http://HOST:PORT/' once it listens; runs until SIGTERM or Ctrl-C.
    With a token, a browser opens /?token=TOKEN once, or a client sends
    'Authorization: Bearer TOKEN'.
    """
    from umonitor.web import access, server

    host, port = access.parse_listen(listen)
    token = access.load_token(token_file)
    access.check_exposure(host, token)

    def announce(line: str) -> None:
        # Flushed: a parent process reads it at once. One that closed our stdout
        # reads nothing, and is served all the same.
        with contextlib.suppress(OSError):
            click.echo(line)

    server.run(data_dir(data), host, port, token, announce)
