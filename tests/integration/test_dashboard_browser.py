"""The dashboard in headless Chromium against a real collector and ``umonitor web``.

No QEMU: the guests are the Python client (one kept connected on a thread of this
process, answering level changes; one that logs and leaves) and util-linux
``logger`` over syslog. A crash report is written into an instance's directory the
way the fleet writes one. Each test loads a view and waits for what it shows.
"""

from __future__ import annotations

import json
import queue
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

from tests.browser_support import (
    Web,
    css,
    load,
    make_driver,
    page_errors,
    start_web,
    text_of,
    wait_until,
)
from tests.integration.conftest import (
    Collector,
    free_port,
    python_guest,
    start_collector,
    wait_for,
)
from umonitor.guest.client import Client
from umonitor.records import Severity
from umonitor.store.names import sanitize_instance_name

HOST = sanitize_instance_name(socket.gethostname())  # where syslog from here is filed
CRASH_FILE = "crash-20261203T190000.000000Z.json"
CRASH_REASON = 'SIGSEGV at 0x10 <img src=x id="injected">'


class Guest(threading.Thread):
    """A Python client kept connected and polled, so that it answers level changes;
    ``say`` queues a record for it to send."""

    def __init__(self, port: int, name: str) -> None:
        super().__init__(daemon=True)
        self.client = Client("127.0.0.1", port, name)
        self.outbox: queue.Queue[tuple[Severity, str, dict[str, str]]] = queue.Queue()
        self.sent = 0
        self.done = threading.Event()

    def say(self, severity: Severity, message: str, **fields: str) -> None:
        self.outbox.put((severity, message, fields))

    def run(self) -> None:
        while not self.done.is_set():
            self.client.poll()
            try:
                severity, message, fields = self.outbox.get(timeout=0.01)
            except queue.Empty:
                continue
            self.client.log(severity, message, fields=fields, file="guest.py", line=7,
                            function="run")  # fmt: skip
            self.sent += 1

    def stop(self) -> None:
        self.done.set()
        self.join(10)
        self.client.close(timeout=5)


@dataclass
class Dashboard:
    collector: Collector
    web: Web
    guest: Guest
    syslog_port: int
    driver: WebDriver

    def open(self, fragment: str) -> None:
        """Load the page afresh at ``fragment``."""
        load(self.driver, self.web.url + fragment)

    def syslog(self, message: str, priority: str = "user.notice") -> None:
        syslog(self.syslog_port, message, priority)


def syslog(port: int, message: str, priority: str = "user.notice") -> None:
    """Send ``message`` with util-linux logger over TCP, RFC 5424."""
    done = subprocess.run(
        ["logger", "--server", "127.0.0.1", "--port", str(port), "--tcp", "--rfc5424",
         "-t", "dash-test", "-p", priority, message],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def write_crash_report(data: Path, name: str) -> None:
    """A report with the keys fleet/crash_report.py and debug/crash_state.py write."""
    report = {
        "instance": name,
        "kind": "crash",
        "time": "2026-12-03T19:00:00.000000Z",
        "reason": CRASH_REASON,
        "exit_status": 0,
        "accel": "tcg",
        "qemu_shutdown_reason": "guest-panic",
        "qemu_stderr": "",
        "restarts_so_far": 0,
        "console": ["umon-init: starting /app", "umon-crash: signal 11"],
        "app": ["1764788400000000000 3 app 5 <b>last words</b>"],
        "fault": {"reason": "SIGSEGV", "pc": "0x401136", "function": "crash_here",
                  "file": "crash_app.c", "line": 21},
        "registers": {"rip": "0x401136", "rsp": "0x7ffc0000"},
        "registers_lost": [],
        "backtrace": [
            {"address": "0x401136", "function": "crash_here", "file": "crash_app.c", "line": 21},
            {"address": "0x401180", "function": "main", "file": "crash_app.c", "line": 40},
        ],
        "handler_frames": [],
        "backtrace_source": "guest-library",
        "capture_errors": [],
    }  # fmt: skip
    directory = data / "instances" / name / "crashes"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CRASH_FILE).write_text(json.dumps(report, indent=1))


