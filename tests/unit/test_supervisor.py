"""The supervisor's decisions, with a fake clock and fake QEMU processes.

Each fake QEMU behaves as its scenario says for the accelerator on its command line
(abort at once like QEMU on an MSR it cannot set, hang without a console byte, or
boot and print), writing to the same console spool and stderr file a real one would.
Virtual time moves only when every task waits on the clock, so the assertions on
delays (backoff, the first-output bound, the stop grace) are exact.
"""

from __future__ import annotations

import asyncio
import heapq
import ipaddress
import itertools
import json
import os
import signal
import subprocess
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from umonitor.debug.crash_state import CaptureRequest
from umonitor.fleet import accel as accel_mod
from umonitor.fleet import crash_report
from umonitor.fleet import outcome as outcome_mod
from umonitor.fleet import supervisor as sup_mod
from umonitor.fleet.config import InstanceConfig
from umonitor.fleet.instance import Instance, State
from umonitor.fleet.outcome import Exit, classify, restart_delay, should_restart
from umonitor.fleet.qemu import ProbeResult
from umonitor.fleet.qmp import QmpEvent
from umonitor.fleet.supervisor import Supervisor
from umonitor.store import layout
from umonitor.store.writer import Store

TOKEN = "0123456789abcdef0123456789abcdef"
MSR = (
    "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69\n"
    "qemu-system-x86_64: ../../target/i386/kvm/kvm.c:3183: kvm_buf_set_msrs: "
    "Assertion `ret == cpu->kvm_msr_buf->nmsrs' failed.\n"
)


# -- the fakes ---------------------------------------------------------------------


