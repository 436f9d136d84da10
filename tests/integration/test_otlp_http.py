"""OtlpHttpSink against real HTTP servers on loopback that decode with the official classes."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import socketserver
import ssl
import subprocess
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

from umonitor.errors import DeliveryError, ProtocolError
from umonitor.export.base import ExportItem
from umonitor.export.otlp import OtlpHttpSink
from umonitor.records import Origin, Record, Severity, StoredRecord

from .conftest import free_port

T0 = 1_760_000_000 * 1_000_000_000


def item(instance: str, seq: int, message: str = "") -> ExportItem:
    record = Record(seq, Severity.INFO, message or f"{instance} record {seq}")
    return ExportItem(StoredRecord(instance, T0 + seq, Origin.APP, record), "b00t", "app.log")


def batch(first: int, count: int) -> list[ExportItem]:
    return [item("web" if n % 3 else "db", n) for n in range(first, first + count)]


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


@dataclass
class Reply:
    """What the server answers to one request."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/x-protobuf"
    headers: tuple[tuple[str, str], ...] = ()
    close: bool = False
    chunked: bool = False


@dataclass
class Posted:
    """One request as the server saw it."""

    client: tuple[str, int]
    path: str
    headers: dict[str, str]
    request: logs_service_pb2.ExportLogsServiceRequest
    status: int

    def records(self) -> list[tuple[str, str]]:
        """(service.name, body) of every record, in the order sent."""
        out = []
        for resource_logs in self.request.resource_logs:
            [name] = [
                kv.value.string_value
                for kv in resource_logs.resource.attributes
                if kv.key == "service.name"
            ]
            for scope_logs in resource_logs.scope_logs:
                out += [(name, r.body.string_value) for r in scope_logs.log_records]
        return out


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def do_POST(self) -> None:
        owner = self.server.owner
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        request = logs_service_pb2.ExportLogsServiceRequest.FromString(raw)
        with owner.lock:
            reply = owner.replies.pop(0) if owner.replies else Reply()
            headers = {k.lower(): v for k, v in self.headers.items()}
            client = (str(self.client_address[0]), int(self.client_address[1]))
            owner.posted.append(Posted(client, self.path, headers, request, reply.status))
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        for name, value in reply.headers:
            self.send_header(name, value)
        if reply.close:
            self.send_header("Connection", "close")
            self.close_connection = True
        if reply.chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for start in range(0, len(reply.body), 3):
                piece = reply.body[start : start + 3]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _HTTPServer(ThreadingHTTPServer):
    def __init__(self, port: int, owner: OtlpServer) -> None:
        self.owner = owner
        self.connections: list[socket.socket] = []
        super().__init__(("127.0.0.1", port), _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        if self.owner.tls is not None:
            sock = self.owner.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        self.connections.append(sock)
        return sock, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that go away (or fail TLS) are part of the tests


@dataclass
class OtlpServer:
    """A real OTLP/HTTP logs receiver: the stdlib HTTP server in a thread."""

    port: int = 0
    tls: ssl.SSLContext | None = None
    replies: list[Reply] = field(default_factory=list)
    posted: list[Posted] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> OtlpServer:
        self._httpd = _HTTPServer(self.port, self)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every open connection, as a server going down does."""
        self._httpd.shutdown()
        self._httpd.server_close()
        for sock in self._httpd.connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._thread.join()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/logs"

    def clients(self) -> set[tuple[str, int]]:
        return {p.client for p in self.posted}


@pytest.fixture
def server() -> Iterator[OtlpServer]:
    srv = OtlpServer().start()
    yield srv
    srv.stop()


class RawServer(socketserver.ThreadingTCPServer):
    """A TCP server whose answer to each connection is ``respond(sock)``."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, respond: Callable[[socket.socket], None]) -> None:
        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                respond(self.request)

        super().__init__(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join()


def partial_success(rejected: int, message: str) -> bytes:
    response = logs_service_pb2.ExportLogsServiceResponse()
    response.partial_success.rejected_log_records = rejected
    response.partial_success.error_message = message
    return response.SerializeToString()


# --- delivery -------------------------------------------------------------------------


def test_batches_arrive_whole_and_in_order(server: OtlpServer) -> None:
    async def scenario() -> None:
        sink = OtlpHttpSink(server.url, headers={"Authorization": "Bearer s3cret"})
        try:
            await sink.send(batch(1, 10))
            await sink.send(batch(11, 5))
        finally:
            await sink.close()

    run(scenario())
    assert [p.status for p in server.posted] == [200, 200]
    first, second = server.posted
    assert first.path == "/v1/logs"
    assert first.headers["content-type"] == "application/x-protobuf"
    assert first.headers["authorization"] == "Bearer s3cret"
    assert first.headers["host"] == f"127.0.0.1:{server.port}"
    assert first.headers["user-agent"].startswith("umonitor/")
    assert first.records() == [
        *(("web", f"web record {n}") for n in (1, 2, 4, 5, 7, 8, 10)),
        *(("db", f"db record {n}") for n in (3, 6, 9)),
    ]
    assert [r.resource.attributes[0].value.string_value for r in second.request.resource_logs] == [
        "web",
        "db",
    ]
    assert len(second.records()) == 5


def test_one_connection_carries_many_requests(server: OtlpServer) -> None:
    async def scenario() -> None:
        sink = OtlpHttpSink(server.url)
        try:
            for n in range(6):
                await sink.send(batch(n * 4, 4))
        finally:
            await sink.close()

    run(scenario())
    assert len(server.posted) == 6
    assert len(server.clients()) == 1


def test_a_server_that_closes_after_answering_gets_a_new_connection(server: OtlpServer) -> None:
    server.replies = [Reply(close=True), Reply(chunked=True, body=partial_success(0, "")), Reply()]

    async def scenario() -> None:
        sink = OtlpHttpSink(server.url)
        try:
            for n in range(3):
                await sink.send(batch(n, 1))
        finally:
            await sink.close()

    run(scenario())
    assert len(server.posted) == 3
    first, second, third = (p.client for p in server.posted)
    assert first != second == third  # a chunked answer keeps the connection usable


def test_gzip(server: OtlpServer) -> None:
    async def scenario() -> None:
        sink = OtlpHttpSink(server.url, compression="gzip")
        try:
            await sink.send([item("vm", 1, "squeeze " * 100)])
        finally:
            await sink.close()

    run(scenario())
    [posted] = server.posted
    assert posted.headers["content-encoding"] == "gzip"
    assert int(posted.headers["content-length"]) < 400
    assert posted.records() == [("vm", "squeeze " * 100)]


def test_a_big_batch_is_split_and_delivered_counts_the_requests_taken(
    server: OtlpServer,
) -> None:
    items = batch(1, 40)
    server.replies = [Reply(), Reply(status=503)]
    errors: list[DeliveryError] = []

    async def scenario() -> None:
        sink = OtlpHttpSink(server.url, max_body=1500)
        try:
            try:
                await sink.send(items)
            except DeliveryError as exc:
                errors.append(exc)
            await sink.send(items[errors[0].delivered :])
        finally:
            await sink.close()

    run(scenario())
    [error] = errors
    taken = len(server.posted[0].records())
    assert 0 < taken < 40
    assert error.delivered == taken and not error.permanent
    assert server.posted[1].status == 503
    received = [r for p in server.posted if p.status == 200 for r in p.records()]
    assert sorted(received) == sorted((it.instance, it.stored.record.message) for it in items)
    assert all(int(p.headers["content-length"]) <= 1500 for p in server.posted)


# --- what the server says -------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_retryable_statuses(server: OtlpServer, status: int) -> None:
    server.replies = [Reply(status=status, headers=(("Retry-After", "7"),))]
    errors: list[DeliveryError] = []

    async def scenario() -> None:
        sink = OtlpHttpSink(server.url)
        try:
            try:
                await sink.send(batch(1, 3))
            except DeliveryError as exc:
                errors.append(exc)
            assert sink.retry_after == 7.0
            await sink.send(batch(1, 3))
            assert sink.retry_after is None
        finally:
            await sink.close()

    run(scenario())
    [error] = errors
    assert not error.permanent and error.delivered == 0
    assert f"HTTP {status}" in str(error)
    assert [p.status for p in server.posted] == [status, 200]
    assert server.posted[0].records() == server.posted[1].records()


@pytest.mark.parametrize("status", [400, 401, 404, 413, 500])
def test_other_statuses_are_permanent(server: OtlpServer, status: int) -> None:
    server.replies = [Reply(status=status, body=b"nope\n", content_type="text/plain")]
    errors: list[DeliveryError] = []

    async def scenario() -> None:
        sink = OtlpHttpSink(server.url)
        try:
            await sink.send(batch(1, 3))
        except DeliveryError as exc:
            errors.append(exc)
        finally:
            await sink.close()

    run(scenario())
    [error] = errors
    assert error.permanent and error.delivered == 0
    assert str(error).startswith(f"otlp+http://127.0.0.1:{server.port}/v1/logs answered HTTP")
    assert str(error).endswith(f"{status} {BaseHTTPRequestHandler.responses[status][0]}: nope")


def test_partial_success_is_counted_not_raised(server: OtlpServer) -> None:
    server.replies = [
        Reply(body=partial_success(2, "timestamps too old")),
        Reply(body=partial_success(0, "fine, mostly")),
        Reply(body=partial_success(1, "")),
    ]

    async def scenario() -> None:
        sink = OtlpHttpSink(server.url)
        try:
            await sink.send(batch(1, 5))
            assert (sink.rejected_total, sink.last_rejection) == (2, "timestamps too old")
            await sink.send(batch(6, 5))
            assert sink.rejected_total == 2
            await sink.send(batch(11, 5))
            assert (sink.rejected_total, sink.last_rejection) == (3, "1 records rejected")
        finally:
            await sink.close()

    run(scenario())
    assert len(server.posted) == 3


# --- connections that fail ------------------------------------------------------------


def test_nobody_listening() -> None:
    port = free_port()
    errors: list[DeliveryError] = []

    async def scenario() -> None:
        sink = OtlpHttpSink(f"http://127.0.0.1:{port}")
        try:
            await sink.send(batch(1, 2))
        except DeliveryError as exc:
            errors.append(exc)
        finally:
            await sink.close()

    run(scenario())
    [error] = errors
    assert str(error) == f"cannot connect to 127.0.0.1:{port}: connection refused"
    assert error.delivered == 0 and not error.permanent


def test_the_sink_reconnects_after_the_server_went_away() -> None:
    first = OtlpServer().start()
    second = OtlpServer(port=first.port)
    errors: list[DeliveryError] = []

    async def scenario() -> None:
        sink = OtlpHttpSink(first.url)
        try:
            await sink.send(batch(1, 2))
            first.stop()
            try:
                await sink.send(batch(3, 2))
            except DeliveryError as exc:
                errors.append(exc)
            second.start()
            await sink.send(batch(3, 2))
        finally:
            await sink.close()

    try:
        run(scenario())
    finally:
        second.stop()
    [error] = errors
    assert str(error) == f"cannot connect to 127.0.0.1:{first.port}: connection refused"
    assert not error.permanent and error.delivered == 0
    assert len(first.posted) == 1
    assert [p.records() for p in second.posted] == [
        [("db", "db record 3"), ("web", "web record 4")]
    ]


def test_a_connection_closed_while_idle_is_replaced_without_an_error() -> None:
    first = OtlpServer().start()
    second = OtlpServer(port=first.port)

    async def scenario() -> None:
        sink = OtlpHttpSink(first.url)
        try:
            await sink.send(batch(1, 1))
            first.stop()
            second.start()
            await sink.send(batch(2, 1))  # the kept connection is dead; no error for it
        finally:
            await sink.close()

    try:
        run(scenario())
    finally:
        second.stop()
    assert len(first.posted) == 1 and len(second.posted) == 1


def test_a_server_that_never_answers() -> None:
    listener = socket.create_server(("127.0.0.1", 0))  # connections wait, never accepted
    port = listener.getsockname()[1]
    errors: list[DeliveryError] = []

    async def scenario() -> None:
        sink = OtlpHttpSink(f"http://127.0.0.1:{port}", timeout=0.2)
        try:
            await sink.send(batch(1, 1))
        except DeliveryError as exc:
            errors.append(exc)
        finally:
            await sink.close()

    with listener:
        run(scenario())
    [error] = errors
    assert str(error) == f"no answer from 127.0.0.1:{port} within 0.2 s"
    assert not error.permanent


def read_head(sock: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data and (chunk := sock.recv(4096)):
        data += chunk


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"", "{where} closed the connection without answering"),
        (b"SMTP ready\r\n\r\n", "bad HTTP answer from {where}: not an HTTP/1.x status line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
         "bad HTTP answer from {where}: the server closed the connection in the middle"),
    ],
)  # fmt: skip
def test_servers_that_break_the_protocol(answer: bytes, message: str) -> None:
    def respond(sock: socket.socket) -> None:
        read_head(sock)
        sock.sendall(answer)

    raw = RawServer(respond)
    where = f"127.0.0.1:{raw.server_address[1]}"
    errors: list[DeliveryError] = []

    async def scenario() -> None:
        sink = OtlpHttpSink(f"http://{where}")
        try:
            await sink.send(batch(1, 1))
        except DeliveryError as exc:
            errors.append(exc)
        finally:
            await sink.close()

    try:
        run(scenario())
    finally:
        raw.stop()
    [error] = errors
    assert str(error).startswith(message.format(where=where))
    assert error.delivered == 0 and not error.permanent


