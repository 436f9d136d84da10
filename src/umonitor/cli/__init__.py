"""The ``umonitor`` command: thin commands over the library, a module per group.

``app`` (the group, and errors as one line and an exit code), ``render`` (tables and
record lines), ``collect`` (serve, send, reindex), ``query`` (ls, logs), ``fleet`` (up,
down, run, ps, stop, restart, rm, net, image), ``control`` (level, ping, cont, debug),
``instrument`` (C sources rewritten to log function entries and returns). Each module
registers its commands on ``main`` when it is imported, which ``main`` does for the
command it runs (``app.COMMANDS``).
"""

from umonitor.cli.app import main

__all__ = ["main"]
