"""Real syslog peers for tests: a private rsyslogd, certificates, loggen.

``Rsyslog`` runs its own ``rsyslogd -n -f CONF -i PIDFILE`` in a directory of the
caller's: its config, work directory, pid file, stderr and its own internal messages
(``rsyslogd.log``) all live there. It loads no imuxsock and no imklog and handles its
internal messages itself (``processInternalMessages``), so it never opens /dev/log or
the kernel log and leaves the system's rsyslog alone.

A config is put together from pieces, each made by one helper below: inputs
(``tcp_input``, ``tls_input``, ``relp_input``) feed the ruleset ``received``, whose
actions are ``file_output`` (one JSON object per message, see ``read_messages``),
``forward_tcp`` or ``forward_relp``. Ports are chosen when the pieces are made
(``free_port``), so ``restart`` listens where ``start`` did::

    port = free_port()
    rsyslog = Rsyslog(tmp / "rsyslog", tcp_input(port), file_output(tmp / "out.jsonl"))
    rsyslog.start()        # returns once every input listens
    ...
    rsyslog.stop()         # SIGTERM; rsyslog writes out what it queued, then exits
    rows = read_messages(tmp / "out.jsonl")

Plain functions and one class, no pytest fixtures: tests build their own on these.
Failures raise ``PeerError`` with rsyslog's config, stderr and log in the message.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RSYSLOGD = Path("/usr/sbin/rsyslogd")
RULESET = "received"
JSON_TEMPLATE = "umonitor_json"
RAW_TEMPLATE = "umonitor_raw"
FORWARD_TEMPLATE = "RSYSLOG_SyslogProtocol23Format"
_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp


class PeerError(AssertionError):
    """A peer could not be set up or did not behave; the message says why."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def loggen_path() -> Path:
    """syslog-ng's loggen, as bench/peers.sh extracts it (build/peers/loggen)."""
    path = ROOT / "build" / "peers" / "loggen"
    if not os.access(path, os.X_OK):
        raise PeerError(f"no loggen at {path}: run `sh bench/peers.sh` (make setup does)")
    return path


def rsyslogd_path() -> Path:
    if not os.access(RSYSLOGD, os.X_OK):
        raise PeerError(f"no {RSYSLOGD}: apt-get install rsyslog rsyslog-relp rsyslog-openssl")
    return RSYSLOGD


def _quote(value: object) -> str:
    text = str(value)
    if '"' in text or "\\" in text or "\n" in text:
        raise PeerError(f"cannot put {text!r} into an rsyslog config string")
    return f'"{text}"'


@dataclass(frozen=True)
class Piece:
    """Part of an rsyslog config.

    ``modules`` are module() statements (each loaded once however many pieces need
    it), ``statement`` goes at the top level (inputs) or, for actions, into the
    ruleset ``received``; ``port`` is where an input listens.
    """

    statement: str
    modules: tuple[str, ...] = ()
    action: bool = False
    port: int | None = None


def tcp_input(port: int, *, module: str = "imtcp") -> Piece:
    """Syslog over TCP (LF or octet-counted framing) via ``imtcp`` or ``imptcp``."""
    if module not in ("imtcp", "imptcp"):
        raise PeerError(f"tcp_input takes imtcp or imptcp, not {module}")
    return Piece(
        f'input(type="{module}" address="127.0.0.1" port="{port}" ruleset="{RULESET}")',
        (f'module(load="{module}")',),
        port=port,
    )


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path


def make_certificate(directory: Path, name: str = "localhost") -> TlsFiles:
    """A self-signed certificate for ``name`` and 127.0.0.1, made by openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise PeerError("no openssl: apt-get install openssl")
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(directory / f"{name}.crt", directory / f"{name}.key")
    done = subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "2", "-subj", f"/CN={name}",
            "-addext", f"subjectAltName=DNS:{name},IP:127.0.0.1",
            "-keyout", str(files.key), "-out", str(files.cert),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    if done.returncode != 0:
        raise PeerError(f"openssl could not make a certificate:\n{done.stderr}")
    return files


def tls_input(port: int, tls: TlsFiles) -> Piece:
    """Syslog over TLS (RFC 5425): imtcp with the OpenSSL netstream driver, anon auth."""
    return Piece(
        f'input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="{RULESET}" '
        'streamDriver.name="ossl" streamDriver.mode="1" streamDriver.authMode="anon" '
        f"streamDriver.caFile={_quote(tls.cert)} streamDriver.certFile={_quote(tls.cert)} "
        f"streamDriver.keyFile={_quote(tls.key)})",
        ('module(load="imtcp")',),
        port=port,
    )


def relp_input(port: int) -> Piece:
    """RELP via imrelp."""
    return Piece(
        f'input(type="imrelp" address="127.0.0.1" port="{port}" ruleset="{RULESET}")',
        ('module(load="imrelp")',),
        port=port,
    )


def file_output(path: Path, *, template: str = JSON_TEMPLATE) -> Piece:
    """Every message into ``path``: one JSON object a line (``read_messages``), or raw.

    The JSON template is rsyslog's ``%jsonmesg%``: ``msg``, ``rawmsg``, ``hostname``,
    ``app-name``, ``procid``, ``msgid``, ``structured-data``, ``pri``,
    ``timereported``… as rsyslog parsed them. ``RAW_TEMPLATE`` writes ``%rawmsg%``.
    """
    return Piece(f'action(type="omfile" file={_quote(path)} template="{template}")', action=True)


def forward_tcp(port: int, host: str = "127.0.0.1") -> Piece:
    """Forward every message as RFC 5424 over TCP with octet counting (omfwd)."""
    return Piece(
        f'action(type="omfwd" target={_quote(host)} port="{port}" protocol="tcp" '
        f'TCP_Framing="octet-counted" template="{FORWARD_TEMPLATE}" '
        'action.resumeRetryCount="-1" action.resumeInterval="1")',
        action=True,
    )


def forward_relp(port: int, host: str = "127.0.0.1") -> Piece:
    """Forward every message as RFC 5424 over RELP (omrelp)."""
    return Piece(
        f'action(type="omrelp" target={_quote(host)} port="{port}" '
        f'template="{FORWARD_TEMPLATE}" action.resumeRetryCount="-1" '
        'action.resumeInterval="1")',
        ('module(load="omrelp")',),
        action=True,
    )


def rsyslog_config(base: Path, pieces: tuple[Piece, ...]) -> str:
    """The whole config for an instance living in ``base``."""
    modules: list[str] = []
    for piece in pieces:
        modules.extend(m for m in piece.modules if m not in modules)
    actions = "\n".join(f"    {p.statement}" for p in pieces if p.action)
    inputs = "\n".join(p.statement for p in pieces if not p.action)
    # parser.escapeControlCharactersOnReceive off: a newline in a message stays one.
    # A long main-queue shutdown timeout: what rsyslog took, it writes before exiting.
    return f"""\
