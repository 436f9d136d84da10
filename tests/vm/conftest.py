"""Guests in QEMU (TCG) on TAP devices: Debian kernel + umonitor's initramfs, and real
Unikraft, Nanos and rumprun guests built from source (tests/unikernels.py)."""

from __future__ import annotations

import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unikernels import built
from umonitor.image.linux import Image, build_image

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "src" / "umonitor" / "guest" / "demo"


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Image]:
    assert os.geteuid() == 0, "the VM tests need root (TAP devices); CI runs them as root"
    out = tmp_path_factory.mktemp("images")
    return {
        "demo": build_image([DEMO / "demo_app.c"], out / "demo"),
        "crash": build_image([DEMO / "crash_app.c"], out / "crash"),
    }


@pytest.fixture
def subnet() -> Iterator[tuple[str, str]]:
    """A bridge name and host address nobody on this machine uses."""
    used = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    for _ in range(50):
        third = random.randint(1, 254)
        if f"10.252.{third}." not in used:
            yield f"umvt{random.randint(1000, 9999)}", f"10.252.{third}.1/24"
            return
    raise AssertionError("no free test subnet")


@pytest.fixture(scope="session")
def unikraft() -> Path:
    """Unikraft 0.17 guests: log, crash, spin and trace .kernel/.dbg (guests/unikraft)."""
    return built("unikraft")


@pytest.fixture(scope="session")
def nanos() -> Path:
    """A Nanos build (kernel.img, boot.img, mkfs) and static programs (guests/nanos)."""
    return built("nanos")


@pytest.fixture(scope="session")
def rumprun() -> Path:
    """rumprun guests baked for hw_virtio: log.bin, crash.bin, seed2018.bin, spin.bin."""
    return built("rumprun")