def row_texts(driver: WebDriver, selector: str) -> list[str]:
    return [row.text for row in css(driver, selector)]


@pytest.fixture(scope="module")
def dash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    root = tmp_path_factory.mktemp("dash")
    syslog_port = free_port()
    collector = start_collector(root / "data", "--syslog-tcp", f"127.0.0.1:{syslog_port}")
    guest = Guest(collector.port, "demo-1")
    guest.start()
    web: Web | None = None
    driver: WebDriver | None = None
    try:
        for n in range(8):
            guest.say(Severity(n), f"startup record {n}", n=str(n))
        guest.say(Severity.NOTICE, "a needle in the haystack 42")
        leaver = python_guest(collector.port, "demo-2", 16)  # two of each severity
        out, err = leaver.communicate(timeout=60)
        assert leaver.returncode == 0, out + err
        bulk = python_guest(collector.port, "bulk", 250)  # more than a page of records
        out, err = bulk.communicate(timeout=60)
        assert bulk.returncode == 0, out + err
        syslog(syslog_port, "syslog before the page loads")
        wait_for(lambda: len(collector.records("demo-1")) == 9, what="demo-1's first records")
        wait_for(lambda: len(collector.records(HOST)) == 1, what="the first syslog record")
        write_crash_report(collector.data, "demo-1")
        web = start_web(collector.data)
        driver = make_driver()
        yield Dashboard(collector, web, guest, syslog_port, driver)
        errors = page_errors(driver)
        assert not errors, errors
    finally:
        if driver is not None:
            driver.quit()
        if web is not None:
            assert web.stop() in (0, -15), "".join(web.stderr)
        guest.stop()
        assert collector.stop() == 0


def test_fleet_page_lists_the_instances_and_follows_their_counts(dash: Dashboard) -> None:
    d = dash.driver
    dash.open("#/")
    wait_until(d, lambda d: css(d, '#fleet-rows tr[data-instance="demo-2"]'), "demo-2's row")
    wait_until(d, lambda d: css(d, f'#fleet-rows tr[data-instance="{HOST}"]'), "syslog's row")
    demo2 = css(d, '#fleet-rows tr[data-instance="demo-2"]')[0]
    assert demo2.find_element(By.CSS_SELECTOR, '[data-col="records"]').text == "16"
    for sev in ("emerg", "err", "info", "debug"):
        count = demo2.find_element(By.CSS_SELECTOR, f'[data-col="counts"] [data-sev="{sev}"]')
        assert count.get_attribute("data-count") == "2", sev
    assert demo2.get_attribute("data-state") == "disconnected"
    demo1 = css(d, '#fleet-rows tr[data-instance="demo-1"]')[0]
    assert demo1.get_attribute("data-state") == "connected"
    assert demo1.get_attribute("data-connected") == "true"
    pid = css(d, '#collector [data-key="pid"]')
    assert pid and pid[0].text == str(dash.collector.proc.pid)

    # Live: records sent now raise the row's counts without reloading the page.
    before = int(demo1.find_element(By.CSS_SELECTOR, '[data-col="records"]').text)
    for n in range(3):
        dash.guest.say(Severity.WARNING, f"fleet page live {n}")

    def records_shown(d: WebDriver) -> bool:
        row = css(d, '#fleet-rows tr[data-instance="demo-1"] [data-col="records"]')
        return bool(row) and row[0].text == str(before + 3)

    wait_until(d, records_shown, "demo-1's records to rise by 3")
    # From the keyboard: Enter on an instance's link opens its page.
    link = css(d, '#fleet-rows tr[data-instance="demo-1"] a')[0]
    link.send_keys(Keys.ENTER)
    wait_until(d, lambda d: d.find_element(By.ID, "view-instance").is_displayed(), "its page")
    assert d.find_element(By.ID, "inst-name").text == "demo-1"


