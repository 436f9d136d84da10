"""The dashboard on a real fleet: QEMU guests on a bridge, seen in headless Chromium.

The Linux demo guest and the guest that crashes on purpose run under ``up -d`` with
the default accelerator, with a ``[web]`` table: ``up`` serves the dashboard itself
(and ``down`` stops it). In the
browser: both instances on the fleet page, a syslog record sent through the fleet
appearing in the live tail and filtered there, the crash guest's report with its
backtrace, and a level change the demo guest acknowledges. The fleet and live tail
pages are saved as screenshots (build/screenshots/) on the way. ``down`` then
leaves nothing behind.
"""

from __future__ import annotations

import socket
import subprocess
import urllib.request
from pathlib import Path

from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from tests.browser_support import (
    css,
    load,
    make_driver,
    page_errors,
    save_screenshot,
    text_of,
    wait_until,
)
from tests.integration.conftest import free_port, wait_for
from tests.vm.test_fleet import fleet_config, nothing_left, ps, qemu_pids, records
from tests.vm.test_unikernels import CRASHING, down, instance, up
from umonitor.image.linux import Image
from umonitor.store.names import sanitize_instance_name

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "build" / "screenshots"
SHOT_LIMIT = 150 * 1024
HOST = sanitize_instance_name(socket.gethostname())  # syslog from the host is filed here


