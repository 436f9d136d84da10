"""Hostile bytes against a running collector while well-behaved guests keep logging.

Four real C guests log numbered records through the whole test. Meanwhile attacker
threads, each on its own connections, send random bytes, truncated frames, huge
declared lengths, frames in the wrong direction or order, valid frames with hostile
contents and names, half frames held open (slowloris), and a PING flood from a peer
that never reads its PONGs. Afterwards: every guest's records are stored exactly
once and in order, the collector is still serving and stops cleanly, the hostile
instances' files hold exactly what they were sent (escaped, inside the data
directory), every attack was counted, and the collector's peak RSS stayed bounded.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.integration.conftest import Collector, file_seqs, start_collector, wait_for
from umonitor.protocol import frame_codec as fc
from umonitor.records import Kind, Record, Severity
from umonitor.store import layout
from umonitor.store.names import sanitize_instance_name

GUESTS = 4
PER_GUEST = 20_000
PING_FLOOD = 128 << 20  # bytes of PING frames the unread flooder tries to push
RSS_BOUND_KIB = 160 << 10  # what the collector may reach at its peak (VmHWM)
HOSTILE_NAMES = [
    "../../../../etc/cron.d/x",
    "/absolute/path",
    "nul\x00byte",
    "x" * 255,
    "gооd-0",  # Cyrillic o: a look-alike of a guest's name
    ".hidden",
    "con",
    "név-ünïcode",
]


def counters(collector: Collector) -> dict[str, int]:
    """Limit hits and protocol errors as the status file behind `umonitor ls` has them.

    Read directly: `ls` first brings the index up to date, which after this much
    garbage takes a while (tests/integration/test_limits.py checks `ls` itself).
    """
    try:
        status = json.loads((collector.data / layout.STATUS).read_text())
    except (OSError, ValueError):
        return {}  # being replaced right now
    return {**status.get("limits", {}), "protocol_errors": status.get("protocol_errors", 0)}


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc status")


def exchange(port: int, payload: bytes, *, linger: float = 0.0) -> bytes:
    """Send ``payload`` on a new connection, then read until the collector closes it."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        try:
            s.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            return b""
        if linger:
            time.sleep(linger)
            return b""  # closed by us, in the middle of whatever was sent
        s.settimeout(10)
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return data


def hello(name: str) -> bytes:
    return fc.encode_hello(fc.Hello(name, os.urandom(16)))


def header(length: int, ftype: int) -> bytes:
    return struct.pack(">IB", length, ftype)


def broken_attacks(rng: random.Random) -> list[bytes]:
    """Each breaks the protocol: the collector must answer ERROR (native) and close."""
    record = fc.encode(Record(1, Severity.INFO, "x" * 100))
    return [
        fc.PREFACE + b"\xff\xff\xff\xff\x02",  # declared length far over the limit
        fc.PREFACE + header(0x7FFF_FFFF, 2) + os.urandom(1000),
        fc.PREFACE + hello("t") + header(5, 2) + b"\x00" * 4,  # record body too short
        fc.PREFACE + record,  # RECORD before HELLO
        fc.PREFACE + hello("t") + hello("t"),  # second HELLO
        fc.PREFACE + header(1, 0x99),  # unknown type
        fc.PREFACE + hello("t") + fc.encode(fc.Ack(5)),  # a host's frame from a guest
        fc.PREFACE + hello("t") + fc.encode(fc.SetLevel(Severity.DEBUG)),
        fc.PREFACE + header(0, 2),  # empty frame: no type byte
        fc.PREFACE + header(2, 1) + b"\x07",  # HELLO of one byte
        fc.PREFACE + hello("t") + header(3, 2) + bytes((0xFF, 0xFF)),
        fc.PREFACE + hello("t") + fc.encode(Record(1, Severity.INFO, "ok"))[:-1] + b"\xff" * 9,
        fc.PREFACE[:2] + rng.randbytes(rng.randint(1, 5000)),
        b"x" * 70_000,  # a text line longer than the collector takes
    ]


