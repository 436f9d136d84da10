"""RFC 5424 written: one stored record as one syslog message, and RFC 6587 framing.

The reader of the same format is protocol/syslog.py; the exporters
(export/syslog_sink.py, export/relp_sink.py) send what this writes.

The mapping (one record, one message)::

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [umonitor@32473 …][SD…][fields@32473 …] MSG

* PRI is facility * 8 + severity. The facility is the record's ``facility`` field
  when it names one (``kern`` … ``local7``), else ``user``.
* TIMESTAMP is the guest's wall clock (``Record.wall_ns``) when it sent one, else the
  time the collector stored the record; UTC with microseconds
  (``2026-11-26T16:10:10.123456Z``).
* HOSTNAME is the instance name; APP-NAME the ``app`` field, else the origin
  (``app``, ``console`` or ``syslog``); PROCID and MSGID the ``procid`` and ``msgid``
  fields, else ``-``. Header values keep only printable US-ASCII (anything else
  becomes ``_``) and are cut to RFC 5424's limits (255, 48, 128, 32). When a header
  could not carry a field's value unchanged (or a ``hostname`` field differs from
  the instance name), the field is also sent in ``fields@32473``: nothing is dropped.
* ``[umonitor@32473 origin="app" seq="17" boot="…" src="file:line:function"
  kind="crash"]`` is in every message: ``boot`` only when known, ``src`` only when
  the record names a place in the code, ``kind`` only for records that are not plain
  log lines (``enter``, ``exit``, ``crash``). 32473 is the private enterprise number
  RFC 5612 sets aside for documentation; the SD-IDs ``umonitor@32473`` and
  ``fields@32473`` and the names of their parameters are stable, and receivers'
  rules may rely on them.
* A record that came in as syslog keeps its structured data: its fields named
  ``SDID.param`` (split at the last dot, both parts valid SD-NAMEs) go back into an
  element ``[SDID param="…"]`` each, in the order they came. An incoming element
  that uses one of our two SD-IDs goes into ``fields@32473`` instead.
* Every other field goes into ``[fields@32473 key="value" …]`` in record order, the
  key made a valid SD-NAME (printable US-ASCII without ``=``, ``]`` and ``"``, bad
  characters replaced by ``_``, cut to 32 characters; repeated keys stay repeated).
  PARAM-VALUEs escape ``"``, ``\\`` and ``]`` with a backslash (RFC 5424 §6.3.3).
* MSG is the message in UTF-8. RFC 5424 marks UTF-8 text with a byte order mark;
  plain ASCII needs none, so the BOM is sent only when the message has a character
  beyond ASCII. An empty message is sent as no MSG at all.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from umonitor.protocol.syslog import FACILITIES
from umonitor.records import Kind, Origin, Record
from umonitor.timeparse import rfc3339

# RFC 5612 §2: the private enterprise number for documentation and examples.
ENTERPRISE = 32473
UMONITOR_SD_ID = f"umonitor@{ENTERPRISE}"
FIELDS_SD_ID = f"fields@{ENTERPRISE}"
OUR_SD_IDS = frozenset({UMONITOR_SD_ID, FIELDS_SD_ID})
USER_FACILITY = 1

# RFC 5424 §6: header field limits.
MAX_HOSTNAME = 255
MAX_APP_NAME = 48
MAX_PROCID = 128
MAX_MSGID = 32
MAX_SD_NAME = 32

_FACILITY_CODES = {name: code for code, name in enumerate(FACILITIES)}
_HEADER_KEYS = frozenset({"facility", "hostname", "app", "procid", "msgid"})
_BOM = b"\xef\xbb\xbf"
# PRINTUSASCII is %d33-126; anything else in a header value becomes "_".
_PRINTUSASCII = re.compile(r"[!-~]+")
_NOT_PRINTUSASCII = re.compile(r"[^!-~]")
# SD-NAME: PRINTUSASCII except '=', ']' and '"' (RFC 5424 §6.3.2), 1 to 32 of them.
_SD_NAME = re.compile(r"[!#-<>-\\^-~]{1,32}")
_NOT_SD_NAME = re.compile(r'[^!-~]|[="\]]')
# PARAM-VALUE escapes (RFC 5424 §6.3.3).
_SD_ESCAPES = str.maketrans({'"': '\\"', "\\": "\\\\", "]": "\\]"})


def _header(value: str, limit: int) -> str:
    """A header field: printable US-ASCII, at most ``limit`` long, ``-`` when empty."""
    if len(value) <= limit and _PRINTUSASCII.fullmatch(value):
        return value
    return _NOT_PRINTUSASCII.sub("_", value)[:limit] or "-"


def _fits_header(value: str, limit: int) -> bool:
    """Whether a header field carries ``value`` unchanged (``-`` would read as absent)."""
    return value != "-" and _header(value, limit) == value


def sd_name(key: str) -> str:
    """``key`` made a valid SD-NAME: bad characters become ``_``, cut to 32."""
    if _SD_NAME.fullmatch(key):
        return key
    return _NOT_SD_NAME.sub("_", key)[:MAX_SD_NAME] or "_"


def _param_value(value: str) -> str:
    return value.translate(_SD_ESCAPES)


def _sd_element(sd_id: str, params: Sequence[tuple[str, str]]) -> str:
    inner = "".join(f' {name}="{_param_value(value)}"' for name, value in params)
    return f"[{sd_id}{inner}]"


def _split_sd_key(key: str) -> tuple[str, str] | None:
    """``SDID.param`` as the syslog listener names structured data, if ``key`` is one."""
    sd_id, dot, param = key.rpartition(".")
    if not dot or sd_id in OUR_SD_IDS:
        return None
    if _SD_NAME.fullmatch(sd_id) and _SD_NAME.fullmatch(param):
        return sd_id, param
    return None


def format_rfc5424(
    record: Record, instance: str, origin: Origin, time_ns: int, boot: str | None = None
) -> bytes:
    """One RFC 5424 message for one stored record, without framing (see the module doc):
    ``instance`` is its hostname, ``time_ns`` when it was stored, ``boot`` its boot."""
    hostname = _header(instance, MAX_HOSTNAME)
    facility: int | None = None
    header: dict[str, str] = {}
    incoming: dict[str, list[tuple[str, str]]] = {}
    others: list[tuple[str, str]] = []
    from_syslog = origin is Origin.SYSLOG
    for key, value in record.fields:
        if key == "facility" and facility is None and value in _FACILITY_CODES:
            facility = _FACILITY_CODES[value]
            continue
        if key == "hostname" and value == hostname != "-":
            continue
        if key in ("app", "procid", "msgid") and key not in header:
            limit = MAX_APP_NAME if key == "app" else MAX_PROCID if key == "procid" else MAX_MSGID
            header[key] = _header(value, limit)
            if _fits_header(value, limit):
                continue
        elif from_syslog and key not in _HEADER_KEYS and (split := _split_sd_key(key)):
            incoming.setdefault(split[0], []).append((split[1], value))
            continue
        others.append((sd_name(key), value))

    pri = (USER_FACILITY if facility is None else facility) * 8 + int(record.severity)
    timestamp = None
    if record.wall_ns is not None:
        timestamp = rfc3339(record.wall_ns)
    if timestamp is None:
        timestamp = rfc3339(time_ns) or "-"
    app = header.get("app") or _header(origin.value, MAX_APP_NAME)
    procid = header.get("procid", "-")
    msgid = header.get("msgid", "-")

    ours = [("origin", origin.value), ("seq", str(record.seq))]
    if boot:
        ours.append(("boot", boot))
    if record.file or record.line or record.function:
        ours.append(("src", f"{record.file}:{record.line}:{record.function}"))
    if record.kind is not Kind.LOG:
        ours.append(("kind", record.kind.name.lower()))
    elements = [_sd_element(UMONITOR_SD_ID, ours)]
    elements.extend(_sd_element(sd_id, params) for sd_id, params in incoming.items())
    if others:
        elements.append(_sd_element(FIELDS_SD_ID, others))

    head = f"<{pri}>1 {timestamp} {hostname} {app} {procid} {msgid} {''.join(elements)}"
    out = head.encode("utf-8", "replace")
    message = record.message
    if not message:
        return out
    body = message.encode("utf-8", "replace")
    return out + (b" " + body if message.isascii() else b" " + _BOM + body)


def octet_counted(message: bytes) -> bytes:
    """RFC 6587 §3.4.1 octet-counting framing: ``LEN SP MSG``."""
    return b"%d %s" % (len(message), message)
