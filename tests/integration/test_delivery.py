"""Delivery: numbered records from real guests, checked one by one in the files.

A million records from four C guests must land exactly once and in order. Then the
collector is SIGKILLed several times while C guests, and then Python guests, send:
it comes back on the same port and data directory, the guests notice, reconnect and
replay by themselves, and still every record is stored once, in order. The guests
pace themselves on a window of unsettled records smaller than their buffer, so a
correct run drops nothing and the exact checker (tests/numbered.py) applies.

Where a guest does drop, its DROPPED notices must count exactly the records the host
lacks (docs/protocol.md §2.3); the last two tests show where the guest libraries
count more than that. The checker itself is tested first, on made-up files.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.integration.conftest import Collector, start_collector, umonitor
from tests.numbered import InstanceCheck, LogChecker, check_lines, log_path, numbered_message
from umonitor.protocol import frame_codec as fc
from umonitor.records import Origin, Record, Severity
from umonitor.store.logfile import (
    BootLine,
    DroppedLine,
    format_boot_line,
    format_dropped_line,
    format_record_line,
)

# Records a C guest keeps unsettled: ~200 KB, inside its 256 KiB ring. numbered_guest's
# records are ~105 bytes, ~220 at err or worse (half of them), which carry their stack.
WINDOW = 1200
PY_WINDOW = 5000  # the Python client's buffer holds 10,000 records
SERVE = ("--no-index", "--no-udp")  # the files are what is checked; spare the CPU

# -- the checker on made-up files -----------------------------------------------------

BOOT_A, BOOT_B = "aa" * 16, "bb" * 16


def boot(boot_id: str) -> str:
    return format_boot_line(BootLine(boot_id, "test/1", "127.0.0.1:1", "t"))


def rec(seq: int, message: str | None = None) -> str:
    record = Record(seq, Severity.INFO, f"n={seq}" if message is None else message)
    return format_record_line(1_700_000_000 * 10**9, Origin.APP, record)


def dropped(boot_id: str, count: int, through: int) -> str:
    return format_dropped_line(DroppedLine(boot_id, count, through))


def recs(*seqs: int) -> list[str]:
    return [rec(s) for s in seqs]


def counts(check: InstanceCheck) -> dict[str, int]:
    return {
        "records": check.records,
        "missing": check.missing,
        "duplicated": check.duplicated,
        "out_of_order": check.out_of_order,
        "covered": check.covered,
        "overcounted": check.overcounted,
    }


class Case(NamedTuple):
    lines: list[str]
    n: int  # the last number of every boot
    exact: bool  # does the exact check pass?
    aware: bool  # does the drop-aware check pass?
    counts: dict[str, int]  # what the drop-aware check must count


A = boot(BOOT_A)
CASES = {
    "clean": Case([A, *recs(1, 2, 3, 4, 5)], 5, True, True, {"records": 5}),
    "one missing": Case([A, *recs(1, 2, 4, 5)], 5, False, False, {"missing": 1}),
    "tail missing": Case([A, *recs(1, 2, 3)], 5, False, False, {"missing": 2}),
    "head missing": Case([A, *recs(3, 4, 5)], 5, False, False, {"missing": 2}),
    "duplicate": Case([A, *recs(1, 2, 2, 3)], 3, False, False, {"duplicated": 1}),
    "replayed again after a reconnect": Case(
        [A, *recs(1, 2, 3), A, *recs(2, 3, 4)], 4, False, False, {"duplicated": 2, "records": 4}
    ),
    "out of order": Case(
        [A, *recs(1, 3, 2, 4)], 4, False, False, {"out_of_order": 1, "missing": 0, "records": 4}
    ),
    "beyond N": Case([A, *recs(1, 2, 3, 4)], 3, False, False, {"records": 4}),
    "drop covered exactly": Case(
        [A, *recs(1, 2), A, dropped(BOOT_A, 2, 4), *recs(5, 6)], 6, False, True, {"covered": 2}
    ),
    "drop at the tail": Case(
        [A, *recs(1, 2, 3), dropped(BOOT_A, 2, 5)], 5, False, True, {"covered": 2}
    ),
    "two drops, cumulative counts, one repeated": Case(
        [A, rec(1), dropped(BOOT_A, 1, 2), *recs(3, 4), *[dropped(BOOT_A, 4, 7)] * 2, rec(8)],
        8,
        False,
        True,
        {"covered": 4, "missing": 0},
    ),
    "notice counts too many": Case(
        [A, *recs(1, 2), dropped(BOOT_A, 3, 4), rec(5)],
        5,
        False,
        False,
        {"covered": 2, "overcounted": 1},
    ),
    "notice counts too few": Case(
        [A, rec(1), dropped(BOOT_A, 1, 4), rec(5)], 5, False, False, {"covered": 1, "missing": 2}
    ),
    "notice's through too low": Case(
        [A, rec(1), dropped(BOOT_A, 3, 3), rec(5)],
        5,
        False,
        False,
        {"covered": 2, "missing": 1, "overcounted": 1},
    ),
    "notice after the gap": Case(
        [A, *recs(1, 4), dropped(BOOT_A, 2, 3), rec(5)],
        5,
        False,
        False,
        {"missing": 2, "overcounted": 2},
    ),
    "notice for a number that is stored": Case(
        [A, *recs(1, 2, 3), dropped(BOOT_A, 1, 3), rec(4)], 4, False, False, {"overcounted": 1}
    ),
    "two boots interleaved": Case(
        [A, *recs(1, 2), boot(BOOT_B), rec(1), A, rec(3), boot(BOOT_B), *recs(2, 3)],
        3,
        True,
        True,
        {"records": 6},
    ),
    "one boot lacks what the other has": Case(
        [A, *recs(1, 2, 3), boot(BOOT_B), *recs(1, 3)], 3, False, False, {"missing": 1}
    ),
    "record before any boot line": Case([rec(1), A, rec(1)], 1, False, False, {"records": 1}),
    "wrong content": Case([A, rec(1), rec(2, "n=3")], 2, False, False, {"records": 2}),
    "a torn line is no record": Case(
        [A, rec(1), "2026-11-26T13:44:35.1", rec(2)], 2, True, True, {"records": 2}
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_checker_cases(case: str) -> None:
    lines, n, exact_ok, aware_ok, expect = CASES[case]
    exact = check_lines("t", lines, expected=n, content=numbered_message)
    aware = check_lines("t", lines, expected=n, allow_drops=True, content=numbered_message)
    assert (exact.ok, aware.ok) == (exact_ok, aware_ok), exact.summary() + "\n" + aware.summary()
    for key, value in expect.items():
        assert counts(aware)[key] == value, (key, aware.summary())
    assert exact.missing + exact.covered == aware.missing + aware.covered


def test_checker_expected_per_boot_finds_a_boot_that_never_came() -> None:
    check = check_lines("t", [boot(BOOT_A), *recs(1, 2)], expected={BOOT_A: 2, BOOT_B: 3})
    assert not check.ok and check.missing == 3 and check.boots[BOOT_B].missing == 3


def test_checker_follows_a_growing_and_rotated_file(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_text("\n".join([boot(BOOT_A), *recs(1, 2)]) + "\n" + rec(3)[:20])
    checker = LogChecker("t", path, content=numbered_message)
    assert checker.follow() == 3  # the incomplete line waits
    with open(path, "a") as out:
        out.write(rec(3)[20:] + "\n")
    path.rename(tmp_path / "app.log.1")  # rotated: the rest goes to a new app.log
    path.write_text("\n".join(recs(4, 5)) + "\n")
    assert checker.follow() == 3
    assert checker.follow() == 0
    check = checker.finish(5)
    assert check.ok and check.records == 5, check.summary()


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 60),
    gone=st.sets(st.integers(1, 60)),
    honest=st.booleans(),
)
def test_checker_drop_aware_accepts_exactly_the_drops_notices_cover(
    n: int, gone: set[int], honest: bool
) -> None:
    """Numbers removed behind notices that count them pass the drop-aware check; a
    notice that counts one record too many fails it, as does an exact check."""
    gone = {g for g in gone if g <= n}
    lines, total = [boot(BOOT_A)], 0
    for seq in range(1, n + 1):
        if seq in gone:
            total += 1
            if seq + 1 not in gone:  # the guest says so before its next record
                lines.append(dropped(BOOT_A, total + (0 if honest else 1), seq))
        else:
            lines.append(rec(seq))
    aware = check_lines("t", lines, expected=n, allow_drops=True)
    exact = check_lines("t", lines, expected=n)
    assert aware.ok == (honest or not gone), aware.summary()
    assert exact.ok == (not gone)
    assert aware.records == n - len(gone)
    if honest:
        assert aware.covered == aware.dropped == len(gone) and aware.missing == 0


# -- real guests ----------------------------------------------------------------------


def c_guest(program: Path, port: int, name: str, count: int, *flags: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(program), "127.0.0.1", str(port), name, str(count), *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stats_of(output: str) -> dict[str, int]:
    """The last line a guest prints: logged=… acked=… dropped=… (JSON for Python)."""
    last = output.strip().splitlines()[-1] if output.strip() else ""
    if last.startswith("{"):
        return {k: int(v) for k, v in json.loads(last).items()}
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", last)}


class Fleet:
    """Guests sending to one collector, and a checker following each one's file.

    ``run`` waits for the guests to exit by themselves. Meanwhile a thread feeds the
    files to the checkers (so checking overlaps sending), and the collector is
    SIGKILLed each time the lines written pass one of ``kill_at`` (fractions of all
    records; counting newlines keeps up where parsing would lag), then started again
    on the same port and data directory.
    """

    def __init__(self, collector: Collector, counts: dict[str, int]) -> None:
        self.collector = collector
        self.counts = counts
        self.checkers = {
            name: LogChecker(name, log_path(collector.data, name), content=numbered_message)
            for name in counts
        }
        self.kills = 0
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self._lines = dict.fromkeys(counts, 0)
        self._offsets = dict.fromkeys(counts, 0)

    def lines_written(self) -> int:
        for name, offset in self._offsets.items():
            try:
                with open(log_path(self.collector.data, name), "rb") as src:
                    src.seek(offset)
                    chunk = src.read()
            except FileNotFoundError:
                continue
            self._offsets[name] = offset + len(chunk)
            self._lines[name] += chunk.count(b"\n")
        return sum(self._lines.values())

    def _follow(self, stop: threading.Event) -> None:
        while not stop.wait(0.2):
            for checker in self.checkers.values():
                checker.follow()

    def run(self, kill_at: tuple[float, ...] = (), timeout: float = 600) -> dict[str, str]:
        total = sum(self.counts.values())
        deadline = time.monotonic() + timeout
        stop = threading.Event()
        follower = threading.Thread(target=self._follow, args=(stop,))
        follower.start()
        try:
            while any(p.poll() is None for p in self.procs.values()):
                assert time.monotonic() < deadline, "the guests did not finish"
                if (
                    self.kills < len(kill_at)
                    and self.lines_written() >= kill_at[self.kills] * total
                ):
                    assert self.collector.stop(signal.SIGKILL) == -signal.SIGKILL
                    c = self.collector
                    self.collector = start_collector(c.data, *c.args, port=c.port)
                    self.kills += 1
                time.sleep(0.05)
        finally:
            stop.set()
            follower.join()
        outputs = {name: p.communicate()[0] for name, p in self.procs.items()}
        assert self.collector.stop() == 0
        for checker in self.checkers.values():
            checker.follow()
        return outputs

    def verdicts(self) -> dict[str, InstanceCheck]:
        return {name: c.finish(self.counts[name]) for name, c in self.checkers.items()}

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        if self.collector.proc.poll() is None:
            self.collector.stop(signal.SIGKILL)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Collector]:
    c = start_collector(tmp_path / "data", *SERVE)
    yield c
    if c.proc.poll() is None:
        c.stop(signal.SIGKILL)


def assert_all_delivered(fleet: Fleet, outputs: dict[str, str]) -> list[int]:
    """Every guest exited by itself with all its records acknowledged, and every file
    holds them exactly once, in order. Returns each instance's connection count."""
    for name, count in fleet.counts.items():
        out = outputs[name]
        stats = stats_of(out)
        assert fleet.procs[name].returncode == 0, (name, out)
        assert stats["logged"] == stats["acked"] == count and stats["dropped"] == 0, (name, out)
    connections = []
    for name, check in fleet.verdicts().items():
        assert check.ok and check.records == fleet.counts[name], check.summary()
        assert len(check.boots) == 1 and check.dropped == 0, check.summary()
        connections.append(next(iter(check.boots.values())).connections)
    return connections


