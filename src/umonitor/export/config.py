"""Exporter settings: one URL per exporter, with its options as query parameters.

The same text works on the command line (``serve --export NAME=URL``) and in
``umonitor.toml`` (``[[export]] name = … url = …``, where each option may also be a
key of its own)::

    syslog+tcp://10.0.0.1:514              RFC 5424, octet counting, over TCP
    syslog+tls://logs.example:6514?ca=/etc/umonitor/ca.pem
    relp://10.0.0.1:2514                   RELP (acknowledged), rsyslog's imrelp
    otlp+http://10.0.0.1:4318/v1/logs      OTLP/HTTP protobuf (path defaults to /v1/logs)
    otlp+https://otel.example:4318?header=Authorization:Bearer%20x

Options: ``start=end|beginning`` (where a new exporter starts: only what arrives
from now on, the default, or everything stored), ``level=warning`` (only records at
or above), ``max_backlog=256MiB`` (how far behind, per log file, it may fall before
the oldest records are skipped and counted as dropped), ``batch=500``, ``ca=PATH``
(TLS trust; default: the system's), ``header=NAME:VALUE`` (OTLP, repeatable) and
``compression=gzip`` (OTLP).
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

from umonitor.errors import UsageError
from umonitor.export.base import Sink
from umonitor.records import Severity

SCHEMES = ("syslog+tcp", "syslog+tls", "relp", "otlp+http", "otlp+https")
DEFAULT_MAX_BACKLOG = 256 << 20
DEFAULT_BATCH = 500
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,47}")
_SIZE = re.compile(r"([0-9]+)\s*([KMG]i?B?|B)?", re.I)
_OPTIONS = ("start", "level", "max_backlog", "batch", "ca", "header", "compression")


@dataclass(frozen=True, slots=True)
class ExportSpec:
    """One exporter: a name (its state file and its line in ``ls``) and where to."""

    name: str
    scheme: str
    host: str
    port: int
    path: str = ""
    start: str = "end"
    level: Severity = Severity.DEBUG
    max_backlog: int = DEFAULT_MAX_BACKLOG
    batch: int = DEFAULT_BATCH
    ca: Path | None = None
    headers: tuple[tuple[str, str], ...] = ()
    compression: str = "none"

    @property
    def url(self) -> str:
        """Where to, without options (for people and for ``ls``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.path}"

    def full_url(self) -> str:
        """The URL with every option that differs from its default: parses back to self."""
        query: list[tuple[str, str]] = []
        if self.start != "end":
            query.append(("start", self.start))
        if self.level is not Severity.DEBUG:
            query.append(("level", self.level.label))
        if self.max_backlog != DEFAULT_MAX_BACKLOG:
            query.append(("max_backlog", str(self.max_backlog)))
        if self.batch != DEFAULT_BATCH:
            query.append(("batch", str(self.batch)))
        if self.ca is not None:
            query.append(("ca", str(self.ca)))
        query.extend(("header", f"{k}:{v}") for k, v in self.headers)
        if self.compression != "none":
            query.append(("compression", self.compression))
        return self.url + (f"?{urlencode(query)}" if query else "")


def parse_size(text: str) -> int:
    """``256MiB``, ``1G``, ``4096`` as bytes; ValueError otherwise."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a size: {text!r} (say e.g. 256MiB)")
    unit = (match.group(2) or "B").upper()[:1]
    return int(match.group(1)) << {"B": 0, "K": 10, "M": 20, "G": 30}[unit]


def parse_export(name: str, url: str, options: Mapping[str, object] | None = None) -> ExportSpec:
    """An ExportSpec from a URL and options; UsageError with one sentence otherwise."""
    if not _NAME.fullmatch(name):
        raise UsageError(
            f"bad exporter name {name!r}: use lower-case letters, digits, '.', '_' or '-'"
        )
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise UsageError(
            f"exporter {name}: unknown kind {scheme or url!r}; use one of {', '.join(SCHEMES)}"
        )
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        raise UsageError(f"exporter {name}: {url!r} needs a host and a port (HOST:PORT)")
    settings: dict[str, list[str]] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        settings.setdefault(key, []).append(value)
    for key, option in (options or {}).items():
        values: list[object] = list(option) if isinstance(option, list) else [option]
        settings.setdefault(key, []).extend(str(v) for v in values)
    unknown = sorted(set(settings) - set(_OPTIONS))
    if unknown:
        raise UsageError(
            f"exporter {name}: unknown option {unknown[0]!r}; known: {', '.join(_OPTIONS)}"
        )

    def one(key: str, default: str) -> str:
        return settings.get(key, [default])[-1]

    try:
        start = one("start", "end")
        if start not in ("end", "beginning"):
            raise ValueError("start must be 'end' or 'beginning'")
        level = Severity.parse(one("level", "debug"))
        max_backlog = parse_size(one("max_backlog", str(DEFAULT_MAX_BACKLOG)))
        batch = int(one("batch", str(DEFAULT_BATCH)))
        if not 1 <= batch <= 10_000:
            raise ValueError("batch must be between 1 and 10000")
        compression = one("compression", "none")
        if compression not in ("none", "gzip"):
            raise ValueError("compression must be 'none' or 'gzip'")
        headers = []
        for header in settings.get("header", []):
            key, colon, value = header.partition(":")
            if not colon or not key.strip():
                raise ValueError(f"header {header!r} is not NAME:VALUE")
            headers.append((key.strip(), value.strip()))
    except ValueError as exc:
        raise UsageError(f"exporter {name}: {exc}") from None
    ca = Path(one("ca", "")) if one("ca", "") else None
    if ca is not None and not ca.is_file():
        raise UsageError(f"exporter {name}: no CA file at {ca}")
    path = (
        (parts.path if parts.path not in ("", "/") else "/v1/logs")
        if scheme.startswith("otlp")
        else ""
    )
    return ExportSpec(
        name=name,
        scheme=scheme,
        host=parts.hostname,
        port=port,
        path=path,
        start=start,
        level=level,
        max_backlog=max_backlog,
        batch=batch,
        ca=ca,
        headers=tuple(headers),
        compression=compression,
    )


def parse_export_option(text: str) -> ExportSpec:
    """``NAME=URL`` (or just ``URL``, named after its kind and host) from the command line."""
    name, eq, url = text.partition("=")
    if not eq or "://" in name:
        url = text
        parts = urlsplit(text)
        name = re.sub(r"[^a-z0-9._-]+", "-", f"{parts.scheme}-{parts.hostname or ''}".lower())
        name = name.strip("-._") or "export"
    return parse_export(name, url)


def client_tls(spec: ExportSpec) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(spec.ca) if spec.ca else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def make_sink(spec: ExportSpec) -> Sink:
    """The sink that delivers to ``spec``'s downstream."""
    from umonitor.export.otlp import OtlpHttpSink
    from umonitor.export.syslog_out import RelpSink, SyslogSink

    if spec.scheme == "syslog+tcp":
        return SyslogSink(spec.host, spec.port)
    if spec.scheme == "syslog+tls":
        return SyslogSink(spec.host, spec.port, ssl_context=client_tls(spec))
    if spec.scheme == "relp":
        return RelpSink(spec.host, spec.port)
    scheme = "https" if spec.scheme == "otlp+https" else "http"
    host = f"[{spec.host}]" if ":" in spec.host else spec.host
    return OtlpHttpSink(
        f"{scheme}://{host}:{spec.port}{spec.path}",
        headers=dict(spec.headers),
        ssl_context=client_tls(spec) if scheme == "https" else None,
        compression="gzip" if spec.compression == "gzip" else "none",
    )