def truncated_attacks(rng: random.Random) -> list[bytes]:
    """Valid beginnings cut anywhere; the sender then goes away."""
    whole = (
        fc.PREFACE
        + hello("cut")
        + b"".join(fc.encode(Record(i, Severity.INFO, f"cut {i}")) for i in range(1, 50))
    )
    return [whole[: rng.randint(1, len(whole) - 1)] for _ in range(5)] + [
        fc.PREFACE + hello("cut") + header(60_000, 2) + rng.randbytes(rng.randint(0, 59_000))
    ]


NASTY = "line\nbreak\r\n# dropped 99 1..99\x00\x1b[31mred\u2028\x85\ud800".encode(
    "utf-8", "surrogatepass"
).decode("utf-8", "replace")


def hostile_records(name: str, count: int) -> bytes:
    """Valid frames whose contents try to break the store's lines and files."""
    frames = [fc.PREFACE, hello(name)]
    for seq in range(1, count + 1):
        frames.append(
            fc.encode(
                Record(
                    seq,
                    Severity(seq % 8),
                    NASTY,
                    Kind.LOG,
                    mono_ns=2**64 - 1,
                    wall_ns=-(2**63),
                    file="../" * 100 + "\n",
                    line=2**32 - 1,
                    function="f\x00",
                    fields=tuple((f"k{i}=\n", "v\n" * 10) for i in range(255)),
                )
            )
        )
    frames.append(fc.encode(fc.Dropped(2**64 - 1, 2**64 - 1)))
    frames.append(fc.encode(fc.Bye()))
    return b"".join(frames)


class Attacker(threading.Thread):
    """Runs one kind of attack over and over until told to stop; keeps what it saw."""

    def __init__(self, run: Callable[[random.Random], None], seed: int) -> None:
        super().__init__(daemon=True)
        self.run_once = run
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.rounds = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.run_once(self.rng)
                self.rounds += 1
        except BaseException as exc:  # reported by the test
            self.error = exc


def unread_ping_flood(port: int) -> int:
    """PINGs, never reading a PONG, until the collector cuts the connection.

    Returns the bytes that went out: far fewer than ``PING_FLOOD`` when the collector
    stops reading a peer that does not read.

    Run in a process of its own (``flood_apart``): between two partial sends the
    collector holds half a frame, and a flooder starved of this process's GIL by the
    attacker threads for longer than the frame timeout would be cut as slow instead.
    """
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        s.connect(("127.0.0.1", port))
        s.sendall(fc.PREFACE + hello("flooder"))
        chunk = memoryview(b"".join(fc.encode(fc.Ping(i)) for i in range(5000)))
        sent = at = 0
        s.settimeout(2)
        try:
            while sent < PING_FLOOD:
                try:
                    n = s.send(chunk[at:])  # whole frames, whatever each call takes
                except TimeoutError:
                    continue  # not read now: push on until cut
                sent += n
                at = (at + n) % len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # cut
        return sent