class FakeClock:
    """Virtual time: ``sleep`` waits for ``advance`` to reach its deadline."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def monotonic(self) -> float:
        return self.now

    def time_ns(self) -> int:
        return int(self.now * 1e9)

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self.now + max(0.0, seconds), next(self._order), future))
        await future

    async def settle(self) -> None:
        """Let every task run until it waits (the rig runs no threads: see ``inline``)."""
        for _ in range(5):
            for _ in range(20):
                await asyncio.sleep(0)
            await asyncio.sleep(0.0005)

    async def run_until(self, done: Callable[[], bool], limit: float = 3600.0) -> None:
        """Advance virtual time, timer by timer, until ``done()`` (or ``limit`` s pass)."""
        end = self.now + limit
        await self.settle()
        while not done():
            while self._timers and self._timers[0][2].done():
                heapq.heappop(self._timers)
            assert self._timers, "nothing left to happen, and the condition is not met"
            when, _, future = heapq.heappop(self._timers)
            assert when <= end, f"not done after {limit} s of virtual time"
            self.now = max(self.now, when)
            future.set_result(None)
            await self.settle()


class FakeProcess:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._done = asyncio.Event()

    def exit(self, status: int) -> None:
        if self.returncode is None:
            self.returncode = status
            self._done.set()

    async def wait(self) -> int:
        await self._done.wait()
        assert self.returncode is not None
        return self.returncode

    def kill(self) -> None:
        self.exit(-signal.SIGKILL)


Behaviour = Callable[["FakeLauncher", FakeProcess, Path, Path], Coroutine[Any, Any, None]]


async def aborts(fl: FakeLauncher, proc: FakeProcess, spool: Path, stderr: Path) -> None:
    with open(stderr, "a") as err:
        err.write(MSR)
    proc.exit(-signal.SIGABRT)


async def hangs(fl: FakeLauncher, proc: FakeProcess, spool: Path, stderr: Path) -> None:
    pass  # runs, prints nothing, until killed


async def boots(fl: FakeLauncher, proc: FakeProcess, spool: Path, stderr: Path) -> None:
    await fl.clock.sleep(0.5)
    with open(spool, "ab") as out:
        out.write(
            f"Command line: console=ttyS0 umon.token={TOKEN}\nhello from the guest\n".encode()
        )


def crashes_after(seconds: float) -> Behaviour:
    async def run(fl: FakeLauncher, proc: FakeProcess, spool: Path, stderr: Path) -> None:
        await boots(fl, proc, spool, stderr)
        await fl.clock.sleep(seconds)
        proc.exit(1)

    return run


async def bad_kernel(fl: FakeLauncher, proc: FakeProcess, spool: Path, stderr: Path) -> None:
    with open(stderr, "a") as err:
        err.write("qemu-system-x86_64: could not load kernel '/nope/vmlinuz': No such file\n")
    proc.exit(1)


@dataclass
class FakeLauncher:
    clock: FakeClock
    behaviour: dict[str, Behaviour]
    started: list[tuple[float, str, list[str]]] = field(default_factory=list)
    procs: dict[int, FakeProcess] = field(default_factory=dict)
    killed: list[tuple[int, int]] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    honours_quit: bool = False  # QMP quit ends the process (a real QEMU does)
    powers_down: bool = False  # system_powerdown: the guest powers off (SHUTDOWN)
    _pids: itertools.count[int] = field(default_factory=lambda: itertools.count(4000))
    _events: dict[int, asyncio.Queue[QmpEvent]] = field(default_factory=dict)

    def emit(self, proc: FakeProcess, name: str, **data: Any) -> None:
        """A QMP event from this QEMU."""
        self._events.setdefault(proc.pid, asyncio.Queue()).put_nowait(QmpEvent(name, data, 0.0))

    def power_off(self, proc: FakeProcess, reason: str = "guest-shutdown") -> None:
        """The guest powers off under -no-shutdown: QEMU says so and holds the VM."""
        self.emit(proc, "SHUTDOWN", guest=True, reason=reason)

    async def events(self, inst: Instance) -> Any:
        queue = self._events.setdefault(inst.pid or -1, asyncio.Queue())
        while True:
            yield await queue.get()

    async def start(self, argv: list[str], stderr: Path) -> FakeProcess:
        accel = argv[argv.index("-accel") + 1]
        chardev = argv[argv.index("-chardev") + 1]
        spool = Path(chardev.split("logfile=")[1].split(",")[0])
        proc = FakeProcess(next(self._pids))
        self.procs[proc.pid] = proc
        self.started.append((self.clock.now, accel, argv))
        asyncio.get_running_loop().create_task(self.behaviour[accel](self, proc, spool, stderr))
        return proc

    def alive(self, pid: int | None, name: str) -> bool:
        proc = self.procs.get(pid or -1)
        return proc is not None and proc.returncode is None

    def kill(self, pid: int, sig: int) -> None:
        assert pid > 1, f"signal to pid {pid}"
        self.killed.append((pid, sig))
        if sig == signal.SIGTERM:
            self.procs[pid].exit(0)  # QEMU: "terminating on signal 15", status 0
        else:
            self.procs[pid].kill()

    async def command(self, inst: Instance, command: str) -> None:
        self.commands.append(command)  # by default this guest ignores power-down and quit
        proc = self.procs.get(inst.pid or -1)
        if proc is None or proc.returncode is not None:
            return
        if command == "quit" and self.honours_quit:
            proc.exit(0)
        elif command == "system_powerdown" and self.powers_down:
            self.power_off(proc)

    @property
    def accels(self) -> list[str]:
        return [accel for _, accel, _ in self.started]


FRAMES = [
    {"address": "0x115e14", "function": "write_through_null", "file": "/src/crash_app.c",
     "line": 56},
    {"address": "0x115e33", "function": "crash", "file": "/src/crash_app.c", "line": 62},
    {"address": "0x15d92b", "function": "main", "file": "/src/crash_app.c", "line": 104},
    {"address": "0x12bde1", "function": "do_main", "file": "/uk/boot.c", "line": 543,
     "inlined": True},
]  # fmt: skip


@dataclass
class FakeCapture:
    """The crash capture: what it was asked, how many ran at once, what it answers."""

    clock: FakeClock
    seconds: float = 0.0  # virtual time one capture takes
    hang: bool = False
    error: Exception | None = None
    requests: list[CaptureRequest] = field(default_factory=list)
    running: int = 0
    most: int = 0

    async def __call__(self, request: CaptureRequest) -> dict[str, Any]:
        self.requests.append(request)
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            if self.seconds:
                await self.clock.sleep(self.seconds)
            if self.hang:
                await asyncio.Event().wait()
            if self.error is not None:
                raise self.error
            return {
                "fault": {"reason": "page fault", "address": "0x0", "pc": "0x115e14",
                          "function": "write_through_null"},
                "backtrace": FRAMES,
                "backtrace_source": "gdbstub",
                "capture_errors": [],
                "symbols": {"path": str(request.symbols), "sha256": "ab" * 32},
            }  # fmt: skip
        finally:
            self.running -= 1


@dataclass
class Rig:
    """A supervisor over fakes, on a real store in a temporary data directory."""

    root: Path
    clock: FakeClock
    launcher: FakeLauncher
    sup: Supervisor
    store: Store
    said: list[str]
    probes: list[str]
    capture: FakeCapture

    def instance(self, name: str = "web", **config: Any) -> Instance:
        cfg = InstanceConfig(name, Path("/img/vmlinuz"), **config)
        inst = Instance(
            cfg,
            ipaddress.IPv4Interface("10.77.0.2/24"),
            ipaddress.IPv4Address("10.77.0.1"),
            None,
            self.sup.run_dir(name),
            token=TOKEN,
        )
        self.sup.add(inst)
        return inst

    async def stop_all(self) -> None:
        """Stop every instance, moving virtual time while the stop waits on it."""
        stopping = asyncio.get_running_loop().create_task(self.sup.stop_all())
        await self.clock.run_until(stopping.done)
        await stopping

    def console(self, name: str = "web") -> str:
        self.store.commit()
        path = layout.instance_dir(self.root, name) / layout.CONSOLE_LOG
        return path.read_text() if path.exists() else ""

    def files_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.root.rglob("*") if p.is_file())


T = TypeVar("T")


async def inline(func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    return func(*args, **kwargs)


@pytest.fixture
def rig_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Rig]:
    monkeypatch.setenv("UMONITOR_RUNTIME_DIR", str(tmp_path / "runtime"))
    # What the supervisor hands to a thread (the accelerator probe, a Nanos image) runs
    # inline here: virtual time must not move on while a real thread is still busy,
    # however loaded the machine is.
    monkeypatch.setattr(sup_mod.asyncio, "to_thread", inline)
    stores: list[Store] = []

    def make(behaviour: dict[str, Behaviour], kvm_probe: bool = True) -> Rig:
        root = tmp_path / "data"
        clock = FakeClock()
        launcher = FakeLauncher(clock, behaviour)
        store = Store(root)
        stores.append(store)
        said: list[str] = []
        probes: list[str] = []

        def probe(accel: str, memory: int, cpus: int) -> ProbeResult:
            probes.append(accel)
            return ProbeResult(kvm_probe, "" if kvm_probe else "a test guest did not finish")

        chooser = accel_mod.AccelChooser(root, "qemu-system-x86_64", probe=probe)
        capture = FakeCapture(clock)
        sup = Supervisor(
            root, store, 2333, store.commit, chooser=chooser, clock=clock, launcher=launcher,
            alive=launcher.alive, command=launcher.command, kill=launcher.kill,
            notify=said.append, capture=capture, events=launcher.events,
        )  # fmt: skip
        return Rig(root, clock, launcher, sup, store, said, probes, capture)

    yield make  # type: ignore[misc]
    for store in stores:
        store.close()


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


# -- pure decisions ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("end", "state", "reason"),
    [
        (Exit(0, stop_requested=True), State.STOPPED, "stopped on request"),
        (Exit(-6, console_seen=False, stderr=MSR, under_auto_kvm=True), State.FALLBACK,
         "under KVM: qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69 "
         "(killed by signal SIGABRT)"),
        (Exit(-9, console_seen=False, under_auto_kvm=True, silent_kill="no console output "
              "within 10 s"), State.FALLBACK, "under KVM: no console output within 10 s"),
        (Exit(-6, console_seen=False, stderr=MSR), State.START_FAILED,
         "qemu failed to start: qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69 "
         "(killed by signal SIGABRT)"),
        (Exit(1, console_seen=False), State.START_FAILED,
         "qemu failed to start: exit status 1"),
        (Exit(0, console_seen=False, shutdown_reason="guest-reset"), State.CRASHED,
         "guest reset (guest-reset)"),
        (Exit(0, console_seen=False, shutdown_reason="guest-shutdown"), State.EXITED,
         "guest-shutdown"),
        (Exit(0, panicked=True), State.CRASHED, "guest panicked (pvpanic)"),
        (Exit(0, crash_hint="Linux kernel panic"), State.CRASHED, "Linux kernel panic"),
        (Exit(1, stderr="qemu: warning: x\n"), State.CRASHED,
         "qemu exited: qemu: warning: x (exit status 1)"),
        (Exit(0), State.EXITED, "guest powered off"),
        (Exit(0, guest_end='main() of "app" returned 3'), State.EXITED,
         'main() of "app" returned 3'),
        (Exit(-9, guest_end="_exit(0) called"), State.EXITED, "_exit(0) called"),
        (Exit(0, crash_hint="kernel panic", guest_end="_exit(1) called"), State.CRASHED,
         "kernel panic"),
        (Exit(None, console_seen=False), State.EXITED, "guest powered off"),  # adopted
        (Exit(0, under_auto_kvm=True), State.EXITED, "guest powered off"),
    ],
)  # fmt: skip
def test_classify(end: Exit, state: State, reason: str) -> None:
    assert classify(end) == (state, reason)


def test_restart_delay_doubles_up_to_the_cap() -> None:
    assert [restart_delay(n, 1.0, 5.0) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


@pytest.mark.parametrize(
    ("policy", "outcome", "restart"),
    [
        ("no", State.CRASHED, False),
        ("on-failure", State.CRASHED, True),
        ("on-failure", State.EXITED, False),
        ("always", State.EXITED, True),
        ("always", State.STOPPED, False),
    ],
)
def test_should_restart(policy: str, outcome: State, restart: bool) -> None:
    assert should_restart(policy, outcome) is restart


# -- KVM fallback ------------------------------------------------------------------


def test_kvm_abort_falls_back_to_tcg_and_is_remembered(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory({"kvm": aborts, "tcg": boots})

    async def scenario() -> None:
        inst = rig.instance()
        rig.sup.launch(inst)
        await rig.clock.run_until(lambda: inst.console_seen and inst.accel == "tcg")
        assert rig.launcher.accels == ["kvm", "tcg"]
        assert inst.state is State.RUNNING and inst.summary()["accel"] == "tcg"
        assert inst.restarts == 0  # a fallback is not a restart
        # A later instance that asks for auto goes straight to TCG, without a probe.
        other = rig.instance("api")
        rig.sup.launch(other)
        await rig.clock.run_until(lambda: other.console_seen)
        assert rig.launcher.accels == ["kvm", "tcg", "tcg"] and rig.probes == ["kvm"]
        await rig.stop_all()

    run(scenario())
    verdict = json.loads((rig.root / accel_mod.VERDICT_FILE).read_text())
    assert verdict["kvm"] == "unusable"
    assert "failed to set MSR 0x10a" in verdict["reason"] and "SIGABRT" in verdict["reason"]
    assert len(rig.said) == 1 and rig.said[0].startswith("KVM is not usable on this host")
    console = rig.console()
    assert console.count("KVM is not usable on this host") == 1
    assert "KVM failed to start this guest" in console and "starting it under TCG" in console
    # A new supervisor on the same host reads the verdict and does not probe.
    again = accel_mod.AccelChooser(rig.root, "qemu-system-x86_64", probe=lambda *a: pytest.fail())
    assert again.choose("auto") == "tcg" and "MSR" in (again.unusable_reason() or "")


def test_kvm_hang_is_killed_after_the_bound_and_falls_back(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory({"kvm": hangs, "tcg": boots})

    async def scenario() -> None:
        inst = rig.instance()
        rig.sup.launch(inst)
        await rig.clock.run_until(lambda: len(rig.launcher.started) == 2)
        (t_kvm, _, _), (t_tcg, _, _) = rig.launcher.started
        assert t_tcg - t_kvm == pytest.approx(accel_mod.FIRST_OUTPUT_SECONDS, abs=0.2)
        assert rig.launcher.killed == [(4000, signal.SIGKILL)]
        await rig.clock.run_until(lambda: inst.console_seen)
        await rig.stop_all()

    run(scenario())
    verdict = json.loads((rig.root / accel_mod.VERDICT_FILE).read_text())
    assert verdict["reason"] == "no console output within 10 s"


def test_a_working_kvm_stays(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory({"kvm": boots, "tcg": boots})

    async def scenario() -> None:
        inst = rig.instance()
        rig.sup.launch(inst)
        await rig.clock.run_until(lambda: inst.console_seen)
        deadline = rig.clock.now + 60
        await rig.clock.run_until(lambda: rig.clock.now >= deadline)
        assert inst.state is State.RUNNING and inst.accel == "kvm"
        await rig.stop_all()

    run(scenario())
    assert rig.launcher.accels == ["kvm"] and rig.launcher.killed == [(4000, signal.SIGKILL)]
    assert not (rig.root / accel_mod.VERDICT_FILE).exists() and rig.said == []


def test_a_failed_probe_is_remembered_and_said_once(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory({"tcg": boots}, kvm_probe=False)

    async def scenario() -> None:
        a, b = rig.instance("a"), rig.instance("b")
        rig.sup.launch(a)
        rig.sup.launch(b)
        await rig.clock.run_until(lambda: a.console_seen and b.console_seen)
        await rig.stop_all()

    run(scenario())
    assert rig.launcher.accels == ["tcg", "tcg"] and rig.probes == ["kvm"]
    assert len(rig.said) == 1 and "the KVM probe failed" in rig.said[0]
    assert (rig.console("a") + rig.console("b")).count("KVM is not usable") == 1


def test_failing_under_tcg_too_is_the_guests_problem_not_kvms(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory({"kvm": bad_kernel, "tcg": bad_kernel})

    async def scenario() -> None:
        inst = rig.instance(backoff=1.0, backoff_max=60.0)
        rig.sup.launch(inst)
        await rig.clock.run_until(lambda: inst.state is State.FAILED)
        await rig.stop_all()
        assert inst.state is State.FAILED

    run(scenario())
    assert rig.launcher.accels == ["kvm", "tcg", "tcg", "tcg"]
    assert not (rig.root / accel_mod.VERDICT_FILE).exists()


def test_explicit_kvm_that_does_not_work_fails_in_one_sentence(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory({"tcg": boots}, kvm_probe=False)

    async def scenario() -> Instance:
        inst = rig.instance(accel="kvm")
        rig.sup.launch(inst)
        await rig.clock.run_until(lambda: inst.state is State.FAILED)
        return inst

    inst = run(scenario())
    assert rig.launcher.started == []
    reason = (inst.last_exit or {})["reason"]
    assert reason.startswith("KVM does not work on this host (a test guest did not finish)")
    assert "\n" not in reason and "Traceback" not in rig.console()


# -- start failures and task errors ------------------------------------------------


def test_a_start_failure_is_retried_a_bounded_number_of_times(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory({"tcg": bad_kernel})

    async def scenario() -> Instance:
        inst = rig.instance(accel="tcg", restart="always", backoff=1.0, backoff_max=60.0)
        rig.sup.launch(inst)
        await rig.clock.run_until(lambda: inst.state is State.FAILED)
        await rig.clock.settle()  # nothing is scheduled to start it again
        assert not [t for t in rig.clock._timers if not t[2].done()]
        return inst

    inst = run(scenario())
    times = [t for t, _, _ in rig.launcher.started]
    assert len(times) == outcome_mod.START_ATTEMPTS == 3
    assert [round(b - a, 1) for a, b in itertools.pairwise(times)] == [1.0, 2.0]
    last = inst.last_exit or {}
    assert last["outcome"] == "failed"
    assert last["reason"] == (
        "failed to start 3 times: qemu failed to start: qemu-system-x86_64: could not load "
        "kernel '/nope/vmlinuz': No such file (exit status 1)"
    )
    assert "could not load kernel" in last["stderr"] and last["report"].startswith("start-fail")
    report = json.loads(
        (layout.instance_dir(rig.root, "web") / "crashes" / last["report"]).read_text()
    )
    assert report["kind"] == "start-failure" and "could not load kernel" in report["qemu_stderr"]
    console = rig.console()
    assert console.count("instance failed to start: qemu failed to start") == 3
    assert "instance failed: failed to start 3 times" in console
    assert any("web failed" in line for line in rig.said)
    saved = json.loads((inst.run_dir / "instance.json").read_text())
    assert saved["state"] == "failed"


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"flavor": "generic", "template": "ip={nope}"}, "bad template 'ip={nope}'"),
        ({"args": 'app.msg="unbalanced'}, "quotation"),
    ],
)
def test_an_error_while_starting_leaves_the_instance_failed_with_its_reason(
    rig_factory: Callable[..., Rig], config: dict[str, Any], expected: str
) -> None:
    rig = rig_factory({"tcg": boots})
    holder: list[Instance] = []

    async def scenario() -> None:
        inst = rig.instance(accel="tcg", **config)
        holder.append(inst)
        rig.sup.launch(inst)
        await rig.clock.run_until(lambda: inst.state is State.FAILED)

    run(scenario())
    inst = holder[0]
    assert rig.launcher.started == []
    assert expected in (inst.last_exit or {})["reason"]
    assert inst.summary()["state"] == "failed"
    assert expected in rig.console()


def test_an_unexpected_exception_is_shown_too(
    rig_factory: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = rig_factory({"tcg": boots})

    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("surprise")

    monkeypatch.setattr(sup_mod, "boot_spec", broken)
    holder: list[Instance] = []

    async def scenario() -> None:
        inst = rig.instance(accel="tcg")
        holder.append(inst)
        rig.sup.launch(inst)
        await rig.clock.run_until(lambda: inst.state is State.FAILED)

    run(scenario())
    assert (holder[0].last_exit or {})["reason"] == "KeyError: 'surprise'"


def test_usage_errors_name_the_instance(rig_factory: Callable[..., Rig]) -> None:
    # A bad flavor name cannot pass the config check; here it reaches the supervisor.
    rig = rig_factory({"tcg": boots})
    holder: list[Instance] = []

    async def scenario() -> None:
        inst = rig.instance(accel="tcg", flavor="nope")
        holder.append(inst)
        rig.sup.launch(inst)
        await rig.clock.run_until(lambda: inst.state is State.FAILED)

    run(scenario())
    assert "unknown flavor 'nope'" in (holder[0].last_exit or {})["reason"]


# -- crashes, restarts, adoption, stop ---------------------------------------------


def test_crashes_restart_with_doubling_backoff(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory({"tcg": crashes_after(2.0)})

    async def scenario() -> None:
        inst = rig.instance(accel="tcg", restart="on-failure", backoff=1.0, backoff_max=4.0)
        rig.sup.launch(inst)
        await rig.clock.run_until(lambda: len(rig.launcher.started) == 5)
        await rig.stop_all()

    run(scenario())
    times = [t for t, _, _ in rig.launcher.started]
    # each run lives 2.5 s (0.5 s to print, 2 s more), then waits 1, 2, 4, 4 s
    gaps = [round(b - a, 1) for a, b in itertools.pairwise(times)]
    assert gaps == [3.5, 4.5, 6.5, 6.5]
    console = rig.console()
    assert console.count("instance crashed: qemu exited: exit status 1") == 4
    assert TOKEN not in rig.files_text().replace(
        (rig.root / "run" / "web" / "instance.json").read_text(), ""
    )
    assert "umon.token=<redacted>" in console


def test_adopted_guest_is_watched_not_started(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory({"tcg": boots})

    async def scenario() -> None:
        proc = FakeProcess(777)
        rig.launcher.procs[777] = proc
        run_dir = rig.sup.run_dir("web")
        (run_dir / "instance.json").write_text(
            json.dumps({"pid": 777, "token": TOKEN, "started_ns": 1, "console_offset": 0})
        )
        inst = rig.instance(accel="tcg", restart="no")
        assert inst.adopted and inst.pid == 777
        rig.sup.launch(inst)
        await rig.clock.run_until(lambda: inst.state is State.RUNNING)
        await rig.clock.run_until(lambda: rig.clock.now > 1010)
        assert rig.launcher.started == []
        proc.exit(0)
        await rig.clock.run_until(lambda: inst.state is State.EXITED)

    run(scenario())
    assert rig.launcher.started == [] and rig.launcher.killed == []


def test_stop_escalates_from_power_down_to_quit_to_kill(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory({"tcg": boots})

    async def scenario() -> None:
        inst = rig.instance(accel="tcg")
        rig.sup.launch(inst)
        await rig.clock.run_until(lambda: inst.console_seen)
        before = rig.clock.now
        stopping = asyncio.get_running_loop().create_task(rig.sup.stop("web"))
        await rig.clock.run_until(stopping.done)
        assert rig.clock.now - before == pytest.approx(2 * sup_mod.STOP_GRACE, abs=0.3)
        assert inst.state is State.STOPPED

    run(scenario())
    assert rig.launcher.commands == ["system_powerdown", "quit"]
    assert rig.launcher.killed == [(4000, signal.SIGKILL)]


def test_stop_of_an_instance_without_a_process_signals_nobody(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory({"tcg": boots})

    async def scenario() -> None:
        inst = rig.instance(accel="tcg")
        inst.state = State.RUNNING  # says running, but has no pid
        await rig.sup.stop("web")

    run(scenario())
    assert rig.launcher.killed == [] and rig.launcher.commands == []


def halts_after_main_returns(status: int) -> Behaviour:
    """rumprun: main() returns, the rump kernel halts, and the CPU spins for ever."""

    async def run(fl: FakeLauncher, proc: FakeProcess, spool: Path, stderr: Path) -> None:
        await boots(fl, proc, spool, stderr)
        await fl.clock.sleep(1.0)
        with open(spool, "ab") as out:
            out.write(
                f'\n=== main() of "app" returned {status} ===\n'
                "rump kernel halting...\nhalted\n".encode()
            )

    return run


def test_a_guest_that_halts_without_powering_off_is_stopped_and_exited(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory({"tcg": halts_after_main_returns(3)})

    async def scenario() -> Instance:
        inst = rig.instance(accel="tcg", restart="on-failure")
        rig.sup.launch(inst)
        await rig.clock.run_until(lambda: inst.state is State.EXITED, limit=60)
        return inst

    inst = run(scenario())
    assert rig.launcher.killed == [(4000, signal.SIGTERM)]
    assert inst.last_exit is not None
    assert inst.last_exit["reason"] == 'main() of "app" returned 3'
    assert len(rig.launcher.started) == 1  # an exit, not a crash: on-failure does not restart


# -- -no-shutdown: the guest ends, QEMU is held, the supervisor quits it -----------------


def powers_off_after(seconds: float, console: str = "") -> Behaviour:
    """Boots, prints ``console``, and powers off: QEMU pauses (-no-shutdown) and waits."""

    async def run(fl: FakeLauncher, proc: FakeProcess, spool: Path, stderr: Path) -> None:
        await boots(fl, proc, spool, stderr)
        await fl.clock.sleep(seconds)
        with open(spool, "ab") as out:
            out.write(console.encode())
        fl.power_off(proc)

    return run


UK_CRASH = "crash_app: crashing now\nRIP: 0000000000115e14 CS: 0008\nCrashing\nUnikraft halted\n"


def test_a_held_power_off_is_an_exit_and_qemu_is_quit(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory({"tcg": powers_off_after(1.0)})
    rig.launcher.honours_quit = True

    async def scenario() -> Instance:
        inst = rig.instance(accel="tcg", restart="on-failure")
        rig.sup.launch(inst)
        await rig.clock.run_until(lambda: inst.state is State.EXITED, limit=60)
        return inst

    inst = run(scenario())
    last = inst.last_exit or {}
    assert (last["outcome"], last["reason"], last["status"]) == ("exited", "guest-shutdown", 0)
    assert rig.launcher.commands == ["quit"] and rig.launcher.killed == []
    assert rig.capture.requests == [] and len(rig.launcher.started) == 1


def test_a_held_crash_is_captured_before_qemu_is_quit(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory({"tcg": powers_off_after(1.0, UK_CRASH)})
    rig.launcher.honours_quit = True
    rig.capture.seconds = 0.5

    async def scenario() -> Instance:
        inst = rig.instance(
            accel="tcg", flavor="unikraft", restart="on-failure", symbols=Path("/img/app.dbg")
        )
        rig.sup.launch(inst)
        await rig.clock.run_until(lambda: rig.capture.running == 1, limit=60)
        assert inst.summary()["state"] == "crashed"  # while it is read, not "running"
        await rig.clock.run_until(lambda: len(rig.launcher.started) == 2, limit=60)
        assert inst.summary()["state"] == "running"
        await rig.stop_all()
        return inst

    inst = run(scenario())
    (request,) = rig.capture.requests[:1]
    assert request.flavor == "unikraft" and request.kernel == Path("/img/vmlinuz")
    assert request.symbols == Path("/img/app.dbg")
    assert request.socket == inst.run_dir / "gdb.sock"  # the VM is still there
    assert "Crashing" in request.console and "RIP: 0000000000115e14 CS: 0008" in request.console
    # quit came after the capture: the capture's half second passed before the restart
    first, second = (t for t, _, _ in rig.launcher.started)
    assert second - first == pytest.approx(0.5 + 1.0 + 0.5 + 1.0, abs=0.3)
    assert rig.launcher.commands[0] == "quit" and rig.launcher.killed == []
    reports = sorted((layout.instance_dir(rig.root, "web") / "crashes").glob("crash-*.json"))
    report = json.loads(reports[0].read_text())
    assert report["reason"] == "crash" and report["exit_status"] == 0
    assert [f["function"] for f in report["backtrace"]][:3] == [
        "write_through_null", "crash", "main"
    ]  # fmt: skip
    assert report["backtrace_source"] == "gdbstub" and report["capture_errors"] == []
    assert report["symbols"]["path"] == "/img/app.dbg"
    console = rig.console()
    crash_line = next(line for line in console.splitlines() if "instance crashed" in line)
    assert 'fault="page fault at 0x0, pc 0x115e14 in write_through_null crash_app.c:56"' in (
        crash_line
    )
    assert (
        'backtrace="write_through_null crash_app.c:56; crash crash_app.c:62; '
        'main crash_app.c:104; do_main boot.c:543 (inlined)"'
    ) in crash_line


def test_a_capture_that_hangs_is_cut_and_the_restart_goes_on(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory({"tcg": powers_off_after(1.0, UK_CRASH)})
    rig.launcher.honours_quit = True
    rig.capture.hang = True

    async def scenario() -> None:
        inst = rig.instance(accel="tcg", flavor="unikraft", restart="on-failure")
        rig.sup.launch(inst)
        await rig.clock.run_until(lambda: len(rig.launcher.started) == 2, limit=120)
        await rig.stop_all()

    run(scenario())
    first, second = (t for t, _, _ in rig.launcher.started)
    assert second - first == pytest.approx(1.5 + crash_report.CAPTURE_BOUND + 1.0, abs=0.3)
    report = json.loads(
        next((layout.instance_dir(rig.root, "web") / "crashes").glob("crash-*.json")).read_text()
    )
    assert report["capture_errors"] == [f"capture timed out after {crash_report.CAPTURE_BOUND:g} s"]
    assert rig.capture.running == 0  # cancelled, not left behind


def test_a_capture_that_fails_is_recorded_and_never_blocks(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory({"tcg": powers_off_after(1.0, UK_CRASH)})
    rig.launcher.honours_quit = True
    rig.capture.error = RuntimeError("gdb exploded")

    async def scenario() -> Instance:
        inst = rig.instance(accel="tcg", flavor="unikraft", restart="on-failure")
        rig.sup.launch(inst)
        await rig.clock.run_until(lambda: len(rig.launcher.started) == 2, limit=60)
        await rig.stop_all()
        return inst

    run(scenario())
    report = json.loads(
        next((layout.instance_dir(rig.root, "web") / "crashes").glob("crash-*.json")).read_text()
    )
    assert report["capture_errors"] == ["capture failed: RuntimeError: gdb exploded"]
    assert report["reason"] == "crash" and "backtrace" not in report
    assert "instance crashed: crash" in rig.console()


def test_a_crash_after_qemu_ended_is_captured_from_the_console_only(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory({"tcg": crashes_after(2.0)})

    async def scenario() -> None:
        inst = rig.instance(accel="tcg", restart="no")
        rig.sup.launch(inst)
        await rig.clock.run_until(lambda: inst.state is State.CRASHED, limit=60)

    run(scenario())
    (request,) = rig.capture.requests
    assert request.socket is None  # nothing to attach to
    assert rig.launcher.commands == []  # and nothing to quit


def test_crashes_are_captured_one_at_a_time(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory({"tcg": powers_off_after(1.0, UK_CRASH)})
    rig.launcher.honours_quit = True
    rig.capture.seconds = 2.0

    async def scenario() -> None:
        a, b = rig.instance("a", accel="tcg"), rig.instance("b", accel="tcg")
        rig.sup.launch(a)
        rig.sup.launch(b)
        await rig.clock.run_until(
            lambda: a.state is State.CRASHED and b.state is State.CRASHED, limit=60
        )

    run(scenario())
    assert len(rig.capture.requests) == 2 and rig.capture.most == 1


async def rumprun_trap(fl: FakeLauncher, proc: FakeProcess, spool: Path, stderr: Path) -> None:
    """rumprun: a page fault prints FATAL TRAP and halts the CPU; QEMU runs on."""
    await boots(fl, proc, spool, stderr)
    await fl.clock.sleep(1.0)
    with open(spool, "ab") as out:
        out.write(b"FATAL TRAP: page fault at 0x110cd2 (0x0)\n")


def test_a_rumprun_trap_is_stopped_captured_then_quit(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory({"tcg": rumprun_trap})
    rig.launcher.honours_quit = True

    async def scenario() -> Instance:
        inst = rig.instance(accel="tcg", flavor="rumprun", restart="no")
        rig.sup.launch(inst)
        await rig.clock.run_until(lambda: inst.state is State.CRASHED, limit=60)
        return inst

    inst = run(scenario())
    assert rig.launcher.commands == ["stop", "quit"] and rig.launcher.killed == []
    (request,) = rig.capture.requests
    assert request.socket == inst.run_dir / "gdb.sock"
    assert "FATAL TRAP: page fault at 0x110cd2 (0x0)" in request.console
    assert (inst.last_exit or {})["reason"] == "page fault"


def test_stop_of_a_held_guest_quits_it_at_once(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory({"tcg": boots})
    rig.launcher.honours_quit = True
    rig.launcher.powers_down = True

    async def scenario() -> Instance:
        inst = rig.instance(accel="tcg", restart="always")
        rig.sup.launch(inst)
        await rig.clock.run_until(lambda: inst.console_seen)
        before = rig.clock.now
        await rig.stop_all()
        assert rig.clock.now - before < 1.0  # no grace period waited out
        return inst

    inst = run(scenario())
    assert inst.state is State.STOPPED and rig.capture.requests == []
    assert rig.launcher.commands == ["system_powerdown", "quit"] and rig.launcher.killed == []
    assert len(rig.launcher.started) == 1


# -- a guest stopped in a debugger ---------------------------------------------------


def paused_until_resumed(after: float, prints: bool = True) -> Behaviour:
    """Started with -S: nothing until something continues it after ``after`` s; then it
    boots, or (``prints=False``) runs without a word."""

    async def run(fl: FakeLauncher, proc: FakeProcess, spool: Path, stderr: Path) -> None:
        await fl.clock.sleep(after)
        fl.emit(proc, "RESUME")
        if prints:
            await boots(fl, proc, spool, stderr)

    return run


def test_a_paused_guest_under_kvm_is_not_killed_for_silence(
    rig_factory: Callable[..., Rig],
) -> None:
    # Three times the first-output bound stopped at its first instruction, then it runs
    # and prints: only running time counts, so KVM is kept.
    rig = rig_factory({"kvm": paused_until_resumed(3 * accel_mod.FIRST_OUTPUT_SECONDS)})
    held: list[tuple[str, bool]] = []
    rig.sup.vm_held = lambda name, on: held.append((name, on))

    async def scenario() -> Instance:
        inst = rig.instance(paused=True)
        rig.sup.launch(inst)
        await rig.clock.run_until(lambda: inst.state is State.RUNNING)
        assert inst.vm_status == "prelaunch" and inst.summary()["state"] == "paused"
        await rig.clock.run_until(lambda: inst.console_seen, limit=120)
        assert inst.summary()["state"] == "running" and inst.accel == "kvm"
        await rig.stop_all()
        return inst

    inst = run(scenario())
    assert rig.launcher.accels == ["kvm"], "relaunched: the pause was taken for silence"
    assert "-S" in rig.launcher.started[0][2]
    assert inst.restarts == 0 and inst.last_exit is not None
    assert held == [("web", True), ("web", False)]  # held from its start until it ran


def test_a_silent_guest_under_kvm_is_still_killed_when_it_runs(
    rig_factory: Callable[..., Rig],
) -> None:
    # The same bound applies once it runs: resumed after 5 s, silent for 10 s of running.
    rig = rig_factory({"kvm": paused_until_resumed(5.0, prints=False), "tcg": boots})

    async def scenario() -> None:
        inst = rig.instance(paused=True)
        rig.sup.launch(inst)
        await rig.clock.run_until(lambda: len(rig.launcher.started) == 2)
        (t_kvm, _, _), (t_tcg, _, _) = rig.launcher.started
        assert t_tcg - t_kvm == pytest.approx(5.0 + accel_mod.FIRST_OUTPUT_SECONDS, abs=0.3)
        await rig.stop_all()

    run(scenario())


def test_stop_and_resume_are_told_to_the_collector_and_shown(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory({"tcg": boots})
    held: list[tuple[str, bool]] = []
    rig.sup.vm_held = lambda name, on: held.append((name, on))

    async def scenario() -> None:
        inst = rig.instance(accel="tcg")
        rig.sup.launch(inst)
        await rig.clock.run_until(lambda: inst.console_seen)
        proc = rig.launcher.procs[inst.pid or -1]
        assert inst.summary()["state"] == "running" and held == []
        rig.launcher.emit(proc, "umonitor-status", status="debug")  # gdb stopped it
        await rig.clock.settle()
        assert inst.summary()["state"] == "paused" and inst.summary()["vm_status"] == "debug"
        rig.launcher.emit(proc, "STOP")  # stopped again: already held, said once
        await rig.clock.settle()
        assert held == [("web", True)]
        rig.launcher.emit(proc, "RESUME")
        await rig.clock.settle()
        assert inst.summary()["state"] == "running" and held == [("web", True), ("web", False)]
        rig.launcher.emit(proc, "STOP")
        await rig.clock.settle()
        assert held[-1] == ("web", True)
        rig.launcher.power_off(proc)  # it ends while stopped: no longer held
        rig.launcher.honours_quit = True
        await rig.clock.run_until(lambda: inst.state is State.EXITED)
        assert held[-1] == ("web", False)

    run(scenario())


def test_a_debugger_shows_while_its_process_lives(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory({"tcg": boots})

    async def scenario() -> Instance:
        inst = rig.instance(accel="tcg")
        rig.sup.launch(inst)
        await rig.clock.run_until(lambda: inst.console_seen)
        return inst

    inst = run(scenario())
    inst.debugger = os.getpid()
    assert inst.shown_state() == "debugging"
    child = subprocess.Popen(["true"])
    child.wait()
    inst.debugger = child.pid  # gone: the debugger was quit
    assert inst.shown_state() == "running" and inst.debugger is None