def test_a_million_records_from_four_c_guests_exactly_once_in_order(
    serve: Collector, c_programs: dict[str, Path]
) -> None:
    counts = {f"million-{i}": 250_000 for i in range(4)}
    fleet = Fleet(serve, counts)
    try:
        for name, count in counts.items():
            fleet.procs[name] = c_guest(
                c_programs["numbered_guest"], serve.port, name, count, f"--window={WINDOW}"
            )
        outputs = fleet.run()
    finally:
        fleet.stop_all()
    assert_all_delivered(fleet, outputs)
    assert sum(c.result.records for c in fleet.checkers.values()) == 1_000_000


KILL_AT = (0.15, 0.35, 0.55, 0.75)  # fractions of all records, by lines written


def test_collector_sigkilled_four_times_while_c_guests_send(
    serve: Collector, c_programs: dict[str, Path]
) -> None:
    counts = {f"c-kill-{i}": 200_000 for i in range(4)}
    fleet = Fleet(serve, counts)
    try:
        for name, count in counts.items():
            fleet.procs[name] = c_guest(
                c_programs["numbered_guest"], serve.port, name, count,
                f"--window={WINDOW}", "--flush-ms=120000",
            )  # fmt: skip
        outputs = fleet.run(kill_at=KILL_AT)
    finally:
        fleet.stop_all()
    assert fleet.kills == len(KILL_AT)
    connections = assert_all_delivered(fleet, outputs)
    # Every guest noticed: it reconnected by itself, and the file shows each connection.
    reconnects = [stats_of(outputs[name])["reconnects"] for name in counts]
    assert all(r >= 1 for r in reconnects) and sum(reconnects) >= fleet.kills
    assert all(2 <= c <= r + 1 for c, r in zip(connections, reconnects, strict=True))


