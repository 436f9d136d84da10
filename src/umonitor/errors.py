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


class TooLarge(ProtocolError):
    """A frame, line or message longer than its limit, in whichever protocol (the
    native protocol answers it with ERROR code 3, TOO_LARGE)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 3)


class UsageError(UmonitorError):
    """The user asked for something that cannot be done as asked."""

    exit_code = 2


class EnvironmentProblem(UmonitorError):
    """The machine lacks something umonitor needs (permissions, a tool, a port)."""

    exit_code = 3


class NotAcknowledged(UmonitorError):
    """The collector did not confirm that a record was stored."""

    exit_code = 4


class Refused(UmonitorError):
    """A guest may not log as it asked (collector/admission.py); the message says why,
    in one sentence, and goes back to the guest in an ERROR frame."""


class DeliveryError(UmonitorError):
    """An exporter's batch did not (entirely) reach the downstream.

    ``delivered`` counts the records from the start of the batch that did; the
    message is one sentence for ``umonitor ls`` (e.g. "connection refused by
    10.0.0.1:514").

    ``permanent`` means the downstream refused the rest of the batch for good (say
    HTTP 400): sending it again cannot help, so the runner counts those records as
    dropped, reports them, and goes on with the next ones.
    """

    def __init__(self, message: str, delivered: int = 0, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.delivered = delivered
        self.permanent = permanent


class LinkDown(UmonitorError):
    """An exporter's connection to its downstream failed (export/stream_link.py).

    Internal to the exporters: the syslog and RELP sinks turn it into a
    ``DeliveryError`` with the same sentence, so it never reaches a user.
    ``delivered`` is set where the failing step knows how many messages got through.
    """

    def __init__(self, message: str, delivered: int = 0) -> None:
        super().__init__(message)
        self.delivered = delivered


class LineError(UmonitorError, ValueError):
    """A line of a log file does not follow the format (a torn write, an edit)."""
