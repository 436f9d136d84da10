"""The dashboard's HTTP API (docs/web.md) against real processes.

``umonitor web`` runs as a subprocess on loopback port 0 (its URL read from its
stdout), beside a real collector (``umonitor serve``) fed by the Python guest client
and util-linux ``logger``, or over a data directory written by the store itself with
chosen times (ties included), console lines and crash reports. Requests go over
plain HTTP with urllib and http.client.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import (
    Collector,
    free_port,
    python_guest,
    start_collector,
    umonitor,
    wait_for,
)
from tests.integration.test_control import unbooted_fleet
from umonitor.collector.control import stop_control
from umonitor.guest.client import AsyncClient, Client
from umonitor.records import Origin, Record, Severity
from umonitor.store import layout
from umonitor.store.writer import Store
from umonitor.timeparse import format_time
from umonitor.web.tail import RATE

SECURITY = {"Content-Security-Policy": "default-src 'self'", "X-Content-Type-Options": "nosniff"}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 302 is an answer to look at, not to follow


OPENER = urllib.request.build_opener(_NoRedirect)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        assert self.headers["Content-Type"].startswith("application/json"), self.headers
        return json.loads(self.body)


@dataclass
class Web:
    proc: subprocess.Popen[str]
    url: str  # as printed
    host: str
    port: int

    def request(
        self,
        path: str,
        *,
        method: str = "GET",
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"http://{self.host}:{self.port}{path}", data=data, method=method, headers=headers or {}
        )
        try:
            with OPENER.open(req, timeout=60) as resp:
                return Answer(resp.status, dict(resp.headers), resp.read())
        except urllib.error.HTTPError as exc:
            return Answer(exc.code, dict(exc.headers), exc.read())

    def get(self, path: str, status: int = 200, **kw: Any) -> Any:
        answer = self.request(path, **kw)
        assert answer.status == status, (answer.status, answer.body)
        return answer.json()

    def post(self, path: str, body: Any = None, **kw: Any) -> Answer:
        headers = {"X-Umonitor": "1", "Content-Type": "application/json", **kw.pop("headers", {})}
        return self.request(path, method="POST", body=body, headers=headers, **kw)

    def events(self, path: str, headers: dict[str, str] | None = None) -> Events:
        return Events(self.host, self.port, path, headers or {})

    stderr: str = ""

    def stop(self) -> int:
        """SIGTERM; its exit status (what it said on stderr is kept in ``stderr``)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        _, self.stderr = self.proc.communicate(timeout=60)  # closes the pipes
        return self.proc.returncode


class Events:
    """A text/event-stream read event by event (comment lines skipped)."""

    def __init__(self, host: str, port: int, path: str, headers: dict[str, str]) -> None:
        self.conn = http.client.HTTPConnection(host, port, timeout=60)
        self.conn.request("GET", path, headers=headers)
        self.response = self.conn.getresponse()

    def next(self) -> tuple[str, Any]:
        event, data = "", []
        while True:
            raw = self.response.readline()
            if not raw:
                raise AssertionError("the event stream ended")
            line = raw.decode().rstrip("\n")
            if not line:
                if event:
                    return event, json.loads("\n".join(data))
                continue
            if line.startswith(":"):
                continue
            key, _, value = line.partition(": ")
            if key == "event":
                event = value
            elif key == "data":
                data.append(value)

    def records_until(self, last_message: str) -> list[dict[str, Any]]:
        """Every ``record`` up to and including the one saying ``last_message``."""
        out = []
        while True:
            event, data = self.next()
            assert event == "record", (event, data)
            out.append(data)
            if data["message"] == last_message:
                return out

    def close(self) -> None:
        self.conn.close()


def start_web(
    data: Path, *args: str, listen: str = "127.0.0.1:0", env: dict[str, str] | None = None
) -> Web:
    proc = subprocess.Popen(
        [sys.executable, "-m", "umonitor", "web", "--listen", listen, "--data", str(data), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 60)
    line = proc.stdout.readline() if ready else ""
    if not line.startswith("web: http://"):
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"umonitor web did not start: {line!r} {err}")
    url = line.split(" ", 1)[1].strip()
    parsed = urllib.parse.urlsplit(url)
    assert parsed.port is not None and url.endswith("/")
    return Web(proc, url, "127.0.0.1", parsed.port)


