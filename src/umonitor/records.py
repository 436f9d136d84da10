"""The record type everything passes around, and its vocabularies."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple


class Severity(enum.IntEnum):
    """Severity as in RFC 5424: lower is worse."""

    EMERG = 0
    ALERT = 1
    CRIT = 2
    ERR = 3
    WARNING = 4
    NOTICE = 5
    INFO = 6
    DEBUG = 7

    @property
    def label(self) -> str:
        return SEVERITY_NAMES[self]

    @classmethod
    def parse(cls, text: str) -> Severity:
        """A severity from a name (``warning``, ``warn``, ``err``…) or a digit."""
        key = text.strip().lower()
        if key.isdigit() and int(key) <= 7:
            return cls(int(key))
        try:
            return SEVERITY_ALIASES[key]
        except KeyError:
            names = ", ".join(SEVERITY_NAMES)
            raise ValueError(f"unknown level {text!r}; use one of {names} or 0-7") from None


SEVERITY_NAMES: tuple[str, ...] = (
    "emerg",
    "alert",
    "crit",
    "err",
    "warning",
    "notice",
    "info",
    "debug",
)

SEVERITY_ALIASES: dict[str, Severity] = {
    "emerg": Severity.EMERG,
    "emergency": Severity.EMERG,
    "panic": Severity.EMERG,
    "alert": Severity.ALERT,
    "crit": Severity.CRIT,
    "critical": Severity.CRIT,
    "fatal": Severity.CRIT,
    "err": Severity.ERR,
    "error": Severity.ERR,
    "warn": Severity.WARNING,
    "warning": Severity.WARNING,
    "notice": Severity.NOTICE,
    "info": Severity.INFO,
    "debug": Severity.DEBUG,
    "trace": Severity.DEBUG,
}


class Kind(enum.IntEnum):
    """What a record says happened."""

    LOG = 0
    ENTER = 1
    EXIT = 2
    CRASH = 3


class Origin(enum.Enum):
    """Which channel a record came through."""

    APP = "app"
    CONSOLE = "console"
    SYSLOG = "syslog"


Fields = tuple[tuple[str, str], ...]


class Record(NamedTuple):
    """One log record as a guest sent it.

    ``seq`` numbers records within one boot of one guest, from 1. ``mono_ns`` is the
    guest's clock since boot, ``wall_ns`` its wall clock (either may be unknown).
    A NamedTuple rather than a frozen dataclass: one is built per record on the
    ingest path, and a frozen dataclass costs about three times as much to build.
    """

    seq: int
    severity: Severity
    message: str
    kind: Kind = Kind.LOG
    mono_ns: int | None = None
    wall_ns: int | None = None
    file: str = ""
    line: int = 0
    function: str = ""
    fields: Fields = ()


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A record as the store holds it: who sent it, through what, and when."""

    instance: str
    time_ns: int
    origin: Origin
    record: Record
