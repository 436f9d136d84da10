"""Nothing blocks the collector's event loop: asyncio's debug mode says so under load.

The whole assembly (the one ``serve`` and ``up`` run) runs in this process on
asyncio's loop in debug mode, which logs every callback that runs longer than
``slow_callback_duration``. Under load from other processes — native guests over TCP,
syslog over UDP, TCP and RELP with some bad frames among them — it must log none,
from start to stop. The load includes what used to block:

* a slow disk: every fsync takes 0.2 s (``--fsync always``, state files, rotation);
* an instance whose log a crash left far ahead of its state (its first connection
  used to scan the file on the loop);
* bad syslog frames (the reject log);
* the stop, which waits for the indexer to catch up.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import file_seqs, free_port, python_guest
from umonitor import assembly
from umonitor.collector import server
from umonitor.collector.base import Endpoint
from umonitor.records import Origin, Record, Severity
from umonitor.store import layout
from umonitor.store.writer import FsyncPolicy, Store

THRESHOLD = 0.1  # seconds: asyncio's own default for "slow"
SLOW_FSYNC = 0.2

SYSLOG_LOAD = r"""
import socket, sys
host = "127.0.0.1"
udp, tcp, relp = (int(p) for p in sys.argv[1:4])
frames = [f"<14>1 - sysload app - - - m {n}\n".encode() for n in range(3000)]
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    for n in range(1500):
        s.sendto(f"<14>1 - udpload app - - - d {n}".encode(), (host, udp))
        if n % 100 == 0:
            s.sendto(b"\r\n\0", (host, udp))  # empty: rejected, written to the reject log
with socket.create_connection((host, tcp)) as s:
    s.sendall(b"".join(frames))
with socket.create_connection((host, relp)) as s:
    offers = b"relp_version=0\nrelp_software=test\ncommands=syslog"
    out = [b"1 open %d %s\n" % (len(offers), offers)]
    for n in range(2, 502):
        msg = b"<14>1 - relpload app - - - r %d" % n
        out.append(b"%d syslog %d %s\n" % (n, len(msg), msg))
    out.append(b"502 close 0\n")
    s.sendall(b"".join(out))
    got = b""
    while b"502 rsp" not in got:
        data = s.recv(65536)
        if not data:
            break
        got += data
    assert got.count(b"200 OK") == 502, got[-200:]
"""


def crashed_log(root: Path, name: str, records: int) -> None:
    """An instance whose log a crash left ahead of its state: its state is gone."""
    store = Store(root, FsyncPolicy.NEVER)
    log = store.log(name)
    store.begin_boot(log, "c0ffee", "test", "peer", name)
    batch = 10_000
    for first in range(1, records + 1, batch):
        rows = [
            Record(n, Severity.INFO, f"old record {n} " + "x" * 60)
            for n in range(first, first + batch)
        ]
        store.add_records(log, "c0ffee", rows, Origin.APP, time.time_ns())
        store.commit()
    store.close()
    (root / "instances" / name / layout.STATE).unlink()


def test_the_loop_never_waits_under_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = layout.prepare_data_dir(tmp_path / "data")
    crashed_log(root, "heavy", 300_000)
    size = (root / "instances" / "heavy" / layout.APP_LOG).stat().st_size
    assert size > 25 << 20

    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        time.sleep(SLOW_FSYNC)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)

    slow: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            text = record.getMessage()
            if "took" in text and "seconds" in text:
                slow.append(text)

    catcher = Catch()
    logging.getLogger("asyncio").addHandler(catcher)
    port, udp, tcp, relp = free_port(), free_port(), free_port(), free_port()
    guests: list[subprocess.Popen[str]] = []
    results: dict[str, tuple[int, str]] = {}

    async def load(app: assembly.Assembly) -> None:
        loop = asyncio.get_running_loop()
        while not app.collector.listening or not any("relp" in x for x in app.collector.listening):
            await asyncio.sleep(0.05)
        names = ["heavy", "g1", "g2", "g3"]
        for name in names:
            guests.append(python_guest(port, name, 20_000))
        syslog = subprocess.Popen(
            [sys.executable, "-c", SYSLOG_LOAD, str(udp), str(tcp), str(relp)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, proc in [*zip(names, guests, strict=True), ("syslog", syslog)]:
            _, err = await loop.run_in_executor(None, proc.communicate)
            results[name] = (proc.returncode, err[-500:])
        app.stopping.set()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.slow_callback_duration = THRESHOLD
        store = Store(root, FsyncPolicy.ALWAYS)
        collector = server.Collector(store)
        listeners = assembly.Listeners(
            [Endpoint("127.0.0.1", port)],
            udp=True,
            syslog=[
                ("udp", Endpoint("127.0.0.1", udp)),
                ("tcp", Endpoint("127.0.0.1", tcp)),
                ("relp", Endpoint("127.0.0.1", relp)),
            ],
        )
        app = assembly.Assembly(root, collector, listeners, indexer=True)
        loader = loop.create_task(load(app))
        await assembly.run(app)
        await loader

    gc.collect()
    gc.freeze()  # what exists now is never collected: a full collection stays short
    try:
        asyncio.run(main(), debug=True)
    finally:
        gc.unfreeze()
        logging.getLogger("asyncio").removeHandler(catcher)
    assert len(results) == 5 and all(code == 0 for code, _ in results.values()), results
    assert file_seqs(root, "heavy")[-20_000:] == list(range(1, 20_001))
    for name in ("g1", "g2", "g3"):
        assert file_seqs(root, name) == list(range(1, 20_001))
    assert slow == [], "\n".join(slow[:10])