def one_sentence(out: subprocess.CompletedProcess[str], exit_code: int = 2) -> str:
    assert out.returncode == exit_code, (out.stdout, out.stderr)
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("umonitor: "), out.stderr
    return lines[0]


def ls_rows(data: Path) -> dict[str, dict[str, Any]]:
    out = umonitor("ls", "-o", "json", "--data", str(data))
    assert out.returncode == 0, out.stderr
    rows = (json.loads(line) for line in out.stdout.splitlines())
    return {r["name"]: r for r in rows if "name" in r}


def logger(port: int, *args: str) -> None:
    done = subprocess.run(["logger", "--server", "127.0.0.1", "--port", str(port), *args],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode == 0, done.stderr


# -- a live collector, fed by guests -----------------------------------------------


@dataclass
class Live:
    collector: Collector
    web: Web
    syslog_port: int


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    syslog_port = free_port()
    data = tmp_path_factory.mktemp("live") / "data"
    collector = start_collector(data, "--syslog-tcp", f"127.0.0.1:{syslog_port}")
    guests = [python_guest(collector.port, "alpha", 40), python_guest(collector.port, "beta", 16)]
    for guest in guests:
        out, err = guest.communicate(timeout=60)
        assert guest.returncode == 0, (out, err)
    web = start_web(data)
    try:
        yield Live(collector, web, syslog_port)
    finally:
        assert web.stop() == 0
        assert collector.stop() == 0


def _comparable(instance: dict[str, Any]) -> dict[str, Any]:
    keys = ("counts", "records", "dropped", "last_seen", "connected")
    return {k: instance[k] for k in keys}


def test_fleet_is_what_ls_says(live: Live) -> None:
    def same() -> bool:
        ls = ls_rows(live.collector.data)
        fleet = {i["name"]: i for i in live.web.get("/api/fleet")["instances"]}
        return set(ls) == set(fleet) and all(
            _comparable(fleet[n]) == {k: ls[n][k] for k in _comparable(fleet[n])} for n in ls
        )

    wait_for(same, what="/api/fleet to agree with ls -o json")
    fleet = live.web.get("/api/fleet")
    alpha = next(i for i in fleet["instances"] if i["name"] == "alpha")
    assert alpha["records"] == 40 and sum(alpha["counts"].values()) == 40
    assert alpha["state"] == "disconnected" and alpha["fleet"] is False
    assert alpha["uptime_s"] is None and alpha["crashes"] == 0
    assert fleet["fleet"] is False
    status = json.loads((live.collector.data / layout.STATUS).read_text())
    collector = fleet["collector"]
    assert collector["running"] is True and collector["pid"] == live.collector.proc.pid
    assert collector["pid"] == status["pid"] and collector["listening"] == status["listening"]
    assert collector["rss_bytes"] > 0


def test_fleet_events_start_with_the_fleet(live: Live) -> None:
    stream = live.web.events("/api/fleet/events")
    try:
        assert stream.response.status == 200
        assert stream.response.headers["Content-Type"].startswith("text/event-stream")
        assert stream.response.headers["Content-Security-Policy"] == "default-src 'self'"
        event, data = stream.next()
        assert event == "fleet"
        assert {"alpha", "beta"} <= {i["name"] for i in data["instances"]}
    finally:
        stream.close()


def test_tail_follows_new_records_through_its_filters(live: Live) -> None:
    stream = live.web.events("/api/tail?instance=alpha&severity=warning&q=NEEDLE1&last=0")
    try:
        assert stream.response.status == 200
        with Client("127.0.0.1", live.collector.port, "beta") as beta:
            beta.log(Severity.ERR, "needle1 from beta")  # another instance
            assert beta.flush(10)
        with Client("127.0.0.1", live.collector.port, "alpha") as alpha:
            alpha.log(Severity.WARNING, "needle1 kept", fields={"k": "v"}, file="a.py", line=3)
            alpha.log(Severity.INFO, "needle1 too low")  # below warning
            alpha.log(Severity.ERR, "hay only")  # no needle
            assert alpha.flush(10)
            alpha.log(Severity.CRIT, "needle1 end")
            assert alpha.flush(10)
        got = stream.records_until("needle1 end")
    finally:
        stream.close()
    assert [r["message"] for r in got] == ["needle1 kept", "needle1 end"]
    kept = got[0]
    assert kept["instance"] == "alpha" and kept["severity"] == "warning"
    assert kept["origin"] == "app" and kept["kind"] == "log"
    assert kept["fields"] == [["k", "v"]] and kept["file"] == "a.py" and kept["line"] == 3
    assert kept["time"] == format_time(kept["time_ns"]) and kept["seq"] >= 1


def test_tail_merges_the_instances_chosen(live: Live) -> None:
    stream = live.web.events("/api/tail?instance=alpha&instance=beta&q=needle4&last=0")
    try:
        with Client("127.0.0.1", live.collector.port, "beta") as beta:
            beta.log(Severity.INFO, "needle4 beta")
            assert beta.flush(10)
        with Client("127.0.0.1", live.collector.port, "alpha") as alpha:
            alpha.log(Severity.INFO, "needle4 alpha")
            assert alpha.flush(10)
        got = stream.records_until("needle4 alpha")
    finally:
        stream.close()
    assert [(r["instance"], r["message"]) for r in got] == [
        ("beta", "needle4 beta"),
        ("alpha", "needle4 alpha"),
    ]


def test_tail_filters_by_origin(live: Live) -> None:
    syslog = live.web.events("/api/tail?origin=syslog&q=needle2&last=0")
    app = live.web.events("/api/tail?origin=app&q=needle2&last=0")
    try:
        logger(live.syslog_port, "--tcp", "--rfc5424", "-t", "tool", "-p", "user.err",
               "needle2 over syslog")  # fmt: skip
        first = syslog.records_until("needle2 over syslog")
        assert [r["origin"] for r in first] == ["syslog"]
        with Client("127.0.0.1", live.collector.port, "alpha") as alpha:
            alpha.log(Severity.ERR, "needle2 from the app")
            assert alpha.flush(10)
        # The syslog record was stored before this one: the app stream skipped it.
        assert [r["message"] for r in app.records_until("needle2 from the app")] == [
            "needle2 from the app"
        ]
    finally:
        syslog.close()
        app.close()


def test_a_flood_is_cut_to_the_budget_and_counted(live: Live) -> None:
    """More than a browser's share at once: every record is sent or counted skipped."""
    sent = 5 * RATE
    stream = live.web.events("/api/tail?q=flood3&last=0")
    try:
        with Client("127.0.0.1", live.collector.port, "flood", capacity=1 << 24) as client:
            for i in range(sent):
                client.log(Severity.INFO, f"flood3 {i}")
            assert client.flush(30)
        shown = skipped = 0
        while shown + skipped < sent:
            event, data = stream.next()
            if event == "record":
                shown += 1
            else:
                assert event == "skipped", event
                skipped += data["count"]
    finally:
        stream.close()
    assert shown + skipped == sent
    assert skipped > 0 and shown >= RATE  # at least one second's share got through


def test_metrics_route_serves_the_exposition(live: Live) -> None:
    """/metrics over HTTP: Prometheus' text format, parsed by its own parser, with the
    records ``ls`` counts for alpha."""
    from prometheus_client.parser import text_string_to_metric_families

    answer = live.web.request("/metrics")
    assert answer.status == 200, answer.body
    assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(answer.body.decode())
        for s in family.samples
    }
    assert samples["umonitor_collector_up", frozenset()] == 1
    stored = sum(
        value
        for (name, labels), value in samples.items()
        if name == "umonitor_records_stored_total" and ("instance", "alpha") in labels
    )
    assert stored == ls_rows(live.collector.data)["alpha"]["records"] > 0


