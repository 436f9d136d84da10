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

A header value ``env:VAR`` is read from the environment variable ``VAR`` when the
URL is parsed, so a credential need not be on any command line or in any file
(``header=Authorization:env:OTEL_AUTH``). Header values are credentials: the
collector hands exporter specs to its exporter process on a pipe (``spec_lines``,
``read_spec_lines``), never in argv, and ``full_url`` shows them as ``<redacted>``
unless asked for them.
"""

from __future__ import annotations

import json
import os
import re
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

from umonitor.errors import UsageError
from umonitor.export.base import Sink
from umonitor.records import Severity
from umonitor.sizes import parse_size

SCHEMES = ("syslog+tcp", "syslog+tls", "relp", "otlp+http", "otlp+https")
DEFAULT_MAX_BACKLOG = 256 << 20
DEFAULT_BATCH = 500
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,47}")
_OPTIONS = ("start", "level", "max_backlog", "batch", "ca", "header", "compression")
_ENV = "env:"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
REDACTED = "<redacted>"


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

    def full_url(self, *, header_values: bool = False) -> str:
        """The URL with every option that differs from its default.

        Header values are shown as ``<redacted>`` (they are credentials, and this text
        goes to state files and messages) unless ``header_values``; with them, the
        URL parses back to self.
        """
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
        query.extend(("header", f"{k}:{v if header_values else REDACTED}") for k, v in self.headers)
        if self.compression != "none":
            query.append(("compression", self.compression))
        return self.url + (f"?{urlencode(query)}" if query else "")


def parse_export(
    name: str,
    url: str,
    options: Mapping[str, object] | None = None,
    environ: Mapping[str, str] | None = None,
) -> ExportSpec:
    """An ExportSpec from a URL and options; UsageError with one sentence otherwise.

    A header value ``env:VAR`` is replaced by ``environ[VAR]`` (default: this
    process's environment); an unset variable is a UsageError.
    """
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
            headers.append((key.strip(), _header_value(key.strip(), value.strip(), environ)))
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


def _header_value(key: str, value: str, environ: Mapping[str, str] | None) -> str:
    """``value``, or for ``env:VAR`` the value of environment variable ``VAR``."""
    if not value.startswith(_ENV):
        return value
    var = value[len(_ENV) :]
    if not _ENV_NAME.fullmatch(var):
        raise ValueError(f"header {key}: {var!r} is not an environment variable name")
    found = (os.environ if environ is None else environ).get(var)
    if found is None:
        raise ValueError(f"header {key} comes from environment variable {var}, which is not set")
    if "\r" in found or "\n" in found:
        raise ValueError(f"header {key}: environment variable {var} holds a line break")
    return found.strip()


def spec_lines(specs: Iterable[ExportSpec]) -> bytes:
    """Specs as JSON Lines, header values included: for a pipe, never for argv or a file."""
    lines = []
    for spec in specs:
        document = {
            "name": spec.name,
            "url": replace(spec, headers=()).full_url(),
            "headers": [[k, v] for k, v in spec.headers],
        }
        lines.append(json.dumps(document) + "\n")
    return "".join(lines).encode()


def read_spec_lines(data: bytes) -> list[ExportSpec]:
    """What ``spec_lines`` wrote, checked again; UsageError for anything else."""
    specs = []
    for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            document = json.loads(line)
            name, url, headers = document["name"], document["url"], document["headers"]
            if not isinstance(name, str) or not isinstance(url, str):
                raise TypeError("name and url must be strings")
            pairs = tuple((str(k), str(v)) for k, v in headers)
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"exporter spec line {number} is not valid: {exc}") from None
        specs.append(replace(parse_export(name, url, environ={}), headers=pairs))
    return specs


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
    from umonitor.export.relp_sink import RelpSink
    from umonitor.export.syslog_sink import SyslogSink

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