PY_GUEST = """
import json, sys
from umonitor.guest.client import Client
from umonitor.records import Severity
port, name, count, window = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
client = Client("127.0.0.1", port, name)
for i in range(1, count + 1):
    while len(client.session.unacked) >= window:  # pace on the link, as the C guest does
        client.flush(0.005)
    client.log(Severity(i % 8), f"n={i}", fields={"i": i}, file="guest.py", line=i,
               function="main")
ok = client.close(timeout=120)
s = client.session
print(json.dumps({"logged": s.seq, "acked": s.acked, "dropped": s.dropped}))
sys.exit(0 if ok else 1)
"""


def py_guest(port: int, name: str, count: int, window: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", PY_GUEST, str(port), name, str(count), str(window)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_collector_sigkilled_four_times_while_python_guests_send(serve: Collector) -> None:
    counts = {f"py-kill-{i}": 50_000 for i in range(4)}
    fleet = Fleet(serve, counts)
    try:
        for name, count in counts.items():
            fleet.procs[name] = py_guest(serve.port, name, count, PY_WINDOW)
        outputs = fleet.run(kill_at=KILL_AT)
    finally:
        fleet.stop_all()
    assert fleet.kills == len(KILL_AT)
    connections = assert_all_delivered(fleet, outputs)
    assert all(c >= 2 for c in connections) and sum(c - 1 for c in connections) >= fleet.kills


# -- drop accounting: what the guest libraries report as dropped -----------------------


class SetupFailed(Exception):
    """The scene a drop-accounting test builds did not come about (a broken test
    setup, told apart from the accounting being wrong)."""


def require(condition: bool, what: str) -> None:
    if not condition:
        raise SetupFailed(what)


def recv_events(
    conn: socket.socket, decoder: fc.FrameDecoder, until: Callable[[list[fc.Event]], bool]
) -> list[fc.Event]:
    """Read frames until ``until(events)`` says enough (or the peer closes)."""
    events: list[fc.Event] = []
    conn.settimeout(10)
    while not until(events):
        data = conn.recv(65536)
        if not data:
            break
        decoder.receive_data(data)
        events += decoder.next_events()
    return events


def test_c_guest_counts_only_records_the_host_lacks_as_dropped(
    tmp_path: Path, c_programs: dict[str, Path]
) -> None:
    """A scripted host stores records 1..m, loses the connection before it ACKs them,
    and is away until the guest's ring has overflowed. On reconnection its HELLO
    answer says it holds 1..m, so the DROPPED notice must count only m+1..through
    (docs/protocol.md §2.3: a sent record counts only if the host does not hold it)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    guest = c_guest(
        c_programs["numbered_guest"], port, "scripted", 200_000,
        "--rate=20000", "--allow-drops", "--flush-ms=1000",
    )  # fmt: skip
    try:
        conn, _ = listener.accept()
        decoder = fc.FrameDecoder(fc.Peer.GUEST)
        events = recv_events(conn, decoder, lambda ev: len(ev) >= 1)
        require(isinstance(events[0], fc.Hello), "HELLO first")
        conn.sendall(fc.encode(fc.Ack(0)))
        events += recv_events(conn, decoder, lambda ev: len(ev) > 500)
        held = max(e.seq for e in events if isinstance(e, Record))
        # Gone without acknowledging 1..held, and away while the guest logs ~20
        # records a millisecond into a ring that holds ~2,700 of them.
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
        listener.close()
        time.sleep(1.0)
        listener = socket.create_server(("127.0.0.1", port))
        conn, _ = listener.accept()
        decoder = fc.FrameDecoder(fc.Peer.GUEST)
        events = recv_events(conn, decoder, lambda ev: len(ev) >= 1)
        require(isinstance(events[0], fc.Hello), "HELLO first again")
        conn.sendall(fc.encode(fc.Ack(held)))  # "I hold 1..held"
        events += recv_events(conn, decoder, lambda ev: any(isinstance(e, fc.Dropped) for e in ev))
        notices = [e for e in events if isinstance(e, fc.Dropped)]
        require(bool(notices), "a DROPPED notice after the outage")
        conn.close()
    finally:
        listener.close()
        guest.kill()
        guest.communicate()
    notice = notices[0]
    require(notice.through_seq > held, "the ring overflowed past what the host holds")
    assert notice.count == notice.through_seq - held, (notice, held)


def test_python_client_counts_only_records_the_host_lacks_as_dropped(
    serve: Collector,
) -> None:
    """The collector stalls (SIGSTOP) while a Python guest with a 100-record buffer
    logs 1,000 records: they are all sent (the socket buffers take them) and stored
    once the collector resumes, so none is lost and none may be counted dropped."""
    from umonitor.guest.client import Client

    client = Client("127.0.0.1", serve.port, "stalled", capacity=100)
    try:
        client.log(Severity.INFO, "n=1")
        require(client.flush(10), "the first record acknowledged")
        os.kill(serve.proc.pid, signal.SIGSTOP)
        try:
            for i in range(2, 1001):
                client.log(Severity.INFO, f"n={i}")
        finally:
            os.kill(serve.proc.pid, signal.SIGCONT)
        require(client.flush(20), "every record settled after SIGCONT")
    finally:
        client.close()
    check = check_lines(
        "stalled",
        log_path(serve.data, "stalled").read_text().splitlines(),
        expected=1000,
        allow_drops=True,
        content=numbered_message,
    )
    ls = umonitor("ls", "-o", "json", "--data", str(serve.data))
    row = next(json.loads(line) for line in ls.stdout.splitlines() if '"stalled"' in line)
    require(check.records == 1000 and check.missing == 0, "nothing lost: " + check.summary())
    # Nothing was lost, so nothing may be reported lost: not by the guest, not in the
    # file, not by ls.
    assert (client.session.dropped, check.dropped, row["dropped"]) == (0, 0, 0), check.summary()