def test_tail_starts_with_the_last_records(live: Live) -> None:
    stream = live.web.events("/api/tail?instance=beta&last=3&q=n%3D")
    try:
        got = [stream.next() for _ in range(3)]
    finally:
        stream.close()
    assert [e for e, _ in got] == ["record"] * 3
    assert [d["message"] for _, d in got] == ["n=14", "n=15", "n=16"]  # oldest first


def test_rate_adds_up_to_the_counts(live: Live) -> None:
    rate = live.web.get("/api/instances/beta/rate?since=1d&step=60")
    assert rate["step_s"] >= 60 and rate["points"] <= 600
    assert all(len(v) == rate["points"] for v in rate["series"].values())
    ls = ls_rows(live.collector.data)["beta"]
    assert {k: sum(v) for k, v in rate["series"].items()} == ls["counts"]
    assert rate["total"] == ls["records"] >= 16 and rate["partial"] is False


def _level_while_polling(web: Web, client: Client, name: str, body: Any, **kw: Any) -> Answer:
    """POST a level change while the guest answers (its client polls in this thread)."""
    result: list[Answer] = []
    thread = threading.Thread(
        target=lambda: result.append(web.post(f"/api/instances/{name}/level", body, **kw))
    )
    thread.start()
    while thread.is_alive():
        client.poll()
        time.sleep(0.005)
    thread.join()
    return result[0]


