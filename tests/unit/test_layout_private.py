"""The data directory is its owner's alone; files with secrets are 0600 from the start."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from umonitor.errors import UsageError
from umonitor.store import layout


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def wide_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_new_data_directory_is_0700(tmp_path: Path, wide_umask: None) -> None:
    root = tmp_path / "a" / "b" / "data"
    assert layout.prepare_data_dir(root) == root
    assert mode(root) == 0o700
    assert mode(root / layout.INSTANCES) == 0o700
    assert mode(tmp_path / "a") == 0o777  # parents are the user's business


def test_existing_wide_data_directory_is_narrowed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "data"
    root.mkdir()
    os.chmod(root, 0o755)
    layout.prepare_data_dir(root)
    assert mode(root) == 0o700
    assert "narrowed it to 0700" in caplog.text
    caplog.clear()
    layout.prepare_data_dir(root)  # already private: nothing said
    assert caplog.text == ""


def test_data_directory_of_another_user_is_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "data"
    root.mkdir()
    os.chmod(root, 0o755)
    monkeypatch.setattr(os, "geteuid", lambda: os.getuid() + 1)
    layout.prepare_data_dir(root)
    assert mode(root) == 0o755


def test_a_file_is_no_data_directory(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("x")
    with pytest.raises(UsageError, match="cannot use data directory"):
        layout.prepare_data_dir(tmp_path / "data")


def test_write_private_is_0600_and_atomic(tmp_path: Path, wide_umask: None) -> None:
    path = tmp_path / "instance.json"
    path.write_text("old")
    os.chmod(path, 0o644)
    layout.write_private(path, '{"token": "x"}')
    assert path.read_text() == '{"token": "x"}'
    assert mode(path) == 0o600
    layout.write_private(path, b"\x00bytes", fsync=True)
    assert path.read_bytes() == b"\x00bytes"
    assert mode(path) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["instance.json"]


def test_write_private_never_creates_a_wider_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The temporary file has mode 0600 before its first byte, and is never chmod-ed."""
    path = tmp_path / "secret.json"
    seen: list[int] = []
    real_write = os.write

    def spy(fd: int, data: bytes | memoryview) -> int:
        seen.append(stat.S_IMODE(os.fstat(fd).st_mode))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", spy)
    monkeypatch.setattr(os, "chmod", lambda *a, **k: pytest.fail("chmod called"))
    monkeypatch.setattr(os, "fchmod", lambda *a, **k: pytest.fail("fchmod called"))
    layout.write_private(path, "x" * 100_000)
    assert seen and set(seen) == {0o600}


def test_write_private_replaces_a_stale_temporary_and_cleans_up_on_failure(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.json"
    stale = tmp_path / f".state.json.tmp-{os.getpid()}"
    stale.write_text("left by a crash")
    os.chmod(stale, 0o644)
    layout.write_private(path, "new")
    assert path.read_text() == "new" and mode(path) == 0o600
    assert not stale.exists()
    with pytest.raises(OSError):
        layout.write_private(tmp_path / "missing" / "x.json", "y")
    (tmp_path / "dir").mkdir()
    with pytest.raises(OSError):
        layout.write_private(tmp_path / "dir", "y")  # cannot replace a directory
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "state.json"]