def tail_rows(d: WebDriver) -> list[dict[str, str]]:
    """The live tail's rows, read in one go (rows come and go while it runs)."""
    rows = d.execute_script(
        "return [...document.querySelectorAll('#tail-rows tr[data-key]')].map(r => ({"
        "instance: r.dataset.instance, severity: r.dataset.severity,"
        "origin: r.dataset.origin, message: r.querySelector('.message').textContent}))"
    )
    assert isinstance(rows, list)
    return rows


def shows(message: str) -> Callable[[WebDriver], bool]:
    def check(d: WebDriver) -> bool:
        return any(r["message"].startswith(message) for r in tail_rows(d))

    return check


def following(d: WebDriver) -> bool:
    return d.find_element(By.ID, "tail-status").get_attribute("data-state") == "following"


def test_live_tail_follows_filters_and_pauses(dash: Dashboard) -> None:
    d = dash.driver
    dash.open("#/tail")
    wait_until(d, following, "the tail to follow")
    wait_until(d, shows("syslog before the page loads"), "the backlog")

    # Sent while the page is open: an app record and a syslog one appear.
    dash.guest.say(Severity.WARNING, "probe alpha warning")
    wait_until(d, shows("probe alpha warning"), "a record sent during the test")
    dash.syslog("probe syslog beta", "user.err")
    wait_until(d, shows("probe syslog beta"), "a syslog record sent during the test")
    beta = next(r for r in tail_rows(d) if r["message"] == "probe syslog beta")
    assert beta["origin"] == "syslog" and beta["instance"] == HOST and beta["severity"] == "err"

    # Minimum severity err: the warning goes, the err stays, a new err arrives.
    Select(d.find_element(By.ID, "tail-severity")).select_by_value("err")
    wait_until(d, following, "the filtered tail")
    dash.guest.say(Severity.CRIT, "probe gamma crit")
    wait_until(d, shows("probe gamma crit"), "a record at crit")
    rows = tail_rows(d)
    assert not any(r["message"].startswith("probe alpha") for r in rows)
    assert any(r["message"] == "probe syslog beta" for r in rows)
    assert {r["severity"] for r in rows} <= {"emerg", "alert", "crit", "err"}
    assert "severity=err" in d.current_url

    # Text: only messages with "alpha", whatever their case.
    Select(d.find_element(By.ID, "tail-severity")).select_by_value("debug")
    d.find_element(By.ID, "tail-q").send_keys("ALPHA")
    wait_until(d, lambda d: "q=ALPHA" in d.current_url, "the text filter")
    wait_until(d, following, "the tail filtered by text")
    dash.guest.say(Severity.INFO, "probe alpha again")
    wait_until(d, shows("probe alpha again"), "a record with the text")
    rows = tail_rows(d)
    assert {r["message"] for r in rows} == {"probe alpha warning", "probe alpha again"}

    # Origin: syslog only.
    d.find_element(By.ID, "tail-q").clear()
    d.find_element(By.ID, "tail-q").send_keys(Keys.BACKSPACE)  # an input event for clear()
    d.find_element(By.ID, "tail-origin-app").click()
    d.find_element(By.ID, "tail-origin-console").click()
    wait_until(d, lambda d: "q=" not in d.current_url and "origin=syslog" in d.current_url,
               "the origin filter")  # fmt: skip
    wait_until(d, following, "the tail filtered by origin")
    dash.syslog("probe syslog delta")
    wait_until(d, shows("probe syslog delta"), "a syslog record")
    rows = tail_rows(d)
    assert {r["origin"] for r in rows} == {"syslog"}
    assert any(r["message"] == "probe syslog beta" for r in rows)

    # Pause holds what arrives and counts it; resume shows it.
    dash.open("#/tail?instance=demo-1")
    wait_until(d, following, "the tail of demo-1")
    wait_until(d, shows("probe alpha again"), "demo-1's backlog")
    assert {r["instance"] for r in tail_rows(d)} == {"demo-1"}
    box = d.find_element(By.CSS_SELECTOR, '#tail-instances input[data-instance="demo-1"]')
    assert box.is_selected()
    pause = d.find_element(By.ID, "tail-pause")
    pause.click()
    assert pause.get_attribute("aria-pressed") == "true"
    dash.guest.say(Severity.NOTICE, "probe held one")
    dash.guest.say(Severity.NOTICE, "probe held two")
    held = d.find_element(By.ID, "tail-held")
    wait_until(d, lambda d: held.get_attribute("data-count") == "2", "two held records")
    assert "2 new held" in held.text
    assert not shows("probe held")(d)
    pause.send_keys(Keys.ENTER)  # the keyboard resumes
    wait_until(d, shows("probe held two"), "the held records on resume")
    assert pause.get_attribute("aria-pressed") == "false" and held.text == ""
    messages = [r["message"] for r in tail_rows(d)]
    assert messages.index("probe held one") < messages.index("probe held two")

    # A stream the server refuses says why, and is not asked for again and again.
    dash.open("#/tail?instance=no-such-guest")
    status = d.find_element(By.ID, "tail-status")
    wait_until(d, lambda d: status.get_attribute("data-state") == "refused", "the refusal")
    assert "no-such-guest" in status.text