def test_level_change_is_acknowledged_by_the_guest(live: Live) -> None:
    with Client("127.0.0.1", live.collector.port, "lev") as client:
        client.log(Severity.INFO, "hello")
        assert client.flush(10)
        wait_for(lambda: ls_rows(live.collector.data).get("lev", {}).get("connected"),
                 what="lev connected")  # fmt: skip
        refused = _level_while_polling(
            live.web, client, "lev", {"level": "err"}, headers={"X-Umonitor": ""}
        )
        assert refused.status == 403 and "X-Umonitor" in refused.json()["error"]
        assert client.session.level == Severity.DEBUG  # untouched
        answer = _level_while_polling(live.web, client, "lev", {"level": "err"})
        assert answer.status == 200, answer.body
        assert answer.json() == {"level": "err", "was": "debug", "confirmed": True}
        assert client.session.level == Severity.ERR
        bad = _level_while_polling(live.web, client, "lev", {"level": "loud"})
        assert bad.status == 400 and "unknown level 'loud'" in bad.json()["error"]
    # Gone: the collector says so, in its sentence.
    wait_for(lambda: not ls_rows(live.collector.data)["lev"]["connected"], what="lev gone")
    gone = live.web.post("/api/instances/lev/level", {"level": "info"})
    assert gone.status == 409 and "not connected" in gone.json()["error"]


def test_stop_and_restart_without_a_fleet(live: Live) -> None:
    for action in ("stop", "restart"):
        answer = live.web.post(f"/api/instances/alpha/{action}")
        assert answer.status == 503
        assert answer.json()["error"].startswith("no fleet is running on ")


# -- a data directory written by the store, no collector ---------------------------

BASE_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
SECOND = 1_000_000_000


def _time_of(i: int) -> int:
    """Records 10, 11 and 12 share a time: a page must not cut through them."""
    return BASE_NS + (10 if i in (11, 12) else i) * SECOND


def _message(i: int) -> str:
    return f"rec-{i}" + (" Special" if i % 7 == 0 else "")


CRASH = "crash-20260101T000200.000000Z.json"
FAILED = "start-failure-20260101T000100.000000Z.json"


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    data = tmp_path_factory.mktemp("written") / "data"
    store = Store(data)
    log = store.log("written")
    store.begin_boot(log, "b0", "test", "10.0.0.9", "written")
    records = [Record(i + 1, Severity(i % 8), _message(i), wall_ns=_time_of(i)) for i in range(30)]
    store.add_records(log, "b0", records, Origin.APP, BASE_NS)
    console = store.log("written", layout.CONSOLE_LOG)
    store.begin_boot(console, "c0", "console", "", "written")
    lines = [
        Record(i + 1, Severity.INFO, f"console line {i}", wall_ns=BASE_NS + i * SECOND)
        for i in range(5)
    ]
    store.add_records(console, "c0", lines, Origin.CONSOLE, BASE_NS)
    report = {
        "instance": "written",
        "kind": "crash",
        "time": "2026-01-01T00:02:00.000000Z",
        "reason": "guest panicked",
        "fault": {"reason": "page fault", "address": "0x0", "pc": "0x401000"},
        "backtrace": [{"function": "boom", "file": "/src/app.c", "line": 12}],
    }
    store.write_report("written", CRASH, json.dumps(report))
    failed = {"instance": "written", "kind": "start-failure", "time": "2026-01-01T00:01:00Z",
              "reason": "QEMU exited at once"}  # fmt: skip
    store.write_report("written", FAILED, json.dumps(failed))
    store.write_report("written", "notes.txt", "not a report")
    store.commit()
    store.close()
    web = start_web(data)
    try:
        yield web
    finally:
        assert web.stop() == 0


def _all_pages(web: Web, query: str, limit: int) -> tuple[list[str], int]:
    seen: list[str] = []
    pages = 0
    before = ""
    while True:
        page = web.get(f"/api/instances/written/records?limit={limit}&{query}{before}")
        pages += 1
        times = {r["time_ns"] for r in page["records"]}
        assert 0 < len(page["records"]) <= limit or len(times) == 1  # one run of a time
        seen += [r["message"] for r in page["records"]]
        if not page["more"]:
            return seen, pages
        before = f"&before_ns={page['records'][-1]['time_ns']}"