global(workDirectory={_quote(base / "work")} processInternalMessages="on"
       maxMessageSize="64k" parser.escapeControlCharactersOnReceive="off")
main_queue(queue.timeoutShutdown="30000")
{chr(10).join(modules)}
template(name="{JSON_TEMPLATE}" type="string" string="%jsonmesg%\\n")
template(name="{RAW_TEMPLATE}" type="string" string="%rawmsg%\\n")
ruleset(name="{RULESET}") {{
{actions}
}}
action(type="omfile" file={_quote(base / "rsyslogd.log")})
{inputs}
"""


def listening(port: int) -> bool:
    """Whether something listens on TCP ``port`` (any address), from /proc/net."""
    wanted = f"{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) > 3 and parts[1].rsplit(":", 1)[-1] == wanted and parts[3] == _LISTEN:
                return True
    return False


def read_messages(path: Path) -> list[dict[str, object]]:
    """The messages a ``file_output`` has written so far, complete lines only."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    rows = []
    lines = data.split(b"\n")[:-1]  # the last is empty, or a line still being written
    for number, line in enumerate(lines, 1):
        try:
            rows.append(json.loads(line))
        except ValueError as exc:
            raise PeerError(f"{path}:{number} is not JSON ({exc}): {line[:200]!r}") from None
    return rows


class Rsyslog:
    """One private rsyslogd in the foreground, its files under ``base``."""

    def __init__(self, base: Path, *pieces: Piece) -> None:
        self.base = base
        self.pieces = pieces
        self.conf = base / "rsyslog.conf"
        self.pidfile = base / "rsyslogd.pid"
        self.stderr = base / "rsyslogd.err"
        self.log = base / "rsyslogd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ports = [p.port for p in pieces if p.port is not None]

    def _write_config(self) -> None:
        (self.base / "work").mkdir(parents=True, exist_ok=True)
        self.conf.write_text(rsyslog_config(self.base, self.pieces))
        check = subprocess.run(
            [str(rsyslogd_path()), "-N1", "-f", str(self.conf)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check.returncode != 0:
            raise PeerError(
                f"rsyslog rejects its config:\n{check.stdout}{check.stderr}\n" + self.diagnostics()
            )

    def diagnostics(self) -> str:
        """Config, stderr and rsyslog's own log, for failure messages."""
        parts = []
        for label, path in (("config", self.conf), ("stderr", self.stderr), ("log", self.log)):
            try:
                text = path.read_text(errors="replace")
            except OSError:
                text = "(none)"
            parts.append(f"--- rsyslog {label} ({path}) ---\n{text[-4000:]}")
        return "\n".join(parts)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 30.0) -> None:
        """Start rsyslogd and return once every input listens."""
        if self.running:
            raise PeerError("rsyslog is already running")
        if not self.conf.exists():
            self._write_config()
        for port in self.ports:
            if listening(port):
                raise PeerError(f"port {port} is taken before rsyslog starts")
        with open(self.stderr, "ab") as err:
            self.proc = subprocess.Popen(
                [str(rsyslogd_path()), "-n", "-f", str(self.conf), "-i", str(self.pidfile)],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                cwd=self.base,
            )
        for port in self.ports:
            self.wait_listening(port, timeout)

    def wait_listening(self, port: int, timeout: float = 30.0) -> None:
        """Wait until ``port`` listens; PeerError if rsyslog exits or time runs out."""
        deadline = time.monotonic() + timeout
        while not listening(port):
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise PeerError(
                    f"rsyslog exited ({code}) before listening on {port}\n" + self.diagnostics()
                )
            if time.monotonic() > deadline:
                raise PeerError(
                    f"rsyslog does not listen on {port} after {timeout:g} s\n" + self.diagnostics()
                )
            time.sleep(0.02)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait; the exit code.

        rsyslog writes out what it has queued (what RELP answered), but not what still
        sits unread in its TCP connections: wait for the data first where that matters.
        """
        proc = self.proc
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise PeerError(
                f"rsyslog did not stop within {timeout:g} s\n" + self.diagnostics()
            ) from None
        self.proc = None
        for port in self.ports:
            deadline = time.monotonic() + timeout
            while listening(port) and time.monotonic() < deadline:
                time.sleep(0.02)
        if code != 0:
            raise PeerError(f"rsyslog exited with status {code}\n" + self.diagnostics())
        return code

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Rsyslog:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()