# --- HTTP framing, byte by byte (h11 on our side) --------------------------------------


class ScriptedServer(RawServer):
    """An HTTP server on raw sockets: it counts the connections it accepts, reads each
    request whole (head, then Content-Length bytes of body) and answers with the next
    of ``answers``, raw; after an answer marked ``close`` it closes the connection."""

    def __init__(self, answers: list[tuple[bytes, bool]]) -> None:
        self.answers = answers
        self.accepted = 0
        self.bodies: list[bytes] = []
        self.lock = threading.Lock()
        super().__init__(self._serve)

    def _serve(self, sock: socket.socket) -> None:
        with self.lock:
            self.accepted += 1
        pending = b""
        while True:
            while b"\r\n\r\n" not in pending:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                pending += chunk
            head, _, pending = pending.partition(b"\r\n\r\n")
            [length] = [
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")[1:]
                if line.lower().startswith(b"content-length:")
            ]
            while len(pending) < length:
                pending += sock.recv(65536)
            with self.lock:
                self.bodies.append(pending[:length])
                answer, close = self.answers.pop(0)
            pending = pending[length:]
            sock.sendall(answer)
            if close:
                sock.shutdown(socket.SHUT_RDWR)
                return

    def records(self) -> list[str]:
        """The body of every record the server was sent, in order."""
        out = []
        for body in self.bodies:
            request = logs_service_pb2.ExportLogsServiceRequest.FromString(body)
            out += [
                r.body.string_value
                for rl in request.resource_logs
                for sl in rl.scope_logs
                for r in sl.log_records
            ]
        return out


