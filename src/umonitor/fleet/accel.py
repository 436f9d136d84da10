"""Which accelerator an instance gets, and what this host has taught us about KVM.

How this works: ``auto`` means KVM when it works, TCG otherwise, and "works" is
decided twice. First by the probe (qemu.probe: a boot sector that goes to long mode
and touches guest memory, under the CPU model, machine and memory size guests get).
Then by the real guests: a probe can pass where a real guest does not, so the
supervisor watches every instance started under KVM for ``auto`` until its first
console byte. If QEMU exits before it, or nothing comes within
``FIRST_OUTPUT_SECONDS``, the instance is relaunched under TCG; once that relaunch
prints, KVM is taken as unusable on this host (a guest that fails under TCG too has
a problem of its own, and says nothing about KVM).

The verdict is kept in ``DATA/kvm.json`` with its reason, for this host: it holds
while the kernel release and the QEMU binary stay the same, and deleting the file
makes umonitor try KVM again. Later ``auto`` instances go to TCG directly. An
explicit ``kvm`` is never second-guessed: the probe runs, and if it fails the user
gets one sentence saying so.
"""

from __future__ import annotations

import json
import os
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from umonitor.errors import EnvironmentProblem, UsageError
from umonitor.fleet import qemu
from umonitor.timeparse import format_time

VERDICT_FILE = "kvm.json"
FIRST_OUTPUT_SECONDS = 10.0  # under KVM a guest that prints nothing this long is hung

Probe = Callable[[str, int, int], qemu.ProbeResult]  # accel, memory MiB, cpus


def host_identity(qemu_binary: str) -> dict[str, Any]:
    """What a KVM verdict is valid for: this kernel and this QEMU binary."""
    try:
        path = qemu.find_qemu(qemu_binary)
        st = os.stat(path)
        binary: dict[str, Any] = {"path": path, "size": st.st_size, "mtime": int(st.st_mtime)}
    except (EnvironmentProblem, OSError):
        binary = {"path": qemu_binary}
    return {"kernel": platform.release(), "qemu": binary}


@dataclass
class AccelChooser:
    """Resolves ``auto``/``kvm``/``tcg`` per instance and remembers a broken KVM."""

    root: Path
    qemu_binary: str = qemu.QEMU
    probe: Probe | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _probed: dict[tuple[int, int], qemu.ProbeResult] = field(default_factory=dict)
    _unusable: str | None = None
    _loaded: bool = False
    announced: bool = False  # the verdict was recorded once this run
    shown: bool = False  # ... and said on the terminal

    def _probe(self, memory_mib: int, cpus: int) -> qemu.ProbeResult:
        if self.probe is not None:
            return self.probe("kvm", memory_mib, cpus)
        return qemu.probe("kvm", self.qemu_binary, memory_mib=memory_mib, cpus=cpus)

    @property
    def path(self) -> Path:
        return self.root / VERDICT_FILE

    def unusable_reason(self) -> str | None:
        """Why KVM is not used for ``auto`` on this host, if it is not."""
        with self._lock:
            self._load()
            return self._unusable

    def verdict(self) -> dict[str, Any] | None:
        """The saved verdict (for ``ps``), if KVM is known unusable here."""
        try:
            saved = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(saved, dict) or saved.get("host") != host_identity(self.qemu_binary):
            return None
        return saved

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            saved = self.verdict()
            if saved is not None and saved.get("kvm") == "unusable":
                self._unusable = str(saved.get("reason") or "unknown reason")

    def choose(self, requested: str, memory_mib: int = 256, cpus: int = 1) -> str:
        """``kvm`` or ``tcg`` for one instance; may probe (blocking, up to seconds)."""
        if requested == "tcg":
            return "tcg"
        if requested not in ("auto", "kvm"):
            raise UsageError(f"unknown accelerator {requested!r}; use auto, kvm or tcg")
        with self._lock:
            self._load()
            if requested == "auto" and self._unusable is not None:
                return "tcg"
            key = (memory_mib, cpus)
            if key not in self._probed:
                self._probed[key] = self._probe(memory_mib, cpus)
            result = self._probed[key]
        if result.works:
            return "kvm"
        if requested == "kvm":
            raise EnvironmentProblem(qemu.kvm_refusal(result.reason))
        self.mark_unusable(f"the KVM probe failed: {result.reason}")
        return "tcg"

    def mark_unusable(self, reason: str) -> bool:
        """Remember that KVM does not work on this host; True if this is news."""
        with self._lock:
            self._load()
            if self._unusable is not None:
                return False
            self._unusable = reason
            state = {
                "kvm": "unusable",
                "reason": reason,
                "since": format_time(time.time_ns()),
                "host": host_identity(self.qemu_binary),
            }
            tmp = self.path.with_suffix(".tmp")
            try:
                tmp.write_text(json.dumps(state, indent=1))
                os.replace(tmp, self.path)
            except OSError:
                pass  # still known for this run; the next run probes again
            return True


def notice(reason: str) -> str:
    """The one line that tells a user KVM is not used, and how to try it again."""
    return f"KVM is not usable on this host ({reason}); guests run under TCG (software emulation)"
