"""The ``umonitor`` command: thin commands over the library, a module per group.

``app`` (the group, and errors as one line and an exit code), ``render`` (tables and
record lines), ``collect`` (serve, send, reindex), ``query`` (ls, logs), ``fleet`` (up,
down, run, ps, stop, restart, rm, net, image), ``control`` (level, ping, cont, debug).
Importing this package registers every command on ``main``.
"""

from umonitor.cli import collect, control, fleet, query
from umonitor.cli.app import main

__all__ = ["collect", "control", "fleet", "main", "query"]
