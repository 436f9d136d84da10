"""How one QEMU run ended, and what follows: the outcome, the restart and its backoff.

``classify`` turns what is known when a run ends (``Exit``: QEMU's status, what the
console and QMP said) into one ``State`` and a one-line reason, in this order:
stopped on request; a KVM fallback; a start failure (QEMU ended before the guest
printed anything, and the guest neither panicked nor reset); guest panicked; a
console crash marker; a guest reset; how the program said it ended; a non-zero QEMU
status; otherwise a clean exit. ``should_restart`` applies the instance's restart
policy to that outcome, and ``restart_delay`` doubles the wait per consecutive
failure from ``backoff`` up to ``backoff_max``. All three are pure.
"""

from __future__ import annotations

from dataclasses import dataclass

from umonitor.fleet import qemu
from umonitor.fleet.instance import State

STABLE_AFTER = 60.0  # seconds up after which consecutive failures are forgotten
START_ATTEMPTS = 3  # a start failure is tried this many times in all, then "failed"
GUEST_SHUTDOWNS = ("guest-shutdown", "guest-reset", "guest-panic")  # QMP: the guest ran
HELD_STATUS = 0  # what QEMU exited with on a guest's power-off before -no-shutdown


@dataclass(frozen=True, slots=True)
class Exit:
    """What is known when a QEMU run ends: the input of ``classify``."""

    status: int | None
    stop_requested: bool = False
    console_seen: bool = True
    panicked: bool = False
    crash_hint: str | None = None
    shutdown_reason: str | None = None
    stderr: str = ""
    under_auto_kvm: bool = False  # KVM chosen by ``auto``: a failure falls back to TCG
    silent_kill: str | None = None  # killed for printing nothing within the bound
    guest_end: str | None = None  # the console said how the program ended


def classify(end: Exit) -> tuple[State, str]:
    """The outcome of one QEMU run and its reason (one line); see the module docstring."""
    if end.stop_requested:
        return State.STOPPED, "stopped on request"
    guest_ran = end.panicked or end.shutdown_reason in GUEST_SHUTDOWNS
    if end.under_auto_kvm and (end.silent_kill or not (end.console_seen or guest_ran)):
        why = end.silent_kill or qemu.exit_reason(end.status, end.stderr)
        return State.FALLBACK, f"under KVM: {why}"
    if not end.console_seen and not guest_ran and end.status not in (0, None):
        return (
            State.START_FAILED,
            f"qemu failed to start: {qemu.exit_reason(end.status, end.stderr)}",
        )
    if end.panicked:
        return State.CRASHED, "guest panicked (pvpanic)"
    if end.crash_hint:
        return State.CRASHED, end.crash_hint
    if end.shutdown_reason in ("guest-reset", "guest-panic"):
        return State.CRASHED, f"guest reset ({end.shutdown_reason})"
    if end.guest_end:  # QEMU was stopped for it: its status says nothing of the guest
        return State.EXITED, end.guest_end
    if end.status not in (0, None):
        return State.CRASHED, f"qemu exited: {qemu.exit_reason(end.status, end.stderr)}"
    return State.EXITED, end.shutdown_reason or "guest powered off"


def restart_delay(failures: int, backoff: float, backoff_max: float) -> float:
    """Seconds before restart number ``failures`` (1-based) of a failing instance."""
    return float(min(backoff * 2 ** max(0, failures - 1), backoff_max))


def should_restart(policy: str, outcome: State) -> bool:
    """Whether the restart policy restarts after ``outcome``."""
    if outcome is State.STOPPED or policy == "no":
        return False
    return policy == "always" or outcome is State.CRASHED