def chunked(body: bytes, size: int = 5) -> bytes:
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def with_length(status: bytes, body: bytes, *extra: bytes) -> bytes:
    head = [b"HTTP/1.1 " + status, b"Content-Length: %d" % len(body), *extra]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def deliver(
    server: ScriptedServer, batches: list[list[ExportItem]]
) -> tuple[OtlpHttpSink, list[DeliveryError]]:
    """Send each batch with one sink; the errors raised, in order."""
    sink = OtlpHttpSink(f"http://127.0.0.1:{server.server_address[1]}")
    errors: list[DeliveryError] = []

    async def scenario() -> None:
        try:
            for items in batches:
                try:
                    await sink.send(items)
                except DeliveryError as exc:
                    errors.append(exc)
        finally:
            await sink.close()

    try:
        run(scenario())
    finally:
        server.stop()
    return sink, errors


def test_a_chunked_answer_is_read_whole_and_keeps_the_connection() -> None:
    body = partial_success(2, "timestamps too old")
    chunked_answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(body)
    server = ScriptedServer([(chunked_answer, False), (with_length(b"200 OK", b""), False)])
    sink, errors = deliver(server, [batch(1, 3), batch(4, 2)])
    assert errors == []
    assert (sink.rejected_total, sink.last_rejection) == (2, "timestamps too old")
    assert server.accepted == 1
    assert len(server.records()) == 5


