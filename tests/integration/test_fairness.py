"""Fairness: ten steady guests lose nothing while another guest floods the collector.

The flooder (tests/fairness.py, its own process) writes records as fast as the
collector reads them; the steady guests log 100 records/s each on a fixed schedule.
Each steady guest's records must all be acknowledged and stored exactly once, in
order, and the flooder must be served too. Latencies are measured and reported by
bench/fairness.py, not asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fairness import steady_guests
from tests.integration.conftest import ROOT, file_seqs, start_collector

STEADY = 10
RATE = 100.0
SECONDS = 6.0


@pytest.mark.parametrize("limits", [[], ["--rate-limit", "20000"]], ids=["defaults", "rate-limit"])
def test_steady_guests_lose_nothing_beside_a_flood(tmp_path: Path, limits: list[str]) -> None:
    collector = start_collector(tmp_path / "data", *limits)
    flooder = subprocess.Popen(
        [sys.executable, "-m", "tests.fairness", "flood", str(collector.port), "flooder",
         str(SECONDS + 2)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(1)
    names = [f"steady-{i}" for i in range(STEADY)]
    guests = steady_guests(collector.port, names, RATE, SECONDS)
    out, _ = flooder.communicate(timeout=300)
    assert flooder.returncode == 0
    flood = json.loads(out.strip().splitlines()[-1])
    assert collector.stop() == 0

    for guest in guests:
        assert guest.error == "", (guest.name, guest.error)
        assert guest.sent == int(RATE * SECONDS) and guest.acked == guest.sent
        assert len(guest.latencies) == guest.sent  # one ACK covered each record
        assert file_seqs(collector.data, guest.name) == list(range(1, guest.sent + 1))
    # The flooder was served as well: everything it wrote was acknowledged.
    assert flood["sent"] > 0 and flood["acked"] == flood["sent"]
