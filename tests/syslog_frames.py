"""RFC 5424 frames written from a ``SyslogMessage``, for tests and fuzz seeds.

The reference the parser is held to: ``parse_syslog_untrusted(write_5424(m)) == m``
for any message with a time in years 1-9999 (or none). Structured-data values are
escaped as RFC 5424 §6.3.3 says ('"', '\\' and ']'); the message follows a BOM.
"""

from __future__ import annotations

import datetime

from umonitor.protocol.syslog import SyslogMessage

NS = 1_000_000_000
BOM = b"\xef\xbb\xbf"


def stamp_5424(ns: int) -> bytes:
    """A TIMESTAMP to the nanosecond, in UTC, for a time in years 1-9999."""
    seconds, nanos = divmod(ns, NS)
    moment = datetime.datetime(1, 1, 1) + datetime.timedelta(seconds=seconds + 62_135_596_800)
    return b"%04d-%s.%09dZ" % (moment.year, moment.strftime("%m-%dT%H:%M:%S").encode(), nanos)


def write_5424(message: SyslogMessage) -> bytes:
    """The RFC 5424 frame for ``message``."""

    def header(value: str) -> bytes:
        return value.encode() if value else b"-"

    stamp = b"-" if message.timestamp_ns is None else stamp_5424(message.timestamp_ns)
    sd = b""
    for sd_id, params in message.structured_data:
        sd += b"[" + sd_id.encode()
        for name, value in params:
            escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")
            sd += b" " + name.encode() + b'="' + escaped.encode() + b'"'
        sd += b"]"
    head = b"<%d>1 %s %s %s %s %s %s" % (
        message.facility * 8 + message.severity,
        stamp,
        header(message.hostname),
        header(message.app_name),
        header(message.procid),
        header(message.msgid),
        sd or b"-",
    )
    return head + b" " + BOM + message.message.encode() if message.message else head