def test_a_content_length_answer_is_read_whole() -> None:
    answer = with_length(b"400 Bad Request", b"no such tenant\n", b"Content-Type: text/plain")
    server = ScriptedServer([(answer, False), (with_length(b"200 OK", b""), False)])
    _, errors = deliver(server, [batch(1, 2), batch(3, 1)])
    [error] = errors
    assert str(error).endswith("answered HTTP 400 Bad Request: no such tenant")
    assert error.permanent
    assert server.accepted == 1  # the 400 left the connection fit for the next request
    assert server.records() == ["web record 1", "web record 2", "db record 3"]


def test_keep_alive_carries_two_batches_over_one_connection() -> None:
    ok = with_length(b"200 OK", b"")
    server = ScriptedServer([(ok, False), (ok, False)])
    _, errors = deliver(server, [batch(1, 2), batch(3, 2)])
    assert errors == []
    assert server.accepted == 1
    assert server.records() == ["web record 1", "web record 2", "db record 3", "web record 4"]


@pytest.mark.parametrize(
    "answer",
    [
        with_length(b"200 OK", b"", b"Connection: close"),
        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\n\r\n",  # to the close
        b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
        with_length(b"200 OK", b""),  # closed without saying so: seen while idle
    ],
)
def test_a_server_that_closes_after_each_answer_gets_a_new_connection_each_time(
    answer: bytes,
) -> None:
    server = ScriptedServer([(answer, True)] * 3)
    _, errors = deliver(server, [batch(1, 1), batch(2, 1), batch(3, 1)])
    assert errors == []
    assert server.accepted == 3
    assert server.records() == ["web record 1", "web record 2", "db record 3"]


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
         "the server closed the connection in the middle of its answer"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabc",
         "the server closed the connection in the middle of its answer"),
        (b"HTTP/1.1 OK\r\n\r\n", "not an HTTP/1.x status line: b'HTTP/1.1 OK'"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "bad response head: bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
         "bad response body: illegal chunk header: b'zz\\r\\n'"),
    ],
)  # fmt: skip
def test_a_broken_answer_is_our_error_not_h11s(answer: bytes, message: str) -> None:
    server = ScriptedServer([(answer, True), (with_length(b"200 OK", b""), False)])
    where = f"127.0.0.1:{server.server_address[1]}"
    _, errors = deliver(server, [batch(1, 1), batch(1, 1)])
    [error] = errors
    assert type(error) is DeliveryError and not error.permanent and error.delivered == 0
    assert str(error) == f"bad HTTP answer from {where}: {message}"
    assert type(error.__cause__) is ProtocolError
    assert server.accepted == 2  # the broken connection was dropped; the retry got a new one
    assert server.records() == ["web record 1", "web record 1"]


# --- TLS ------------------------------------------------------------------------------


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    return cert, key


def test_https(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = OtlpServer(tls=context).start()
    errors: list[DeliveryError] = []

    async def scenario() -> None:
        trusting = OtlpHttpSink(
            f"https://localhost:{server.port}",
            ssl_context=ssl.create_default_context(cafile=str(cert)),
        )
        doubting = OtlpHttpSink(f"https://localhost:{server.port}")
        try:
            await trusting.send(batch(1, 3))
            await trusting.send(batch(4, 3))
            try:
                await doubting.send(batch(1, 3))
            except DeliveryError as exc:
                errors.append(exc)
        finally:
            await trusting.close()
            await doubting.close()

    try:
        run(scenario())
    finally:
        server.stop()
    assert len(server.posted) == 2 and len(server.clients()) == 1
    assert server.posted[0].headers["host"] == f"localhost:{server.port}"
    [error] = errors
    assert str(error).startswith(f"cannot connect to localhost:{server.port}: certificate")
