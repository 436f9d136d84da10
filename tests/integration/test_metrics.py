"""/metrics against real collectors: what it says is what ``ls -o json`` says.

``exposition`` (web/metrics.py) asks a running collector over its control socket, so
these run ``umonitor serve`` with native guests (the Python client) and syslog
(util-linux ``logger``), and, for refusals, a collector with the fleet's admission
rules in a thread (as tests/integration/test_admission.py does), its control socket
opened by the same code as ``serve`` and ``up`` (assembly.open_control).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import (
    free_port,
    python_guest,
    start_collector,
    umonitor,
    wait_for,
)
from tests.integration.test_admission import hello_at as hello
from tests.integration.test_syslog_ingest import HOST, logger
from umonitor.assembly import Assembly, Listeners, Part, open_control
from umonitor.collector.admission import FleetAdmission
from umonitor.collector.base import Endpoint
from umonitor.collector.control import stop_control
from umonitor.collector.server import Collector
from umonitor.fleet.leases import Leases
from umonitor.protocol import frame_codec as fc
from umonitor.records import SEVERITY_NAMES
from umonitor.store import layout
from umonitor.store.writer import FsyncPolicy, Store
from umonitor.web.metrics import exposition

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(data: Path) -> Samples:
    """``/metrics`` for ``data``, read back with prometheus_client's parser."""
    out: Samples = {}
    for family in text_string_to_metric_families(exposition(data).decode()):
        for sample in family.samples:
            out[sample.name, frozenset(sample.labels.items())] = sample.value
    return out


def stored(found: Samples) -> dict[tuple[str, str], float]:
    """Records stored by (instance, severity), summed over origin."""
    out: dict[tuple[str, str], float] = {}
    for (name, labels), value in found.items():
        if name == "umonitor_records_stored_total":
            label = dict(labels)
            key = (label["instance"], label["severity"])
            out[key] = out.get(key, 0) + value
    return out


def ls_rows(data: Path) -> dict[str, dict[str, object]]:
    out = umonitor("ls", "-o", "json", "--data", str(data))
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    return {str(r["name"]): r for r in rows if "name" in r}


def test_metrics_agree_with_ls(tmp_path: Path) -> None:
    udp = free_port()
    c = start_collector(tmp_path / "data", "--syslog-udp", f"127.0.0.1:{udp}")
    try:
        guests = {"alpha": 40, "beta": 17}  # severities i % 8 for i = 1..count
        procs = [python_guest(c.port, name, count) for name, count in guests.items()]
        for proc in procs:
            _out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
        logger(udp, "--udp", "--rfc5424", "-t", "app", "-p", "user.err", "disk failing")
        logger(udp, "--udp", "--rfc5424", "-t", "app", "-p", "user.warning", "almost full")
        logger(udp, "--udp", "--rfc5424", "-t", "app", "-p", "user.warning", "still full")
        expected = {**guests, HOST: 3}

        def indexed() -> bool:
            rows = ls_rows(c.data)
            return all(rows.get(n, {}).get("records") == count for n, count in expected.items())

        wait_for(indexed, timeout=60, what="every record in the index")
        wait_for(lambda: sum(stored(scrape(c.data)).values()) == sum(expected.values()),
                 what="every record counted")  # fmt: skip
        found = scrape(c.data)
        by_severity = stored(found)
        for name, row in ls_rows(c.data).items():
            counts = row["counts"]
            assert isinstance(counts, dict)
            for severity in SEVERITY_NAMES:
                assert by_severity.get((name, severity), 0) == counts[severity], (name, severity)
        assert found["umonitor_records_stored_total",
                     frozenset({("instance", HOST), ("origin", "syslog"),
                                ("severity", "warning")})] == 2  # fmt: skip
        assert found["umonitor_collector_up", frozenset()] == 1
        assert found["umonitor_ack_latency_seconds_count", frozenset()] > 0
        inf = found["umonitor_ack_latency_seconds_bucket", frozenset({("le", "+Inf")})]
        assert inf == found["umonitor_ack_latency_seconds_count", frozenset()]
        assert found["umonitor_collector_resident_memory_bytes", frozenset()] > 1 << 20
        assert found["umonitor_instances_folded", frozenset()] == 0
    finally:
        assert c.stop() == 0
    # No collector now: up is 0 and nothing else is said.
    families = list(text_string_to_metric_families(exposition(c.data).decode()))
    assert [(f.name, f.samples[0].value) for f in families] == [("umonitor_collector_up", 0)]


