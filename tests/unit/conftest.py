"""Fixtures shared by the store's unit tests."""

from __future__ import annotations

import pytest

from umonitor.store import blocks


@pytest.fixture(params=["c", "pure"])
def line_parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with the C block summarizer and line scan, and again without them."""
    if request.param == "pure":
        monkeypatch.setattr(blocks, "summarize_lines", None)
        monkeypatch.setattr(blocks, "scan_lines_fast", None)
    else:
        assert blocks.summarize_lines is not None, "the C accelerator is not built"
        assert blocks.scan_lines_fast is not None, "the C accelerator is not built"
    return str(request.param)
