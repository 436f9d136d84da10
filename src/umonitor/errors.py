"""The one exception tree of umonitor.

Protocol errors are the peer's fault and never reach a user as a traceback; usage
errors are the user's (bad flag, bad config, port in use); environment errors are the
machine's (not root, qemu missing). The CLI turns each into one line and an exit code.
"""

from __future__ import annotations


class UmonitorError(Exception):
    """Base of every error umonitor raises on purpose."""

    exit_code = 1


class ProtocolError(UmonitorError):
    """Bytes from a peer do not follow the protocol.

    ``code`` is the wire ERROR code (docs/protocol.md §2.6) sent back to the peer.
    """

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


class UsageError(UmonitorError):
    """The user asked for something that cannot be done as asked."""

    exit_code = 2


class EnvironmentProblem(UmonitorError):
    """The machine lacks something umonitor needs (permissions, a tool, a port)."""

    exit_code = 3


class NotAcknowledged(UmonitorError):
    """The collector did not confirm that a record was stored."""

    exit_code = 4