def test_records_page_back_without_gaps_or_repeats(written: Web) -> None:
    every = [_message(i) for i in range(30)]
    newest_first = list(reversed(every))
    for limit in (1, 3, 4, 1000):
        seen, _ = _all_pages(written, "origin=app", limit)
        assert seen == newest_first, limit
    assert _all_pages(written, "origin=app", 1000)[1] == 1


def test_records_search_and_time_range(written: Web) -> None:
    q = urllib.parse.urlencode(
        {"since": format_time(_time_of(5)), "until": format_time(_time_of(9))}
    )
    page = written.get(f"/api/instances/written/records?{q}")
    assert [r["message"] for r in page["records"]] == [_message(i) for i in (9, 8, 7, 6, 5)]
    assert page["more"] is False
    found = written.get("/api/instances/written/records?q=sPeCiAl")["records"]
    assert [r["message"] for r in found] == [_message(i) for i in (28, 21, 14, 7, 0)]
    worse = written.get("/api/instances/written/records?severity=err&limit=1000")["records"]
    assert sorted(r["message"] for r in worse) == sorted(
        _message(i) for i in range(30) if i % 8 <= 3
    )
    console = written.get("/api/instances/written/records?origin=console")["records"]
    assert [r["message"] for r in console] == [f"console line {i}" for i in (4, 3, 2, 1, 0)]
    bad = written.request("/api/instances/written/records?since=whenever")
    assert bad.status == 400 and "cannot read the time" in bad.json()["error"]
    assert written.request("/api/instances/written/records?limit=1001").status == 400


