"""The dashboard in a real browser: Debian's headless Chromium driven by Selenium.

Nothing is downloaded while the tests run: Chromium and its driver are the Debian
packages (``chromium``, ``chromium-driver``) and Selenium Manager is told to stay
offline. ``umonitor web`` runs as a subprocess on a free loopback port.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WIDTH, HEIGHT = 1280, 800
WEB_LINE = re.compile(r"^web: (http://[^/\s]+/)$")

T = TypeVar("T")


def make_driver() -> WebDriver:
    """A headless Chromium with a 1280x800 viewport; fails in one sentence when the
    Debian packages are missing."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    assert not missing, (
        f"the dashboard's browser tests need {' and '.join(missing)}: "
        "apt-get install chromium chromium-driver"
    )
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never fetch a browser
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        f"--window-size={WIDTH},{HEIGHT}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    # The window's size includes the browser's frame; the page gets exactly this.
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
    )
    driver.set_page_load_timeout(60)
    return driver


def wait_until(
    driver: WebDriver, condition: Callable[[WebDriver], T], what: str, timeout: float = 30
) -> T:
    """What ``condition`` returns once it is truthy; fails naming ``what``."""
    wait: WebDriverWait[WebDriver] = WebDriverWait(driver, timeout, poll_frequency=0.1)
    return wait.until(condition, message=f"timed out waiting for {what}")


def load(driver: WebDriver, url: str, attempts: int = 3) -> None:
    """Load the dashboard at ``url`` (a fresh page) and wait until its script runs.

    Chromium aborts requests under way when the host's addresses change (other
    tests' bridges and TAP devices come and go): a load that did not start the page
    is tried again.
    """
    for _ in range(attempts):
        driver.get("about:blank")
        driver.get(url)
        try:
            WebDriverWait(driver, 10, poll_frequency=0.1).until(
                lambda d: d.execute_script("return document.body && document.body.dataset.view")
            )
            return
        except TimeoutException:
            continue
    raise AssertionError(f"the dashboard did not start at {url} in {attempts} loads")


def css(driver: WebDriver, selector: str) -> list[WebElement]:
    return driver.find_elements(By.CSS_SELECTOR, selector)


def page_errors(driver: WebDriver) -> list[str]:
    """The page's own errors in the console: scripts that threw, CSP refusals.

    Answers with an error status (a refused level change, say) are logged too, as
    network entries; those are what a test asked for, not errors of the page.
    """
    return [
        str(entry["message"])
        for entry in driver.get_log("browser")  # type: ignore[no-untyped-call]
        if entry["level"] == "SEVERE" and entry.get("source") != "network"
    ]


class Web:
    """``umonitor web`` in a subprocess, with the address it printed.

    Its stdout and stderr are read on threads until it ends, so that it never
    blocks on a full pipe; stderr is kept for failure messages.
    """

    def __init__(self, data: Path, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "umonitor", "web", "--listen", "127.0.0.1:0",
             "--data", str(data), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.stderr: list[str] = []
        self.printed = threading.Event()
        self.url = ""
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout as out:
            for line in out:
                match = WEB_LINE.match(line.strip())
                if match and not self.url:
                    self.url = match.group(1)
                    self.printed.set()
        self.printed.set()  # ended without printing it

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        with self.proc.stderr as err:
            self.stderr.extend(err)

    def stop(self) -> int:
        """SIGTERM, then its exit status; it must end within 30 s."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
            raise AssertionError("umonitor web did not stop within 30 s of SIGTERM") from None
        finally:
            for thread in self._threads:
                thread.join(10)


def start_web(data: Path, *extra: str, timeout: float = 60) -> Web:
    """Start ``umonitor web --listen 127.0.0.1:0 --data DATA`` and wait for its address."""
    web = Web(data, *extra)
    web.printed.wait(timeout)
    if not web.url:
        web.proc.kill()
        web.stop()
        raise AssertionError(f"umonitor web printed no address: {''.join(web.stderr)}")
    return web
