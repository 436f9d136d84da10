"""Runtime control over the guest's own connection: ``umonitor level`` and ``ping``.

A real collector (``umonitor serve``) on loopback, real guests: the C library in
``tests/c/control_guest.c`` and the Python client; the CLI in a subprocess.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import Collector, umonitor, wait_for
from umonitor.assembly import Assembly, Listeners, open_control
from umonitor.collector import server
from umonitor.collector.base import Endpoint
from umonitor.collector.control import stop_control
from umonitor.fleet.config import FleetConfig, InstanceConfig, NetworkConfig
from umonitor.fleet.daemon import Fleet
from umonitor.fleet.instance import Instance
from umonitor.fleet.leases import Leases, leases_path
from umonitor.fleet.net import NetConfig
from umonitor.fleet.supervisor import Supervisor
from umonitor.guest.client import Client
from umonitor.protocol import frame_codec as fc
from umonitor.records import Severity
from umonitor.store import layout
from umonitor.store.writer import FsyncPolicy, Store

ROUND_TRIP = re.compile(r"^(\S+): round trip (\d+\.\d\d) ms$")


class CGuest:
    """control_guest, driven over its stdin and stdout."""

    def __init__(self, program: Path, port: int, name: str, *level: str) -> None:
        self.proc = subprocess.Popen(
            [str(program), "127.0.0.1", str(port), name, *level],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def say(self, command: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def quit(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.write("quit\n")
        self.proc.communicate(timeout=30)  # closes both pipes
        assert self.proc.returncode == 0


@pytest.fixture
def c_guest(collector: Collector, c_programs: dict[str, Path]) -> Iterator[CGuest]:
    guest = CGuest(c_programs["control_guest"], collector.port, "cg")
    yield guest
    guest.quit()


def ls_rows(c: Collector) -> dict[str, dict[str, object]]:
    out = c.cli("ls", "-o", "json")
    assert out.returncode == 0, out.stderr
    rows = (json.loads(line) for line in out.stdout.splitlines())
    return {str(r["name"]): r for r in rows if "name" in r}


def wait_level(c: Collector, name: str, level: str | None) -> None:
    def shown() -> bool:
        row = ls_rows(c).get(name)
        return row is not None and row["level"] == level

    wait_for(shown, what=f"ls to show {name} at level {level}")


def messages(c: Collector, name: str, tag: str) -> set[str]:
    return {str(r["message"]) for r in c.records(name) if str(r["message"]).startswith(tag)}


def one_sentence(out: subprocess.CompletedProcess[str], exit_code: int) -> str:
    assert out.returncode == exit_code, (out.stdout, out.stderr)
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("umonitor: "), out.stderr
    return lines[0]


def test_level_changes_what_the_c_library_sends(collector: Collector, c_guest: CGuest) -> None:
    assert c_guest.say("log before") == "logged 8"
    wait_level(collector, "cg", "debug")  # said in HELLO

    out = collector.cli("level", "cg", "warning")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "cg: level warning (was debug)\n"
    assert c_guest.say("level") == "level 4"
    assert c_guest.say("log after") == "logged 5"

    assert messages(collector, "cg", "before") == {f"before sev={n}" for n in range(8)}
    assert messages(collector, "cg", "after") == {f"after sev={n}" for n in range(5)}
    wait_level(collector, "cg", "warning")
    table = collector.cli("ls").stdout.splitlines()
    assert table[0].split()[:3] == ["NAME", "STATE", "LEVEL"]
    assert any(line.split()[:3] == ["cg", "connected", "warning"] for line in table)

    out = collector.cli("level", "cg", "7")
    assert out.stdout == "cg: level debug (was warning)\n"
    assert c_guest.say("log again") == "logged 8"


def test_ping_prints_the_round_trip(collector: Collector, c_guest: CGuest) -> None:
    assert c_guest.say("log up") == "logged 8"
    out = collector.cli("ping", "cg")
    assert out.returncode == 0, out.stderr
    match = ROUND_TRIP.match(out.stdout.strip())
    assert match is not None and match.group(1) == "cg", out.stdout
    assert float(match.group(2)) >= 0


def test_c_guest_that_starts_at_a_level_says_so(
    collector: Collector, c_programs: dict[str, Path]
) -> None:
    guest = CGuest(c_programs["control_guest"], collector.port, "quiet", "3")
    try:
        assert guest.say("log start") == "logged 4"
        wait_level(collector, "quiet", "err")
    finally:
        guest.quit()
    wait_level(collector, "quiet", None)  # gone: no level shown


def run_polling(client: Client, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI while this process's client keeps polling (it answers when polled)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "umonitor", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    while proc.poll() is None:
        client.poll()
        threading.Event().wait(0.005)
    stdout, stderr = proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def test_level_and_ping_with_the_python_client(collector: Collector) -> None:
    data = str(collector.data)
    with Client("127.0.0.1", collector.port, "py") as client:
        client.log(Severity.INFO, "tag before")
        assert client.flush(5)
        out = run_polling(client, "level", "py", "err", "--data", data)
        assert out.returncode == 0, out.stderr
        assert out.stdout == "py: level err (was debug)\n"
        assert client.session.level == Severity.ERR
        assert client.log(Severity.WARNING, "tag filtered") == 0
        assert client.log(Severity.ERR, "tag kept") > 0
        assert client.flush(5)
        wait_level(collector, "py", "err")
        out = run_polling(client, "ping", "py", "--data", data)
        assert out.returncode == 0, out.stderr
        assert ROUND_TRIP.match(out.stdout.strip()) is not None
    assert messages(collector, "py", "tag") == {"tag before", "tag kept"}


def test_a_guest_that_is_not_connected_gets_one_sentence(
    collector: Collector, c_programs: dict[str, Path]
) -> None:
    guest = CGuest(c_programs["control_guest"], collector.port, "gone")
    assert guest.say("log once") == "logged 8"
    guest.quit()
    wait_level(collector, "gone", None)
    line = one_sentence(collector.cli("level", "gone", "info"), 2)
    assert "gone is not connected" in line and "nothing was changed" in line
    line = one_sentence(collector.cli("ping", "gone"), 2)
    assert line == "umonitor: instance gone is not connected"


def test_user_mistakes_are_one_sentence(collector: Collector, tmp_path: Path) -> None:
    line = one_sentence(collector.cli("level", "nope", "info"), 2)
    assert line == "umonitor: no instance named 'nope'; see 'umonitor ls'"
    line = one_sentence(collector.cli("level", "nope", "loud"), 2)
    assert "unknown level 'loud'" in line
    line = one_sentence(umonitor("ping", "x", "--data", str(tmp_path / "empty")), 2)
    assert "no collector is running on" in line
    line = one_sentence(collector.cli("ps"), 2)
    assert "not a fleet" in line
    assert one_sentence(collector.cli("level"), 2).startswith("umonitor: Missing argument")


def test_one_collector_per_data_directory(collector: Collector) -> None:
    socket_path = collector.data / "run" / "control.sock"
    assert socket_path.stat().st_mode & 0o777 == 0o600
    out = umonitor("serve", "--data", str(collector.data), "--listen", "127.0.0.1:0")
    line = one_sentence(out, 2)
    assert line.startswith(f"umonitor: a collector is already running on {collector.data}")
    line = one_sentence(collector.cli("ping", "nope"), 2)  # the first still answers
    assert line == "umonitor: no instance named 'nope'; see 'umonitor ls'"


def test_text_connections_have_no_control_channel(collector: Collector) -> None:
    with socket.create_connection(("127.0.0.1", collector.port)) as sock:
        sock.sendall(b"INFO: a text line\n")
        wait_for(lambda: "127.0.0.1" in ls_rows(collector), what="the text guest")
        line = one_sentence(collector.cli("level", "127.0.0.1", "err"), 2)
        assert "plain text format, which has no control channel" in line


def test_a_library_that_does_not_answer_set_level_still_gets_it(collector: Collector) -> None:
    """An older guest library applies SET_LEVEL silently and only answers PING."""
    sock = socket.create_connection(("127.0.0.1", collector.port))
    sock.settimeout(30)
    sock.sendall(fc.PREFACE + fc.encode(fc.Hello("older", bytes(16), library="older/0.9")))
    got: list[fc.Event] = []

    def guest() -> None:
        decoder = fc.FrameDecoder(fc.Peer.HOST, expect_preface=False)
        while data := sock.recv(4096):
            decoder.receive_data(data)
            for event in decoder.next_events():
                got.append(event)
                if isinstance(event, fc.Ping):
                    sock.sendall(fc.encode(fc.Pong(event.nonce)))

    thread = threading.Thread(target=guest, daemon=True)
    thread.start()
    try:
        wait_for(lambda: "older" in ls_rows(collector), what="the older guest")
        assert ls_rows(collector)["older"]["level"] is None  # its HELLO says none
        out = collector.cli("level", "older", "notice")
        assert out.returncode == 0, out.stderr
        assert out.stdout == "older: level notice; its library does not confirm levels (older)\n"
        assert fc.SetLevel(Severity.NOTICE) in got
        wait_level(collector, "older", "notice")
    finally:
        sock.shutdown(socket.SHUT_RDWR)  # ends the guest thread's recv
        thread.join(10)
        sock.close()


async def unbooted_fleet(
    root: Path, tmp_path: Path
) -> tuple[server.Collector, int, Supervisor, asyncio.AbstractServer | None]:
    """``up``'s pieces, real, on loopback: store, collector, supervisor with fl-1 and
    fl-2 registered but not booted, and the control socket with the fleet's ops.
    The caller stops the control socket and shuts the collector down."""
    store = Store(root, FsyncPolicy.BATCH)
    collector = server.Collector(store)
    collector.status_path = root / layout.STATUS
    port = (await collector.listen_tcp(Endpoint("127.0.0.1", 0))).port
    netcfg = NetConfig()
    supervisor = Supervisor(root, store, port, lambda: None)
    for name in ("fl-1", "fl-2"):
        address = ipaddress.IPv4Interface(f"10.77.0.{2 + len(supervisor.instances)}/24")
        cfg = InstanceConfig(name, tmp_path / "no-kernel")
        run_dir = root / "run" / name
        run_dir.mkdir(parents=True, exist_ok=True)  # as a launch makes it
        supervisor.add(Instance(cfg, address, netcfg.host_address, None, run_dir))
    config = FleetConfig(tmp_path / "umonitor.toml", NetworkConfig(), port, ())
    leases = Leases(leases_path(root), netcfg.network, netcfg.host_address)
    fleet = Fleet(root, config, netcfg, leases, store, collector, supervisor, asyncio.Event())
    control = await open_control(Assembly(root, collector, Listeners([]), part=fleet))
    return collector, port, supervisor, control


def test_the_fleet_control_socket_reaches_its_instances(
    tmp_path: Path, c_programs: dict[str, Path]
) -> None:
    """``up``'s control socket answers level, ping and ps's LEVEL, without QEMU.

    The fleet's pieces are real (collector, store, supervisor, control socket); its
    two instances are registered but not booted, and a C guest connects as fl-1.
    """
    root = layout.prepare_data_dir(tmp_path / "data")

    async def main() -> None:
        collector, port, _, control = await unbooted_fleet(root, tmp_path)
        guest = CGuest(c_programs["control_guest"], port, "fl-1", "6")
        try:
            assert await asyncio.to_thread(guest.say, "log one") == "logged 7"
            data = ("--data", str(root))
            out = await asyncio.to_thread(umonitor, "level", "fl-1", "err", *data)
            assert out.stdout == "fl-1: level err (was info)\n", out.stderr
            out = await asyncio.to_thread(umonitor, "ps", "-o", "json", *data)
            rows = {r["name"]: r for r in map(json.loads, out.stdout.splitlines())}
            assert rows["fl-1"]["level"] == "err" and rows["fl-2"]["level"] is None
            out = await asyncio.to_thread(umonitor, "ps", *data)
            assert out.stdout.splitlines()[0].split()[:3] == ["NAME", "STATE", "LEVEL"]
            assert any(
                line.split()[:3] == ["fl-1", "stopped", "err"] for line in out.stdout.splitlines()
            )
            out = await asyncio.to_thread(umonitor, "ping", "fl-1", *data)
            assert ROUND_TRIP.match(out.stdout.strip()) is not None, out.stderr
            line = one_sentence(await asyncio.to_thread(umonitor, "ping", "fl-2", *data), 2)
            assert line == "umonitor: instance fl-2 is not connected"
            line = one_sentence(await asyncio.to_thread(umonitor, "level", "x", "err", *data), 2)
            assert line == "umonitor: no instance named 'x'; see 'umonitor ls'"
            assert await asyncio.to_thread(guest.say, "log two") == "logged 4"
        finally:
            await asyncio.to_thread(guest.quit)
            stop_control(root, control)
            await collector.shutdown()

    asyncio.run(main())


def test_a_guest_that_never_answers_gets_one_sentence(collector: Collector) -> None:
    with socket.create_connection(("127.0.0.1", collector.port)) as sock:
        sock.sendall(fc.PREFACE + fc.encode(fc.Hello("mute", bytes(16))))
        wait_for(lambda: "mute" in ls_rows(collector), what="the mute guest")
        line = one_sentence(collector.cli("level", "mute", "crit"), 2)
        assert (
            line == "umonitor: instance mute did not answer within 5 s; its level may have changed"
        )
