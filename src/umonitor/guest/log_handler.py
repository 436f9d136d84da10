"""The Python guest library's ``logging`` handler: ``logging`` records sent through a ``Client``."""

from __future__ import annotations

import logging

from umonitor.guest.client import Client
from umonitor.records import Severity

_LOGGING_LEVELS = (
    (logging.CRITICAL, Severity.CRIT),
    (logging.ERROR, Severity.ERR),
    (logging.WARNING, Severity.WARNING),
    (logging.INFO, Severity.INFO),
)


def severity_of(levelno: int) -> Severity:
    for threshold, severity in _LOGGING_LEVELS:
        if levelno >= threshold:
            return severity
    return Severity.DEBUG


class LogHandler(logging.Handler):
    """A ``logging`` handler that ships records with their source location.

    ``extra={"fields": {...}}`` on a logging call adds key-value fields.
    """

    def __init__(self, client: Client, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.client = client

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = dict(getattr(record, "fields", {}) or {})
            fields.setdefault("logger", record.name)
            self.client.log(
                severity_of(record.levelno),
                self.format(record),
                fields=fields,
                file=record.pathname,
                line=record.lineno or 0,
                function=record.funcName or "",
            )
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        self.client.flush(1.0)

    def close(self) -> None:
        self.client.close()
        super().close()