def test_two_thousand_guest_names_stay_bounded(tmp_path: Path) -> None:
    tcp = free_port()
    c = start_collector(tmp_path / "data", "--syslog-tcp", f"127.0.0.1:{tcp}", "--no-index")
    try:
        names = 2000
        with socket.create_connection(("127.0.0.1", tcp)) as s:
            s.sendall(b"".join(f"<14>1 - guest-{i} app - - - hello\n".encode()
                               for i in range(names)))  # fmt: skip
        wait_for(lambda: sum(stored(scrape(c.data)).values()) == names, timeout=120,
                 what="every guest's record counted")  # fmt: skip
        found = scrape(c.data)
        instances = {dict(labels)["instance"] for name, labels in found
                     if name == "umonitor_records_stored_total"}  # fmt: skip
        assert len(instances) == 501 and "_other" in instances
        assert found["umonitor_instances_folded", frozenset()] == names - 500
        series = [k for k in found if k[0] == "umonitor_records_stored_total"]
        assert len(series) == 501 * len(SEVERITY_NAMES)  # syslog only, eight severities
        assert len(list((c.data / "instances").iterdir())) == names  # they were all stored
    finally:
        assert c.stop() == 0


TOKEN = "5f0e3c1a9b7d2e4f6a8c0b1d3e5f7a9c"


def fleet_collector(tmp_path: Path, part: Part | None = None) -> Iterator[tuple[Path, int, str]]:
    """A collector with the fleet's closed admission and the control socket, in a thread."""
    data = tmp_path / "data"
    data.mkdir(parents=True)
    leases = Leases(data / "leases.json", IPv4Network("127.0.0.0/24"), "127.0.0.1")
    web = str(leases.lease("web"))
    admission = FleetAdmission(leases.owner, {"web": TOKEN}.get)
    collector = Collector(Store(data, FsyncPolicy.BATCH), admission=admission)
    app = Assembly(data, collector, Listeners([]), indexer=False, part=part)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop = asyncio.Event()
    bound: list[Endpoint] = []

    async def main() -> None:
        bound.append(await collector.listen_tcp(Endpoint("127.0.0.1", 0)))
        control = await open_control(app)
        ready.set()
        await stop.wait()
        assert control is not None
        stop_control(data, control)
        await collector.shutdown()

    thread = threading.Thread(target=lambda: loop.run_until_complete(main()), daemon=True)
    thread.start()
    assert ready.wait(10)
    yield data, bound[0].port, web
    loop.call_soon_threadsafe(stop.set)
    thread.join(10)
    loop.close()


def test_refused_guests_are_counted(tmp_path: Path) -> None:
    for data, port, web in fleet_collector(tmp_path):
        assert any(isinstance(e, fc.Ack) for e in hello(port, web, "web", TOKEN))
        stranger = hello(port, "127.0.0.77", "intruder", "")
        assert any(isinstance(e, fc.ErrorFrame) for e in stranger)
        wrong = hello(port, web, "web", "0" * 32)
        assert any(isinstance(e, fc.ErrorFrame) for e in wrong)
        found = scrape(data)
        assert found["umonitor_refused_total", frozenset()] == 2
        assert found["umonitor_rejected_total", frozenset({("reason", "protocol")})] == 2
        assert found["umonitor_records_stored_total",
                     frozenset({("instance", "web"), ("origin", "app"),
                                ("severity", "info")})] == 1  # fmt: skip
        assert not any(dict(labels).get("instance") == "intruder" for _, labels in found)
        assert found["umonitor_ack_latency_seconds_count", frozenset()] == 1


class Fleet:
    """A part that answers ``ps`` as a fleet of one instance does (no QEMU here)."""

    async def start(self) -> None: ...

    def knows(self, name: str) -> bool:
        return name == "web"

    async def handle(self, request: dict[str, Any]) -> dict[str, Any] | None:
        if request.get("op") != "ps":
            return None
        row = {"name": "web", "state": "restarting", "restarts": 3, "last_exit": None}
        return {"ok": True, "instances": [row], "kvm_unusable": None}

    async def stop(self) -> None: ...


def test_fleet_instances_state_restarts_and_crash_reports(tmp_path: Path) -> None:
    for data, _port, _web in fleet_collector(tmp_path, Fleet()):
        crashes = layout.instance_dir(data, "web") / "crashes"
        crashes.mkdir(parents=True)
        for stamp in ("20261203T100000Z", "20261203T110000Z"):
            (crashes / f"crash-{stamp}.json").write_text("{}")
        (crashes / "start-failure-20261203T120000Z.json").write_text("{}")  # not a crash
        found = scrape(data)
        web = frozenset({("instance", "web")})
        assert found["umonitor_instance_state", web | {("state", "restarting")}] == 1
        assert found["umonitor_instance_restarts_total", web] == 3
        assert found["umonitor_instance_crashes_total", web] == 2