def flood_apart(port: int) -> int:
    """``unread_ping_flood`` in a fresh interpreter (spawned: this one runs threads)."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        # Bounded: a flooder the collector never cuts is a failure, not a hang.
        return int(pool.apply_async(unread_ping_flood, (port,)).get(timeout=300))


def check(
    collector: Collector,
    replies: list[bytes],
    hostile: dict[str, bytes],
    flood_sent: int,
    held: int,
) -> None:
    """What must hold once the attacks are over, the collector still running."""
    # The well-behaved guests lost nothing and got nothing twice.
    for i in range(GUESTS):
        assert file_seqs(collector.data, f"good-{i}") == list(range(1, PER_GUEST + 1))

    # Every broken native frame was answered with an ERROR before the close, and counted.
    native = [r for r in replies if r]
    assert native
    for reply in native:
        decoder = fc.FrameDecoder(fc.Peer.HOST, expect_preface=False)
        decoder.receive_data(reply)
        assert any(isinstance(e, fc.ErrorFrame) for e in decoder.next_events()), reply
    wait_for(lambda: counters(collector).get("protocol_errors", 0) >= len(native), what="count")

    # Hostile contents and names: acknowledged, each record one line, inside data/.
    for name, reply in hostile.items():
        decoder = fc.FrameDecoder(fc.Peer.HOST, expect_preface=False)
        decoder.receive_data(reply)
        acks = [e.seq for e in decoder.next_events() if isinstance(e, fc.Ack)]
        assert acks and acks[-1] == 2**64 - 1, (name, reply)  # its own DROPPED says so
        rows = collector.records(sanitize_instance_name(name))
        assert [r["seq"] for r in rows] == list(range(1, 21)), name
        assert all(len(r["fields"]) == 255 for r in rows), name  # type: ignore[arg-type]
        assert all(r["message"] == NASTY for r in rows), name
    files = {p.resolve() for p in collector.data.rglob("*") if p.is_file()}
    assert all(collector.data.resolve() in p.parents for p in files)

    # The unread flooder was no longer read, then cut (it got far less than it pushed);
    # the half frames held were cut, each counted under a time limit. Which limit the
    # flooder's cut is counted under is checked alone in test_limits.py: in this mix it
    # was once counted under another one, which the sum below does not tell apart.
    assert flood_sent < PING_FLOOD, flood_sent

    def cuts() -> int:
        found = counters(collector)
        return sum(found.get(limit, 0) for limit in ("unread", "slow", "handshake"))

    try:
        wait_for(lambda: cuts() >= held, timeout=60, what="every held half frame's cut counted")
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}: {counters(collector)}, {held} held, {flood_sent} bytes sent"
        ) from None


def test_live_garbage_while_guests_log(tmp_path: Path, c_programs: dict[str, Path]) -> None:
    collector = start_collector(
        tmp_path / "data", "--frame-timeout", "3", "--handshake-timeout", "3"
    )
    port = collector.port
    guests = [
        subprocess.Popen(
            [
                str(c_programs["numbered_guest"]),
                "127.0.0.1",
                str(port),
                f"good-{i}",
                str(PER_GUEST),
                "--window=500",
                "--rate=2000",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(GUESTS)
    ]
    replies: list[bytes] = []

    def broken(rng: random.Random) -> None:
        for attack in broken_attacks(rng):
            replies.append(exchange(port, attack))

    def truncated(rng: random.Random) -> None:
        for attack in truncated_attacks(rng):
            exchange(port, attack, linger=rng.random() * 0.05)

    def random_bytes(rng: random.Random) -> None:
        exchange(port, rng.randbytes(rng.randint(1, 5000)), linger=0.01)

    held: list[socket.socket] = []

    def slowloris(rng: random.Random) -> None:
        if len(held) < 200:  # half frames and half lines, held open
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(rng.choice([fc.PREFACE + hello("slow")[:7], b"half a line", fc.PREFACE]))
            held.append(s)
        time.sleep(0.01)

    attackers = [
        Attacker(broken, 1),
        Attacker(truncated, 2),
        Attacker(random_bytes, 3),
        Attacker(slowloris, 4),
    ]
    try:
        for a in attackers:
            a.start()
        hostile = {name: exchange(port, hostile_records(name, 20)) for name in HOSTILE_NAMES}
        flood_sent = flood_apart(port)
        for proc in guests:
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, (out, err)
        for a in attackers:
            a.stop.set()
        for a in attackers:
            a.join(timeout=60)
            assert a.error is None, a.error
            assert a.rounds > 0
        peak = peak_rss_kib(collector.proc.pid)
        check(collector, replies, hostile, flood_sent, len(held))
    finally:
        for a in attackers:
            a.stop.set()
        for s in held:
            s.close()
        for proc in guests:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        status = collector.stop()
    assert status == 0, "the collector did not stop cleanly"
    assert peak < RSS_BOUND_KIB, f"collector peak RSS {peak} KiB"
    assert collector.cli("ls").returncode == 0  # and `ls` reads what it left
