"""The shared console samples (real Unikraft and Linux guests under QEMU), read in place.

They live in ``../shared/samples`` beside the repository (``$UMONITOR_SAMPLES``
overrides); tests that need them fail with one sentence when they are not there.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def console_samples() -> Path:
    """The directory of console captures (``console/`` under the samples)."""
    base = Path(os.environ.get("UMONITOR_SAMPLES") or ROOT.parent / "shared" / "samples")
    directory = base / "console"
    assert directory.is_dir(), (
        f"the console samples are not at {directory}: put shared/samples beside the "
        "repository or set UMONITOR_SAMPLES to its path"
    )
    return directory