# How many of the canvas' pixels are in one of the chart's severity colours.
COLOURED_PIXELS = """
const c = arguments[0], colours = new Set(Object.values(window.umonChart.COLORS));
const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
const hex = (v) => v.toString(16).padStart(2, '0');
let n = 0;
for (let i = 0; i < px.length; i += 4) {
  if (px[i + 3] === 255 && colours.has('#' + hex(px[i]) + hex(px[i + 1]) + hex(px[i + 2]))) n++;
}
return n;
"""


def test_instance_page_searches_charts_and_opens_a_crash_report(dash: Dashboard) -> None:
    d = dash.driver
    dash.open("#/instance/demo-1")
    status = d.find_element(By.ID, "rec-status")
    wait_until(d, lambda d: status.get_attribute("data-state") == "done", "its records")
    assert int(status.get_attribute("data-count") or 0) >= 9

    d.find_element(By.ID, "rec-q").send_keys("needle")
    d.find_element(By.ID, "rec-q").send_keys(Keys.ENTER)
    wait_until(d, lambda d: status.get_attribute("data-count") == "1", "one record found")
    [row] = css(d, "#rec-rows tr")
    assert "a needle in the haystack 42" in row.text
    assert row.get_attribute("data-severity") == "notice"
    d.find_element(By.ID, "rec-q").send_keys(" that is not there")
    d.find_element(By.ID, "rec-search").click()
    wait_until(d, lambda d: status.text == "no record matches", "an empty search")
    assert css(d, "#rec-rows tr") == []

    # The chart: drawn from the rate answer, with bars in the severities' colours.
    chart = d.find_element(By.ID, "rate-chart")
    wait_until(d, lambda d: float(chart.get_attribute("data-total") or 0) > 0, "the chart")
    assert int(chart.get_attribute("data-points") or 0) > 0
    coloured = d.execute_script(COLOURED_PIXELS, chart)
    assert isinstance(coloured, int) and coloured > 0
    assert css(d, '#rate-legend [data-sev="notice"]')

    # The crash report: listed, opened from the keyboard, backtrace shown as text.
    opener = wait_until(d, lambda d: css(d, f'#crash-list button[data-file="{CRASH_FILE}"]'),
                        "the crash report in the list")[0]  # fmt: skip
    opener.send_keys(Keys.ENTER)
    detail = d.find_element(By.ID, "crash-detail")
    wait_until(d, lambda d: detail.is_displayed(), "the report")
    assert d.find_element(By.ID, "crash-reason").text == CRASH_REASON
    assert css(d, "#injected") == []  # guest text is never markup
    frames = [r.text for r in css(d, "#crash-backtrace tr")]
    assert len(frames) == 2
    assert "crash_here" in frames[0] and "crash_app.c:21" in frames[0]
    assert "main" in frames[1] and "crash_app.c:40" in frames[1]
    assert "SIGSEGV" in d.find_element(By.ID, "crash-fault").text
    extra = d.find_element(By.ID, "crash-extra").get_attribute("textContent") or ""
    assert "umon-crash: signal 11" in extra and "<b>last words</b>" in extra

    # The console section answers (the Python guest has no console: empty, no error).
    console = d.find_element(By.ID, "console-lines")
    wait_until(d, lambda d: console.get_attribute("data-state") == "done", "the console")