def test_rate_counts_each_step(written: Web) -> None:
    q = urllib.parse.urlencode(
        {"since": format_time(BASE_NS), "until": format_time(BASE_NS + 30 * SECOND), "step": 1}
    )
    rate = written.get(f"/api/instances/written/rate?{q}&origin=app")
    assert rate["start_ns"] == BASE_NS and rate["step_s"] == 1 and rate["points"] == 30
    want = {label: [0] * 30 for label in rate["series"]}
    for i in range(30):
        want[Severity(i % 8).label][(_time_of(i) - BASE_NS) // SECOND] += 1
    assert rate["series"] == want and rate["total"] == 30
    wide = written.get(f"/api/instances/written/rate?{q.replace('step=1', 'step=10')}&origin=app")
    assert wide["points"] == 3
    assert [sum(v[p] for v in wide["series"].values()) for p in range(3)] == [10, 10, 10]


def test_console_lines(written: Web) -> None:
    lines = written.get("/api/instances/written/console?lines=3")["lines"]
    assert [line["message"] for line in lines] == ["console line 2", "console line 3",
                                                   "console line 4"]  # fmt: skip
    assert lines[0]["time"] == format_time(BASE_NS + 2 * SECOND)


def test_crash_reports_are_listed_and_read(written: Web) -> None:
    listed = written.get("/api/instances/written/crashes")["crashes"]
    assert [c["file"] for c in listed] == [CRASH, FAILED]  # newest first, nothing else
    crash, failed = listed
    assert crash["kind"] == "crash" and crash["reason"] == "guest panicked"
    assert "page fault" in crash["summary"] and crash["time"] == "2026-01-01T00:02:00.000000Z"
    assert failed["kind"] == "start-failure" and failed["summary"] == "QEMU exited at once"
    report = written.get(f"/api/instances/written/crashes/{CRASH}")
    assert report["backtrace"] == [{"function": "boom", "file": "/src/app.c", "line": 12}]
    for name in ("notes.txt", "crash-x.json", "..%2F..%2Findex.sqlite"):
        assert written.request(f"/api/instances/written/crashes/{name}").status == 404
    assert written.get("/api/fleet")["instances"][0]["crashes"] == 2


def test_without_a_collector(written: Web) -> None:
    fleet = written.get("/api/fleet")
    assert fleet["collector"]["running"] is False and fleet["fleet"] is False
    assert [i["state"] for i in fleet["instances"]] == ["disconnected"]
    level = written.post("/api/instances/written/level", {"level": "info"})
    assert level.status == 503 and "no collector is running" in level.json()["error"]
    stop = written.post("/api/instances/written/stop")
    assert stop.status == 503 and stop.json()["error"].startswith("no fleet is running on ")


@pytest.mark.parametrize(
    "path",
    [
        "/api/instances/nobody/records",
        "/api/instances/%2E%2E/records",
        "/api/instances/..%2Fwritten/records",
        "/api/instances/Written/console",
        "/api/instances/.hidden/crashes",
        "/api/tail?instance=..",
        "/api/nothing",
    ],
)
def test_bad_names_are_404(written: Web, path: str) -> None:
    answer = written.request(path)
    assert answer.status == 404
    assert isinstance(answer.json()["error"], str)
    assert all(answer.headers[k] == v for k, v in SECURITY.items())


def test_without_a_token_only_loopback_names_are_answered(written: Web) -> None:
    """A page whose name was re-pointed to 127.0.0.1 (DNS rebinding) reads nothing."""

    def status(host: str) -> int:
        conn = http.client.HTTPConnection(written.host, written.port, timeout=60)
        try:
            conn.request("GET", "/api/fleet", headers={"Host": host})
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()

    for host in (f"127.0.0.1:{written.port}", f"localhost:{written.port}", "[::1]", "127.0.0.1"):
        assert status(host) == 200, host
    for host in ("evil.example", f"evil.example:{written.port}", "10.0.0.1", "[::]"):
        assert status(host) == 403, host


def test_every_answer_carries_the_security_headers(written: Web) -> None:
    answers = [
        written.request("/api/fleet"),
        written.request("/api/instances/written/records"),
        written.request("/api/instances/written/level", method="POST"),  # 403
        written.request("/api/fleet?x=" + "a" * 5000),  # 414
        written.post("/api/instances/written/level", {"level": "x" * 5000}),  # 413
        written.post("/api/instances/written/level", [1]),  # 400: not an object
        written.request("/api/instances/written/level"),  # 405: GET
    ]
    assert [a.status for a in answers] == [200, 200, 403, 414, 413, 400, 405]
    for answer in answers:
        assert all(answer.headers[k] == v for k, v in SECURITY.items()), answer.headers
        assert answer.headers["Content-Type"].startswith("application/json")


# -- starting, access, stopping ------------------------------------------------------


@pytest.fixture(scope="module")
def empty_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("empty") / "data"
    Store(data).close()
    return data


def test_public_address_without_a_token_is_refused(empty_data: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "UMONITOR_WEB_TOKEN"}
    out = subprocess.run(
        [sys.executable, "-m", "umonitor", "web", "--listen", "0.0.0.0:0", "--data",
         str(empty_data)], capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert "needs a token" in one_sentence(out)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--listen", "nonsense"], "cannot read --listen"),
        (["--token-file", "/nonexistent/token"], "cannot read the token file"),
        (["--data", "/nonexistent/data"], "no umonitor data in /nonexistent/data"),
    ],
)
def test_mistakes_are_one_sentence(empty_data: Path, args: list[str], words: str) -> None:
    out = umonitor("web", "--data", str(empty_data), *args)
    assert words in one_sentence(out)


