"""Memory benchmark: the collector's RSS with 1,000 guests connected and under a garbage flood.

Starts ``umonitor serve --open`` on a fresh data directory and reads its resident set
(VmRSS, and VmHWM: the peak) from /proc/PID/status, in two scenarios:

guests: --guests native-protocol connections, each from its own address in
127.1.0.0/16, send the preface, a HELLO and --records records, wait for the ACK and
stay connected for --hold seconds, each logging --rate more records/s meanwhile.
Prints the idle collector's RSS, its RSS with every guest connected and acknowledged,
the peak, KiB per connection, and checks every guest's app.log: each number it sent
stored once.

flood: --garbage hostile connections from 32 addresses, opened in --waves waves over
the first half of --seconds and held (or closed) until the end: random bytes; the
preface and a frame header declaring 4 GiB (must be refused); the preface, a HELLO
and a RECORD declaring 60,000 bytes of which 59,000 are sent (the collector holds at
most --max-frame, 64 KiB, per connection); a 65,535-byte text line that never ends.
Meanwhile connections are opened and at once closed or reset (--churn per second)
and --normal C guests (tests/c/numbered_guest.c) log numbered records at
--normal-rate each. The flood runs --rounds times on the same collector, so that
memory kept after one round shows as growth in the next. Prints the RSS of each
round and the peak, what happened to the connections, the collector's own counters
(``umonitor ls -o json`` and its status file), and checks that the normal guests lost
nothing: every number 1..N stored once.

    python bench/memory.py [--scenario guests|flood] [--guests 1000] [--garbage 2000]
                           [--seconds 10] [--rounds 2] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.integration.conftest, when run as bench/memory.py

from procstat import status_kib  # noqa: E402
from tests.integration.conftest import file_seqs  # noqa: E402

from numbered import Serve, build_guest  # noqa: E402
from umonitor.errors import ProtocolError  # noqa: E402
from umonitor.protocol import frame_codec as fc  # noqa: E402
from umonitor.records import Record, Severity  # noqa: E402
from umonitor.store import layout  # noqa: E402

HOST = "127.0.0.1"
GARBAGE_SOURCES = 32
KINDS = ("random", "huge-frame", "partial-frame", "endless-line")
PARTIAL_DECLARED = 60_000  # the RECORD frame's length field
PARTIAL_SENT = 59_000  # of which this much follows
ENDLESS_LINE = 65_535  # one byte under the collector's default --max-frame
CHURN = {"open-close": "closed", "open-reset": "reset"}
HUGE_FRAME = b"\xff\xff\xff\xff" + bytes([fc.FrameType.RECORD])


def source(net: int, index: int) -> str:
    """The index-th client address in 127.NET.0.0/16."""
    return f"127.{net}.{index // 250}.{index % 250 + 1}"


def rss_kib(serve: Serve) -> int:
    assert serve.proc is not None
    return status_kib(serve.proc.pid, "VmRSS")


def hwm_kib(serve: Serve) -> int:
    assert serve.proc is not None
    return status_kib(serve.proc.pid, "VmHWM")


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def raise_open_files(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(
            f"this needs about {needed} open files but the hard limit is {hard}; "
            "raise it (ulimit -Hn) or ask for fewer connections"
        )
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def umonitor_ls(data: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, "-m", "umonitor", "ls", "-o", "json", "--data", str(data)],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"umonitor ls failed: {out.stderr.strip()}")
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def collector_line(rows: list[dict[str, Any]]) -> dict[str, int]:
    found = [r["collector"] for r in rows if "collector" in r]
    return dict(found[0]) if found else {}


def status_file(data: Path) -> dict[str, Any]:
    try:
        loaded = json.loads((data / layout.STATUS).read_text())
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def seq_check(data: Path, name: str, sent: int) -> tuple[int, int, int]:
    """Stored records of ``name``, numbers 1..sent missing, numbers stored twice or more."""
    try:
        seqs = file_seqs(data, name)
    except OSError:
        return 0, sent, 0
    counts = Counter(seqs)
    missing = sum(1 for n in range(1, sent + 1) if n not in counts)
    twice = sum(1 for c in counts.values() if c > 1)
    return len(seqs), missing, twice


async def connect(port: int, local: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(HOST, port, local_addr=(local, 0), limit=1 << 17)


# -- scenario 1: many connected guests ------------------------------------------------


@dataclass
class Guest:
    """One native-protocol connection that logs numbered records and reads its ACKs."""

    name: str
    local: str
    boot: bytes = field(default_factory=lambda: os.urandom(16))
    sent: int = 0
    acked: int = 0
    closed_by_collector: bool = False
    error: str = ""
    writer: asyncio.StreamWriter | None = None
    reader_task: asyncio.Task[None] | None = None

    def _record(self) -> bytes:
        self.sent += 1
        return fc.encode(Record(self.sent, Severity.INFO, f"{self.name} record {self.sent}"))

    async def start(self, port: int, records: int) -> None:
        reader, self.writer = await connect(port, self.local)
        hello = fc.encode_hello(fc.Hello(self.name, self.boot))
        self.writer.write(fc.PREFACE + hello + b"".join(self._record() for _ in range(records)))
        await self.writer.drain()
        self.reader_task = asyncio.create_task(self._read(reader))

    def log(self) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(self._record())

    async def _read(self, reader: asyncio.StreamReader) -> None:
        decoder = fc.FrameDecoder(fc.Peer.HOST, expect_preface=False)
        try:
            while data := await reader.read(1 << 16):
                decoder.receive_data(data)
                for event in decoder.next_events():
                    if isinstance(event, fc.Ack):
                        self.acked = max(self.acked, event.seq)
                    elif isinstance(event, fc.ErrorFrame):
                        self.error = event.reason
        except (OSError, ProtocolError) as exc:
            self.error = self.error or str(exc)
        self.closed_by_collector = True

    async def close(self) -> None:
        if self.reader_task is not None:
            self.reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reader_task
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()


async def until(check: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(step)
    return True


async def guests_scenario(args: argparse.Namespace, serve: Serve) -> dict[str, Any]:
    baseline = rss_kib(serve)
    guests = [Guest(f"mem-{i}", source(1, i)) for i in range(args.guests)]
    started = time.perf_counter()
    gate = asyncio.Semaphore(256)  # connections being set up at once

    async def start(guest: Guest) -> BaseException | None:
        async with gate:
            try:
                await guest.start(serve.port, args.records)
            except OSError as exc:
                return exc
        return None

    failures = [f for f in await asyncio.gather(*(start(g) for g in guests)) if f is not None]
    if failures:
        raise SystemExit(f"{len(failures)} guests could not connect, first: {failures[0]}")
    all_acked = await until(lambda: all(g.acked >= g.sent for g in guests), 60)
    setup_seconds = time.perf_counter() - started
    if not all_acked:
        late = sum(g.acked < g.sent for g in guests)
        raise SystemExit(f"{late} guests were not acknowledged within 60 s")
    await asyncio.sleep(1.0)  # let the collector settle (commits, status file)
    connected = rss_kib(serve)
    listed = 0

    def seen_connected() -> bool:
        nonlocal listed
        listed = sum(1 for r in umonitor_ls(serve.data) if r.get("connected") is True)
        return listed == int(args.guests)

    await until(seen_connected, 15, step=0.5)

    # Hold: every guest logs args.rate records/s, spread evenly over time and guests.
    hold_start = time.monotonic()
    timeline = [connected]
    turn = 0
    next_sample = hold_start + 1.0
    while (now := time.monotonic()) < hold_start + args.hold:
        due = int((now - hold_start) * args.rate * args.guests)
        while turn < due:
            guests[turn % args.guests].log()
            turn += 1
        if now >= next_sample:
            timeline.append(rss_kib(serve))
            next_sample += 1.0
        await asyncio.sleep(0.05)
    await until(lambda: all(g.acked >= g.sent for g in guests), 30)
    end = rss_kib(serve)
    rows = umonitor_ls(serve.data)
    peak = hwm_kib(serve)
    dropped_out = sum(g.closed_by_collector for g in guests)
    errors = [g.error for g in guests if g.error]
    await asyncio.gather(*(g.close() for g in guests))
    return {
        "baseline": baseline,
        "connected": connected,
        "end": end,
        "peak": peak,
        "timeline": timeline,
        "listed": listed,
        "setup_seconds": setup_seconds,
        "guests": guests,
        "dropped_out": dropped_out,
        "errors": errors,
        "collector": collector_line(rows),
    }


def run_guests(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    data = work / "guests"
    serve = Serve(data, ["--open"])
    serve.start()
    try:
        time.sleep(1.0)  # idle: imports done, indexer started
        found = asyncio.run(guests_scenario(args, serve))
    finally:
        status = serve.stop()
    guests: list[Guest] = found["guests"]
    stored = missing = twice = 0
    for g in guests:
        s, m, t = seq_check(data, g.name, g.sent)
        stored, missing, twice = stored + s, missing + m, twice + t
    sent = sum(g.sent for g in guests)
    per_conn = (found["connected"] - found["baseline"]) / args.guests
    figures: dict[str, Any] = {
        "scenario": "guests",
        "guests": args.guests,
        "sources": len({g.local for g in guests}),
        "records_first": args.records,
        "rate_per_guest": args.rate,
        "hold_s": args.hold,
        "setup_s": round(found["setup_seconds"], 2),
        "rss_baseline_kib": found["baseline"],
        "rss_connected_kib": found["connected"],
        "rss_end_of_hold_kib": found["end"],
        "rss_peak_kib": max(found["peak"], serve.peak_rss_kib),
        "kib_per_connection": round(per_conn, 1),
        "rss_timeline_kib": found["timeline"],
        "connected_in_ls": found["listed"],
        "closed_by_collector": found["dropped_out"],
        "records_sent": sent,
        "records_acked": sum(g.acked for g in guests),
        "records_stored": stored,
        "missing": missing,
        "duplicated": twice,
        "collector_counters": found["collector"],
        "collector_exit": status,
    }
    problems = []
    if found["dropped_out"]:
        problems.append(
            f"the collector closed {found['dropped_out']} guests (first: {found['errors'][:1]})"
        )
    if missing or twice or stored != sent:
        problems.append(f"stored {stored} of {sent} sent: missing {missing}, duplicated {twice}")
    if found["listed"] != args.guests:
        problems.append(f"ls showed {found['listed']} connected, not {args.guests}")
    figures["problems"] = problems
    return figures


def print_guests(f: dict[str, Any]) -> None:
    print(
        f"guests: {f['guests']} native connections from {f['sources']} addresses, "
        f"{f['records_first']} records each, then {f['rate_per_guest']:g} records/s each "
        f"for {f['hold_s']:g} s"
    )
    timeline = " ".join(f"{k / 1024:.0f}" for k in f["rss_timeline_kib"])
    rows = [
        ("RSS idle (baseline)", mib(f["rss_baseline_kib"])),
        (
            f"RSS, {f['guests']} connected",
            f"{mib(f['rss_connected_kib'])} (all acknowledged {f['setup_s']:.2f} s after "
            f"the first connect; ls shows {f['connected_in_ls']} connected)",
        ),
        ("RSS, end of hold", f"{mib(f['rss_end_of_hold_kib'])} (each second: {timeline} MiB)"),
        ("peak RSS (VmHWM)", mib(f["rss_peak_kib"])),
        ("per connection", f"{f['kib_per_connection']:.1f} KiB"),
        (
            "records",
            f"{f['records_stored']} stored of {f['records_sent']} sent "
            f"({f['records_acked']} acked): missing {f['missing']}, "
            f"duplicated {f['duplicated']}",
        ),
        ("closed by collector", str(f["closed_by_collector"])),
        ("collector counters", json.dumps(f["collector_counters"]) or "{}"),
    ]
    print_rows(rows, f["problems"])


# -- scenario 2: garbage flood ---------------------------------------------------------


@dataclass
class Outcome:
    kind: str
    connected: bool = False
    closed_by_collector: bool = False
    error_code: int | None = None
    held: bool = False


async def hold_open(reader: asyncio.StreamReader, release: asyncio.Event, outcome: Outcome) -> None:
    """Read until the collector closes or ``release`` is set; note any ERROR frame."""
    decoder = fc.FrameDecoder(fc.Peer.HOST, expect_preface=False)
    released = asyncio.create_task(release.wait())
    try:
        while True:
            read = asyncio.create_task(reader.read(1 << 16))
            await asyncio.wait({read, released}, return_when=asyncio.FIRST_COMPLETED)
            if not read.done():
                read.cancel()
                outcome.held = True
                return
            try:
                data = read.result()
            except OSError:
                outcome.closed_by_collector = True
                return
            if not data:
                outcome.closed_by_collector = True
                return
            decoder.receive_data(data)
            with contextlib.suppress(ProtocolError):
                for event in decoder.next_events():
                    if isinstance(event, fc.ErrorFrame) and outcome.error_code is None:
                        outcome.error_code = int(event.code)
    finally:
        released.cancel()


def payload(kind: str, index: int, rng: random.Random) -> tuple[bytes, bool]:
    """The bytes a hostile connection sends, and whether it then stays open."""
    if kind == "random":
        return rng.randbytes(rng.randint(1, 1 << 16)), index % 8 < 4
    if kind == "huge-frame":
        return fc.PREFACE + HUGE_FRAME, True
    if kind == "partial-frame":
        hello = fc.encode_hello(fc.Hello(f"flood-{index % GARBAGE_SOURCES}", os.urandom(16)))
        header = struct.pack(">IB", PARTIAL_DECLARED, fc.FrameType.RECORD)
        return fc.PREFACE + hello + header + bytes(PARTIAL_SENT), True
    line = (b"a line that never ends " * (ENDLESS_LINE // 23 + 1))[:ENDLESS_LINE]
    return line, True


async def hostile(
    port: int, index: int, kind: str, rng: random.Random, release: asyncio.Event
) -> Outcome:
    outcome = Outcome(kind)
    data, stay = payload(kind, index, rng)
    try:
        reader, writer = await connect(port, source(2, index % GARBAGE_SOURCES))
    except OSError:
        return outcome
    outcome.connected = True
    try:
        writer.write(data)
        await writer.drain()
        if stay:
            await hold_open(reader, release, outcome)
    except OSError:
        outcome.closed_by_collector = True
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return outcome


async def churn_one(port: int, index: int) -> Outcome:
    outcome = Outcome("open-close" if index % 2 else "open-reset")
    try:
        _reader, writer = await connect(port, source(3, index % GARBAGE_SOURCES))
    except OSError:
        return outcome
    outcome.connected = True
    if index % 2 == 0:
        sock = writer.get_extra_info("socket")
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return outcome


async def flood(args: argparse.Namespace, serve: Serve, rng: random.Random) -> dict[str, Any]:
    release = asyncio.Event()
    start = time.monotonic()
    stop_at = start + args.seconds
    tasks: list[asyncio.Task[Outcome]] = []
    timeline: list[int] = []

    async def waves() -> None:
        per_wave = -(-args.garbage // args.waves)
        spacing = args.seconds / 2 / args.waves
        for wave in range(args.waves):
            first = wave * per_wave
            for i in range(first, min(first + per_wave, args.garbage)):
                kind = KINDS[i % len(KINDS)]
                tasks.append(asyncio.create_task(hostile(serve.port, i, kind, rng, release)))
            await asyncio.sleep(max(0.0, start + (wave + 1) * spacing - time.monotonic()))

    async def churn() -> None:
        n = 0
        while (now := time.monotonic()) < stop_at:
            due = int((now - start) * args.churn)
            while n < due:
                tasks.append(asyncio.create_task(churn_one(serve.port, n)))
                n += 1
            await asyncio.sleep(0.02)

    async def sample() -> None:
        while time.monotonic() < stop_at:
            timeline.append(rss_kib(serve))
            await asyncio.sleep(1.0)

    await asyncio.gather(waves(), churn(), sample())
    held_rss = rss_kib(serve)
    release.set()
    outcomes = await asyncio.gather(*tasks)
    return {"outcomes": outcomes, "held_rss": held_rss, "timeline": timeline}


def run_flood(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    data = work / "flood"
    guest = build_guest(work)
    serve = Serve(data, ["--open"])
    serve.start()
    count = max(1, round(args.normal_rate * args.seconds * args.rounds))
    rng = random.Random(args.seed)
    outcomes: list[Outcome] = []
    rounds: list[dict[str, Any]] = []
    names = [f"steady-{i}" for i in range(args.normal)]
    try:
        time.sleep(1.0)
        baseline = rss_kib(serve)
        normal = [
            subprocess.Popen(
                [str(guest), HOST, str(serve.port), name, str(count),
                 f"--rate={args.normal_rate}", "--flush-ms=60000"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )
            for name in names
        ]  # fmt: skip
        for _ in range(args.rounds):
            found = asyncio.run(flood(args, serve, rng))
            outcomes += found["outcomes"]
            time.sleep(1.0)  # the collector lets go of what the flood left
            rounds.append(
                {
                    "rss_held_kib": found["held_rss"],
                    "rss_after_kib": rss_kib(serve),
                    "rss_peak_kib": hwm_kib(serve),
                    "rss_timeline_kib": found["timeline"],
                }
            )
        outputs = []
        for proc in normal:
            try:
                outputs.append(proc.communicate(timeout=120)[0].strip())
            except subprocess.TimeoutExpired:
                proc.kill()
                outputs.append("did not finish within 120 s")
        after = rss_kib(serve)
        time.sleep(0.5)  # the status file is rewritten shortly after changes
        rows = umonitor_ls(data)
        status = status_file(data)
        peak = hwm_kib(serve)
    finally:
        exit_status = serve.stop()
    by_kind: dict[str, dict[str, int]] = {}
    for o in outcomes:
        k = by_kind.setdefault(
            o.kind,
            {"attempted": 0, "connect_failed": 0, "closed_by_collector": 0, "error_frame": 0,
             "held_to_end": 0},
        )  # fmt: skip
        k["attempted"] += 1
        k["connect_failed"] += not o.connected
        k["closed_by_collector"] += o.closed_by_collector
        k["error_frame"] += o.error_code is not None
        k["held_to_end"] += o.held
    normal_figures = []
    problems = []
    for name, proc, out in zip(names, normal, outputs, strict=True):
        stored, missing, twice = seq_check(data, name, count)
        normal_figures.append(
            {"name": name, "sent": count, "stored": stored, "lost": missing, "duplicated": twice}
        )
        if proc.returncode != 0:
            problems.append(f"{name} exited {proc.returncode}: {out[-200:]}")
        if missing or twice or stored != count:
            problems.append(f"{name}: {stored} of {count} stored, lost {missing}, twice {twice}")
    huge = by_kind.get("huge-frame", {})
    if huge and huge["closed_by_collector"] + huge["connect_failed"] != huge["attempted"]:
        problems.append("not every huge-frame connection was refused")
    garbage_instances, garbage_records = count_garbage(data, set(names))
    return {
        "scenario": "flood",
        "garbage": args.garbage,
        "waves": args.waves,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "churn_per_s": args.churn,
        "attempted": len(outcomes),
        "by_kind": by_kind,
        "rss_baseline_kib": baseline,
        "rss_after_kib": after,
        "rss_peak_kib": max(peak, serve.peak_rss_kib),
        "per_round": rounds,
        "collector_counters": collector_line(rows),
        "protocol_errors": status.get("protocol_errors"),
        "garbage_instances": garbage_instances,
        "garbage_records_stored": garbage_records,
        "normal_guests": normal_figures,
        "lost": sum(n["lost"] for n in normal_figures),
        "collector_exit": exit_status,
        "problems": problems,
    }


def count_garbage(data: Path, normal: set[str]) -> tuple[int, int]:
    """Instances the flood created and the records (text lines, mostly) stored for them."""
    instances = records = 0
    root = data / "instances"
    if not root.is_dir():
        return 0, 0
    for inst in root.iterdir():
        if inst.name in normal:
            continue
        instances += 1
        for path in inst.glob("app.log*"):
            with open(path, "rb") as lines:
                records += sum(1 for line in lines if not line.startswith(b"#"))
    return instances, records


def print_flood(f: dict[str, Any]) -> None:
    print(
        f"flood: {f['rounds']} x {f['seconds']:g} s of {f['garbage']} hostile connections in "
        f"{f['waves']} waves from {GARBAGE_SOURCES} addresses and {f['churn_per_s']:g} "
        f"opened and closed/reset per s; {len(f['normal_guests'])} normal guests beside them"
    )
    rows = [("RSS idle (baseline)", mib(f["rss_baseline_kib"]))]
    for n, r in enumerate(f["per_round"], 1):
        timeline = " ".join(f"{k / 1024:.0f}" for k in r["rss_timeline_kib"])
        rows.append(
            (
                f"round {n}",
                f"RSS held open {mib(r['rss_held_kib'])}, 1 s after {mib(r['rss_after_kib'])}, "
                f"peak so far {mib(r['rss_peak_kib'])} (each second: {timeline} MiB)",
            )
        )
    rows += [
        ("RSS at the end", f"{mib(f['rss_after_kib'])} (normal guests done)"),
        ("peak RSS (VmHWM)", mib(f["rss_peak_kib"])),
        ("connections", f"{f['attempted']} attempted"),
    ]
    for kind, k in f["by_kind"].items():
        if kind in CHURN:
            what = f"{k['attempted'] - k['connect_failed']} {CHURN[kind]} at once"
        else:
            what = (
                f"{k['closed_by_collector']} closed by the collector ({k['error_frame']} with "
                f"an ERROR frame), {k['held_to_end']} still open at the end"
            )
        rows.append(
            (f"  {kind}", f"{k['attempted']}: {what}, {k['connect_failed']} failed to connect")
        )
    rows += [
        (
            "collector counters",
            f"{json.dumps(f['collector_counters'])} (ls); protocol errors "
            f"{f['protocol_errors']} (status file)",
        ),
        (
            "garbage stored",
            f"{f['garbage_records_stored']} records (text) in {f['garbage_instances']} instances",
        ),
    ]
    for n in f["normal_guests"]:
        rows.append(
            (
                f"  {n['name']}",
                f"{n['stored']} of {n['sent']} stored, lost {n['lost']}, "
                f"duplicated {n['duplicated']}",
            )
        )
    rows.append(("lost", str(f["lost"])))
    print_rows(rows, f["problems"])


def print_rows(rows: list[tuple[str, str]], problems: list[str]) -> None:
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"  {label.ljust(width)}  {value}")
    for problem in problems:
        print(f"  problem: {problem}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=["guests", "flood", "both"], default="both")
    parser.add_argument("--guests", type=int, default=1000, help="connected guests")
    parser.add_argument("--records", type=int, default=10, help="records each guest sends first")
    parser.add_argument("--rate", type=float, default=1.0,
                        help="records/s per guest while connected (0: none)")  # fmt: skip
    parser.add_argument("--hold", type=float, default=10.0, help="seconds the guests stay")
    parser.add_argument("--garbage", type=int, default=2000, help="hostile connections")
    parser.add_argument("--waves", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the flood")
    parser.add_argument("--rounds", type=int, default=2,
                        help="floods one after the other on the same collector")  # fmt: skip
    parser.add_argument("--churn", type=float, default=200.0,
                        help="connections opened and closed (or reset) at once, per s")  # fmt: skip
    parser.add_argument("--normal", type=int, default=4, help="normal guests during the flood")
    parser.add_argument("--normal-rate", type=int, default=100, help="records/s per normal guest")
    parser.add_argument("--seed", type=int, default=1, help="for the random garbage")
    parser.add_argument("--keep", type=Path, help="keep the data directories under this one")
    parser.add_argument("--json", action="store_true", help="one JSON line per scenario as well")
    args = parser.parse_args()
    if not 1 <= args.guests <= 16384:
        parser.error("--guests must be between 1 and 16384 (the collector's --max-connections)")
    if args.records < 1 or args.rate < 0 or args.hold < 0:
        parser.error("--records must be at least 1, --rate and --hold not negative")
    if args.garbage < 0 or args.waves < 1 or args.rounds < 1 or args.seconds <= 0 or args.churn < 0:
        parser.error("--garbage and --churn must not be negative, --waves and --rounds at least 1, "
                     "--seconds above 0")  # fmt: skip
    if args.normal < 0 or args.normal_rate < 1:
        parser.error("--normal must not be negative and --normal-rate at least 1")
    if args.keep is not None and args.keep.exists() and any(args.keep.iterdir()):
        parser.error(f"{args.keep} is not empty")
    raise_open_files(max(args.guests, args.garbage + 2 * int(args.churn)) + 256)

    results = []
    with tempfile.TemporaryDirectory(prefix="umon-memory-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.scenario in ("guests", "both"):
            results.append(run_guests(args, work))
            print_guests(results[-1])
        if args.scenario in ("flood", "both"):
            results.append(run_flood(args, work))
            print_flood(results[-1])
    if args.json:
        for result in results:
            print(json.dumps(result))
    if any(r["problems"] for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