def test_level_change_is_acknowledged_by_the_guest(dash: Dashboard) -> None:
    d = dash.driver
    dash.open("#/instance/demo-1")
    wait_until(d, lambda d: d.find_element(By.ID, "view-instance").is_displayed(), "the page")
    Select(d.find_element(By.ID, "level-select")).select_by_value("err")
    d.find_element(By.ID, "level-apply").click()
    result = d.find_element(By.ID, "level-result")
    wait_until(d, lambda d: result.get_attribute("data-ok"), "the level's answer")
    assert result.get_attribute("data-ok") == "true", result.text
    assert result.get_attribute("data-level") == "err"
    assert result.text == "demo-1 acknowledged level err (was debug)"
    assert result.get_attribute("data-confirmed") == "true"
    assert dash.guest.client.session.level == Severity.ERR
    level_shown = '#inst-summary [data-key="level"]'
    wait_until(d, lambda d: text_of(d, level_shown) == "level err", "the level in the summary")
    # No fleet runs these guests: nothing to stop or restart.
    stop, restart = d.find_element(By.ID, "action-stop"), d.find_element(By.ID, "action-restart")
    assert not stop.is_enabled() and not restart.is_enabled()
    assert "does not run this instance" in (stop.get_attribute("title") or "")

    # A guest that left cannot take a level: the server's sentence is shown.
    dash.open("#/instance/demo-2")
    wait_until(d, lambda d: d.find_element(By.ID, "inst-name").text == "demo-2", "demo-2")
    Select(d.find_element(By.ID, "level-select")).select_by_value("debug")
    d.find_element(By.ID, "level-apply").click()
    result = d.find_element(By.ID, "level-result")
    wait_until(d, lambda d: result.get_attribute("data-ok"), "the refusal")
    assert result.get_attribute("data-ok") == "false"
    assert "not connected" in result.text


def test_older_records_come_on_demand(dash: Dashboard) -> None:
    d = dash.driver
    dash.open("#/instance/bulk")
    status = d.find_element(By.ID, "rec-status")
    wait_until(d, lambda d: status.get_attribute("data-state") == "done", "the first page")
    assert status.get_attribute("data-count") == "200"
    older = d.find_element(By.ID, "rec-older")
    assert older.is_displayed()
    first = [r.text for r in css(d, "#rec-rows tr")]
    assert "n=250" in first[0] and "n=51" in first[-1]
    older.click()
    wait_until(d, lambda d: status.get_attribute("data-count") == "250", "the older ones")
    rows = [r.text for r in css(d, "#rec-rows tr")]
    assert rows[:200] == first and "n=1 " in rows[-1] + " "
    assert not older.is_displayed()


def test_a_token_is_asked_for_once_then_kept_in_a_cookie(dash: Dashboard, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-dashboard-token\n")
    web = start_web(dash.collector.data, "--token-file", str(token_file))
    d = make_driver()
    try:
        d.get(web.url)
        body = d.find_element(By.TAG_NAME, "body").text
        assert "token" in body and css(d, "#fleet-rows") == []  # not the dashboard
        d.get(web.url + "?token=wrong")
        assert css(d, "#fleet-rows") == []
        d.get(web.url + "?token=s3cret-dashboard-token")
        wait_until(d, lambda d: css(d, '#fleet-rows tr[data-instance="demo-1"]'), "the fleet")
        assert d.current_url == web.url  # redirected: the token is not left in the address
        cookie = d.get_cookie("umon_token")
        assert cookie is not None and cookie["httpOnly"] is True
        assert "s3cret" not in str(cookie["value"])
        load(d, web.url + "#/tail?instance=demo-1")  # the live tail's stream has it too
        wait_until(d, lambda d: text_of(d, "#tail-status") == "following new records", "a tail")
        assert not page_errors(d)
    finally:
        d.quit()
        web.stop()