def test_a_port_in_use_is_one_sentence(empty_data: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = umonitor("web", "--data", str(empty_data), "--listen", f"127.0.0.1:{port}")
    assert f"port {port} on 127.0.0.1 is already in use" in one_sentence(out)


def test_a_token_is_required_once_configured(empty_data: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\nsecond line ignored\n")
    web = start_web(empty_data, "--token-file", str(token_file))
    try:
        assert web.request("/api/fleet").status == 401
        assert web.request("/api/fleet").json()["error"]
        wrong = web.request("/api/fleet", headers={"Authorization": "Bearer s3cret-tokeN"})
        assert wrong.status == 401
        right = web.request("/api/fleet", headers={"Authorization": "Bearer s3cret-token"})
        assert right.status == 200 and right.json()["instances"] == []
        page = web.request("/")
        assert page.status == 401 and b"/?token=TOKEN" in page.body
        assert page.headers["Content-Security-Policy"] == "default-src 'self'"
        assert web.request("/?token=nope").status == 401
        opened = web.request("/?token=s3cret-token")
        assert opened.status == 302 and opened.headers["Location"] == "/"
        cookie = opened.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        assert "s3cret-token" not in cookie
        value = cookie.split(";", 1)[0]
        assert web.request("/api/fleet", headers={"Cookie": value}).status == 200
        assert web.request("/api/fleet", headers={"Cookie": "umon_token=forged"}).status == 401
        stream = web.events("/api/fleet/events", headers={"Cookie": value})
        try:
            assert stream.next()[0] == "fleet"
        finally:
            stream.close()
    finally:
        assert web.stop() == 0


def test_a_public_address_with_a_token_from_the_environment(empty_data: Path) -> None:
    web = start_web(empty_data, listen="0.0.0.0:0", env={"UMONITOR_WEB_TOKEN": "from-env"})
    try:
        assert web.url.startswith("http://0.0.0.0:")
        assert web.request("/api/fleet").status == 401
        ok = web.request("/api/fleet", headers={"Authorization": "Bearer from-env"})
        assert ok.status == 200
    finally:
        assert web.stop() == 0


def test_event_streams_are_bounded(empty_data: Path) -> None:
    from umonitor.web.events import MAX_STREAMS

    web = start_web(empty_data)
    streams = [web.events("/api/fleet/events") for _ in range(MAX_STREAMS)]
    try:
        assert all(s.next()[0] == "fleet" for s in streams)
        for path in ("/api/fleet/events", "/api/tail"):
            refused = web.request(path)
            assert refused.status == 503 and "streams are open already" in refused.json()["error"]
        assert web.request("/api/fleet").status == 200  # the rest still answers
    finally:
        for s in streams:
            s.close()
        assert web.stop() == 0


def test_sigterm_ends_open_streams_and_exits_cleanly(empty_data: Path) -> None:
    web = start_web(empty_data)
    stream = web.events("/api/tail?last=0")
    fleet = web.events("/api/fleet/events")
    try:
        assert stream.response.status == 200
        assert fleet.next()[0] == "fleet"
        assert web.stop() == 0
        assert stream.response.read() == b""  # ended, nothing more
    finally:
        stream.close()
        fleet.close()
    assert web.stderr == ""


# -- a fleet (its pieces real, its instances registered but not booted) -------------


def test_the_fleet_through_its_control_socket(tmp_path: Path) -> None:
    """With a fleet, /api/fleet merges ``ps`` into ``ls``, and stop goes to the fleet."""
    root = layout.prepare_data_dir(tmp_path / "data")

    async def main() -> None:
        collector, port, supervisor, control = await unbooted_fleet(root, tmp_path)
        client = AsyncClient("127.0.0.1", port, "fl-1")
        await client.start()
        web = await asyncio.to_thread(start_web, root)
        try:
            client.log(Severity.WARNING, "hello from fl-1")
            assert await client.flush(10)

            async def fl_1() -> dict[str, Any]:
                while True:
                    got = await asyncio.to_thread(web.get, "/api/fleet")
                    rows = {i["name"]: i for i in got["instances"]}
                    if rows.get("fl-1", {}).get("records") == 1 and rows["fl-1"]["connected"]:
                        assert got["fleet"] is True and set(rows) == {"fl-1", "fl-2"}
                        return rows
                    await asyncio.sleep(0.1)

            rows = await asyncio.wait_for(fl_1(), 30)
            assert rows["fl-1"]["state"] == "stopped" and rows["fl-1"]["fleet"] is True
            assert rows["fl-1"]["address"] == "10.77.0.2" and rows["fl-2"]["address"] == "10.77.0.3"
            assert rows["fl-1"]["counts"]["warning"] == 1 and rows["fl-1"]["restarts"] == 0
            assert rows["fl-2"]["records"] == 0 and rows["fl-2"]["connected"] is False
            level = await asyncio.to_thread(web.post, "/api/instances/fl-1/level", {"level": "err"})
            assert level.status == 200 and level.json()["level"] == "err", level.body
            assert client.session.level == Severity.ERR
            stop = await asyncio.to_thread(web.post, "/api/instances/fl-2/stop")
            assert stop.status == 200 and stop.json() == {}
            assert supervisor.instances["fl-2"].wanted is False
            unknown = await asyncio.to_thread(web.post, "/api/instances/fl-9/stop")
            assert unknown.status == 404 and "fl-9" in unknown.json()["error"]
            bare = await asyncio.to_thread(
                web.request, "/api/instances/fl-2/restart", method="POST"
            )
            assert bare.status == 403
        finally:
            assert await asyncio.to_thread(web.stop) == 0
            await client.close()
            stop_control(root, control)
            await collector.shutdown()

    asyncio.run(main())