def syslog(host: str, port: int, message: str) -> None:
    sent = subprocess.run(
        ["logger", "--server", host, "--port", str(port), "--tcp", "--rfc5424",
         "-t", "dashboard", "-p", "user.warning", message],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr


def tail_messages(d: WebDriver) -> list[str]:
    rows = d.execute_script(
        "return [...document.querySelectorAll('#tail-rows tr[data-key] .message')]"
        ".map(c => c.textContent)"
    )
    assert isinstance(rows, list)
    return [str(r) for r in rows]


def following(d: WebDriver) -> bool:
    return d.find_element(By.ID, "tail-status").get_attribute("data-state") == "following"


def screenshot(d: WebDriver, name: str) -> None:
    """Save the viewport (1280x800) as build/screenshots/NAME.png, small enough to keep."""
    size = save_screenshot(d, SHOTS / f"{name}.png")
    assert size < SHOT_LIMIT, f"{name}.png is {size} bytes"


def fleet_row(d: WebDriver, name: str, col: str) -> str:
    cells = css(d, f'#fleet-rows tr[data-instance="{name}"] [data-col="{col}"]')
    return cells[0].text if cells else ""


def serving(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def test_dashboard_on_a_fleet(
    tmp_path: Path, images: dict[str, Image], subnet: tuple[str, str]
) -> None:
    demo, crash = images["demo"], images["crash"]
    bridge, address = subnet
    data = tmp_path / "data"
    web_port = free_port()
    url = f"http://127.0.0.1:{web_port}/"
    config = fleet_config(
        tmp_path / "umonitor.toml",
        subnet,
        instance("demo", "linux", demo.pvh_kernel or demo.kernel, initrd=str(demo.initrd),
                 args="umon.rate=2")
        + instance("crashy", "linux", crash.pvh_kernel or crash.kernel, initrd=str(crash.initrd),
                   args="umon.count=5 umon.rate=5", **CRASHING)
        + f'\n[web]\nlisten = "127.0.0.1:{web_port}"\n',
    )  # fmt: skip
    syslog_port = int(config.read_text().split("[syslog]\nport = ")[1].split()[0])
    host_address = address.split("/")[0]
    before = qemu_pids()
    up(config, data)
    taps = {row["tap"] for row in ps(data).values()}
    driver: WebDriver | None = None
    try:
        wait_for(lambda: len(records(data, "demo", "app")) >= 5, timeout=300,
                 what="the demo guest's records")  # fmt: skip
        wait_for(lambda: ps(data)["crashy"]["restarts"] >= 1, timeout=300, what="a restart")
        wait_for(lambda: serving(url), timeout=60, what="up's dashboard")
        driver = make_driver()
        d = driver

        # The fleet page: both guests, the crash guest's restarts and crash.
        load(d, url + "#/")
        wait_until(d, lambda d: fleet_row(d, "demo", "state") == "running", "demo running")
        wait_until(d, lambda d: int(fleet_row(d, "crashy", "crashes") or 0) >= 1,
                   "crashy's crash")  # fmt: skip
        assert int(fleet_row(d, "crashy", "restarts")) >= 1
        assert fleet_row(d, "crashy", "last-exit").startswith("crashed")
        wait_until(d, lambda d: int(fleet_row(d, "demo", "records") or 0) >= 5, "demo's records")
        wait_until(d, lambda d: fleet_row(d, "demo", "level") != "–", "demo's level")
        assert fleet_row(d, "demo", "address").startswith(address.rsplit(".", 1)[0])
        wait_until(d, lambda d: float(fleet_row(d, "demo", "rate").removesuffix("/s") or 0) > 0,
                   "demo's records per second")  # fmt: skip
        screenshot(d, "fleet")

        # The live tail: the demo's records stream in; one sent through the fleet's
        # syslog listener now appears.
        load(d, url + "#/tail")
        wait_until(d, following, "the live tail")
        wait_until(d, lambda d: len(tail_messages(d)) >= 5, "records in the tail")
        syslog(host_address, syslog_port, "dashboard probe through the fleet")
        wait_until(d, lambda d: "dashboard probe through the fleet" in tail_messages(d),
                   "the syslog record in the tail", timeout=60)  # fmt: skip
        screenshot(d, "tail")
        # Filtered by text: only the probes, a new one arriving.
        d.find_element(By.ID, "tail-q").send_keys("dashboard probe")
        wait_until(d, lambda d: "q=dashboard" in d.current_url, "the text filter")
        wait_until(d, following, "the filtered tail")
        syslog(host_address, syslog_port, "dashboard probe, second")
        wait_until(d, lambda d: "dashboard probe, second" in tail_messages(d),
                   "the second probe", timeout=60)  # fmt: skip
        assert set(tail_messages(d)) == {
            "dashboard probe through the fleet",
            "dashboard probe, second",
        }

        # The crash guest's report, with the backtrace the C library's line gave.
        load(d, url + "#/instance/crashy")
        opener = wait_until(d, lambda d: css(d, "#crash-list button[data-file]"), "a crash report")
        opener[-1].click()  # the oldest: the first crash
        wait_until(d, lambda d: d.find_element(By.ID, "crash-detail").is_displayed(), "the report")
        assert d.find_element(By.ID, "crash-reason").text
        frames = [row.text for row in css(d, "#crash-backtrace tr")]
        assert frames and "write_through_null" in frames[0], frames
        assert any("crash_app.c" in frame for frame in frames)
        assert "segmentation fault" in d.find_element(By.ID, "crash-fault").text

        # The demo guest's level: asked from the page, acknowledged by the guest.
        load(d, url + "#/instance/demo")
        wait_until(d, lambda d: d.find_element(By.ID, "inst-name").text == "demo", "demo's page")
        chart = d.find_element(By.ID, "rate-chart")
        wait_until(d, lambda d: float(chart.get_attribute("data-total") or 0) > 0, "its chart")
        Select(d.find_element(By.ID, "level-select")).select_by_value("warning")
        d.find_element(By.ID, "level-apply").click()
        result = d.find_element(By.ID, "level-result")
        wait_until(d, lambda d: result.get_attribute("data-ok"), "the level's answer", timeout=60)
        assert result.get_attribute("data-ok") == "true", result.text
        assert result.get_attribute("data-level") == "warning"
        wait_for(lambda: ps(data)["demo"]["level"] == "warning", what="ps to show the level")

        # Stop, then restart, from the page: the fleet does it and the page follows.
        summary_state = '#inst-summary [data-key="state"]'
        outcome = d.find_element(By.ID, "action-result")
        d.find_element(By.ID, "action-stop").click()
        wait_until(d, lambda d: outcome.get_attribute("data-ok"), "the stop's answer", timeout=120)
        assert outcome.get_attribute("data-ok") == "true", outcome.text
        assert ps(data)["demo"]["state"] == "stopped"
        wait_until(d, lambda d: text_of(d, summary_state).endswith("stopped"), "stopped")
        d.find_element(By.ID, "action-restart").click()
        wait_until(d, lambda d: outcome.text == "demo restarted", "the restart", timeout=120)
        assert outcome.get_attribute("data-ok") == "true"
        wait_until(d, lambda d: text_of(d, summary_state).endswith("running"), "running again",
                   timeout=300)  # fmt: skip
        assert not page_errors(d)
    finally:
        if driver is not None:
            driver.quit()
        down(data)
    assert not serving(url)
    nothing_left(data, bridge, taps, before)
