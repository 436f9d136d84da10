"""The dashboard in a real browser: Debian's headless Chromium driven by Selenium.

Nothing is downloaded while the tests run: Chromium and its driver are the Debian
packages (``chromium``, ``chromium-driver``) and Selenium Manager is told to stay
offline. ``umonitor web`` runs as a subprocess on a free loopback port.
"""

from __future__ import annotations

import collections
import os
import re
import struct
import subprocess
import sys
import threading
import zlib
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


def text_of(driver: WebDriver, selector: str) -> str:
    """The text of the first element ``selector`` finds ("" if none), read in one step:
    the page may replace an element between finding it and reading it."""
    text = driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.textContent : ''", selector
    )
    return str(text)


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


def save_screenshot(driver: WebDriver, path: Path) -> int:
    """Save the viewport as an 8-bit palette PNG at ``path``; returns its size in bytes.

    Chromium's PNG is true colour, about twice as large for a page of text. The
    palette takes the page's colours most used first, leaving out those close to one
    already taken (shades of an antialiased edge) until every distinct colour has a
    place, so that a small dot of its own colour keeps it; the rest fills with the
    colours left out. Every other colour becomes the nearest in the palette.
    """
    width, height, rows = _rgb_rows(driver.get_screenshot_as_png())
    counts: collections.Counter[bytes] = collections.Counter()
    for row in rows:
        counts.update(row[i : i + 3] for i in range(0, len(row), 3))

    def distance(a: bytes, b: bytes) -> int:
        return sum((x - y) ** 2 for x, y in zip(a, b, strict=True))

    by_use = [colour for colour, _ in counts.most_common()]
    palette: list[bytes] = []
    for colour in by_use:
        if len(palette) < 255 and all(distance(colour, p) > 3 * 24**2 for p in palette):
            palette.append(colour)
    taken = set(palette)
    palette += [colour for colour in by_use if colour not in taken][: 255 - len(palette)]
    index = {colour: n for n, colour in enumerate(palette)}
    for colour in counts:
        if colour not in index:
            index[colour] = min(range(len(palette)), key=lambda n: distance(palette[n], colour))
    pixels = b"".join(
        b"\0" + bytes(index[row[i : i + 3]] for i in range(0, len(row), 3)) for row in rows
    )

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0))
        + chunk(b"PLTE", b"".join(palette))
        + chunk(b"IDAT", zlib.compress(pixels, 9))
        + chunk(b"IEND", b"")
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return len(png)


def _rgb_rows(png: bytes) -> tuple[int, int, list[bytes]]:
    """The rows of an 8-bit RGB or RGBA PNG (as Chromium writes them), as RGB bytes."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, data, header = 8, b"", b""
    while pos < len(png):
        (size,) = struct.unpack(">I", png[pos : pos + 4])
        kind, body = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + size]
        pos += 12 + size
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            data += body
    width, height, depth, colour_type = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour_type in (2, 6), (depth, colour_type)
    bpp = 3 if colour_type == 2 else 4
    raw = zlib.decompress(data)
    stride = width * bpp
    prev = bytearray(stride)
    rows = []
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up, corner = prev[i], (prev[i - bpp] if i >= bpp else 0)
            if kind == 1:
                line[i] = (line[i] + left) & 255
            elif kind == 2:
                line[i] = (line[i] + up) & 255
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 255
            elif kind == 4:
                guess = left + up - corner
                near = min((abs(guess - left), 0, left), (abs(guess - up), 1, up),
                           (abs(guess - corner), 2, corner))[2]  # fmt: skip
                line[i] = (line[i] + near) & 255
        prev = line
        rows.append(bytes(line) if bpp == 3 else bytes(b for j, b in enumerate(line) if j % 4 != 3))
    return width, height, rows


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
