"""The store's limits as users give them: ``[store]`` in umonitor.toml and serve's options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from umonitor.cli import main
from umonitor.errors import UsageError
from umonitor.fleet.config import load_config
from umonitor.records import Origin, Record, Severity
from umonitor.store.retention import Limits
from umonitor.store.writer import FsyncPolicy, Store

BASE = """
[[instance]]
name = "web"
kernel = "vmlinuz"
"""


def config(tmp_path: Path, store: str) -> Path:
    (tmp_path / "vmlinuz").write_bytes(b"k")
    path = tmp_path / "umonitor.toml"
    path.write_text(BASE + store)
    return path


def test_store_section(tmp_path: Path) -> None:
    path = config(
        tmp_path,
        '[store]\nrotate_size = "16MiB"\nretain_files = 3\nretain_days = 14\nquota = "10GiB"\n',
    )
    assert load_config(path).store == Limits(16 << 20, 3, 14.0, 10 << 30)
    path = config(tmp_path, "[store]\nrotate_size = 1048576\nretain_days = 0.5\n")
    assert load_config(path).store == Limits(1 << 20, 5, 0.5, 0)


def test_no_store_section_means_the_defaults(tmp_path: Path) -> None:
    assert load_config(config(tmp_path, "")).store == Limits()


def test_store_errors_have_their_lines(tmp_path: Path) -> None:
    path = config(
        tmp_path,
        "[store]\n"  # line 5
        'rotate_size = "big"\n'
        "retain_files = -1\n"
        'retain_days = "two weeks"\n'
        "quota = true\n"
        "rotate = 5\n",
    )
    with pytest.raises(UsageError) as info:
        load_config(path)
    message = str(info.value)
    assert "umonitor.toml:6: not a size: 'big'" in message
    assert "umonitor.toml:7: retain_files must be a number of files, 0 or more" in message
    assert "umonitor.toml:8: retain_days must be a number of days, 0 or more" in message
    assert 'umonitor.toml:9: quota must be a size like "64MiB" or a number of bytes' in message
    assert "umonitor.toml:10: unknown key 'rotate' in [store]" in message


def test_limits_that_make_no_sense_are_refused(tmp_path: Path) -> None:
    path = config(tmp_path, '[store]\nrotate_size = "64MiB"\nquota = "100MiB"\n')
    with pytest.raises(UsageError, match=r"umonitor.toml:5: the quota must be at least twice"):
        load_config(path)
    path = config(tmp_path, "[store]\nrotate_size = 100\n")
    with pytest.raises(UsageError, match=r"umonitor.toml:5: the rotate size must be 0"):
        load_config(path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rotate-size", "lots"], "not a size: 'lots'"),
        (["--rotate-size", "1KiB"], "the rotate size must be 0 (off) or at least 4096 bytes"),
        (["--quota", "1MiB", "--rotate-size", "1MiB"], "the quota must be at least twice"),
        (["--retain-files", "-2"], "retention limits cannot be negative"),
    ],
)
def test_serve_refuses_bad_limits(tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["serve", "--data", str(tmp_path), *args])
    assert result.exit_code == 2
    assert message in result.stderr


def test_ls_shows_what_retention_took(tmp_path: Path) -> None:
    store = Store(tmp_path, FsyncPolicy.NEVER, Limits(rotate_size=4096, retain_files=1))
    for name, count in (("busy", 400), ("calm", 10)):
        log = store.log(name)
        store.begin_boot(log, "aa", "lib", "10.0.0.1:1", name)
        for first in range(1, count + 1, 10):
            batch = [Record(i, Severity.INFO, f"record {i}") for i in range(first, first + 10)]
            store.add_records(log, "aa", batch, Origin.APP, 0)
            store.commit()
    store.close()
    deleted = store.disk.losses["busy"].deleted_records
    assert deleted > 0
    result = CliRunner().invoke(main, ["ls", "--data", str(tmp_path)])
    header, *rows = result.stdout.splitlines()
    assert header.split()[-2:] == ["DELETED", "REFUSED"]
    cells = {row.split()[0]: row.split() for row in rows}
    assert cells["busy"][-2:] == [str(deleted), "0"] and cells["calm"][-2:] == ["0", "0"]
    result = CliRunner().invoke(main, ["ls", "--data", str(tmp_path), "-o", "json"])
    busy = next(r for r in map(json.loads, result.stdout.splitlines()) if r["name"] == "busy")
    assert busy["deleted_records"] == deleted and busy["records"] == 400 - deleted
    assert busy["deleted_files"] > 0 and busy["store"] == "ok"


def test_reindex_command(tmp_path: Path) -> None:
    store = Store(tmp_path, FsyncPolicy.NEVER)
    log = store.log("web")
    store.begin_boot(log, "aa", "", "", "web")
    records = [Record(i, Severity.INFO, "x") for i in range(1, 6)]
    store.add_records(log, "aa", records, Origin.APP, 0)
    store.close()
    result = CliRunner().invoke(main, ["reindex", "--data", str(tmp_path)])
    assert result.exit_code == 0
    assert result.stdout.startswith("reindexed 1 instance: 5 records from 1 file in ")
    result = CliRunner().invoke(main, ["reindex", "--data", str(tmp_path / "none")])
    assert result.exit_code == 2 and "no umonitor data" in result.stderr
