"""Real collectors, real guests: subprocesses on loopback with a temporary data dir."""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
C_SRC = ROOT / "src" / "umonitor" / "guest" / "c"


@dataclass
class Collector:
    data: Path
    port: int
    proc: subprocess.Popen[str]
    args: list[str] = field(default_factory=list)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=60)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return umonitor(*args, "--data", str(self.data))

    def records(self, name: str) -> list[dict[str, object]]:
        out = self.cli("logs", name, "-o", "json")
        assert out.returncode == 0, out.stderr
        return [json.loads(line) for line in out.stdout.splitlines()]


def umonitor(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "umonitor", *args], capture_output=True, text=True, timeout=timeout
    )


def start_collector(
    data: Path, *extra: str, port: int = 0, env: dict[str, str] | None = None
) -> Collector:
    data.mkdir(parents=True, exist_ok=True)
    err_path = data.parent / f"{data.name}-collector.err"
    seen = err_path.stat().st_size if err_path.exists() else 0  # an earlier run's lines
    with open(err_path, "a") as err:
        proc = subprocess.Popen(
            env={**os.environ, **(env or {})},
            args=[
                sys.executable,
                "-m",
                "umonitor",
                "serve",
                "--data",
                str(data),
                "--listen",
                f"127.0.0.1:{port}",
                *extra,
            ],
            stderr=err,
            text=True,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        # The native listener's line, not syslog's ("syslog+tcp://...").
        matches = re.findall(r"(?<!\+)tcp://127\.0\.0\.1:(\d+)", err_path.read_text()[seen:])
        if matches and (port == 0 or int(matches[-1]) == port):
            return Collector(data, int(matches[-1]), proc, list(extra))
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"collector did not start: {err_path.read_text()}")


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    c = start_collector(tmp_path / "data")
    yield c
    assert c.stop() == 0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, mounted for this test."""
    mount = tmp_path / "data"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def c_programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The C test guests, compiled with the C library for this run."""
    cc = shutil.which("gcc") or shutil.which("cc")
    assert cc, "a C compiler is needed: apt-get install gcc"
    out = tmp_path_factory.mktemp("cbin")
    programs = {}
    sources = {
        "numbered_guest": [ROOT / "tests" / "c" / "numbered_guest.c", C_SRC / "umonitor.c"],
        "legacy_guest": [ROOT / "tests" / "c" / "legacy_guest.c", C_SRC / "umonitor_compat.c"],
        "control_guest": [ROOT / "tests" / "c" / "control_guest.c", C_SRC / "umonitor.c"],
    }
    for name, files in sources.items():
        target = out / name
        subprocess.run(
            [
                cc,
                "-std=c99",
                "-O2",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-pedantic",
                f"-I{C_SRC}",
                "-o",
                str(target),
                *map(str, files),
            ],
            check=True,
        )
        programs[name] = target
    return programs


@pytest.fixture(autouse=True, scope="session")
def _many_files() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))


def wait_for(predicate: object, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def file_seqs(data: Path, name: str) -> list[int]:
    path = data / "instances" / name / "app.log"
    return [
        int(line.split(" ")[3])
        for line in path.read_text().splitlines()
        if not line.startswith("#")
    ]


PY_GUEST = """
import sys
from umonitor.guest.client import Client
from umonitor.records import Severity
host, port, name, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
client = Client(host, port, name)
for i in range(1, count + 1):
    client.log(Severity(i % 8), f"n={i}", fields={"i": i}, file="guest.py", line=i,
               function="main")
ok = client.close(timeout=20)
print(f"acked={client.session.acked}")
sys.exit(0 if ok else 1)
"""


def python_guest(port: int, name: str, count: int) -> subprocess.Popen[str]:
    env = dict(os.environ)
    return subprocess.Popen(
        [sys.executable, "-c", PY_GUEST, "127.0.0.1", str(port), name, str(count)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
