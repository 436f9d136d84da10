"""The CLI over a real data directory (files + SQLite), driven with CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from umonitor.cli import main
from umonitor.records import Kind, Origin, Record, Severity
from umonitor.store.writer import Store

NOW = 1_764_164_675_000_000_000


@pytest.fixture
def data(tmp_path: Path) -> Path:
    store = Store(tmp_path)
    log = store.log("web-1")
    store.begin_boot(log, "aa" * 16, "umonitor-c/1.0.0", "10.77.0.5:4000", "web-1")
    store.add_records(
        log,
        "aa" * 16,
        [
            Record(1, Severity.INFO, "started", mono_ns=1, wall_ns=NOW),
            Record(
                2,
                Severity.WARNING,
                "NULL pointer passed",
                Kind.LOG,
                2,
                NOW + 1000,
                "demo.c",
                30,
                "check",
                (("arg", "p"),),
            ),
            Record(3, Severity.ERR, "division by zero", wall_ns=NOW + 2000, fields=(("b", "0"),)),
            Record(4, Severity.DEBUG, "evil \x1b[2J text", wall_ns=NOW + 3000),
        ],
        Origin.APP,
        NOW,
    )
    log = store.log("db")
    store.begin_boot(log, "bb" * 16, "umonitor-py/1.0.0", "10.77.0.6:4000", "db")
    store.add_records(
        log, "bb" * 16, [Record(1, Severity.CRIT, "corrupt", wall_ns=NOW + 5000)], Origin.APP, NOW
    )
    console = store.log("web-1", "console.log")
    store.begin_boot(console, "cc" * 16, "console", "", "web-1")
    store.add_records(
        console,
        "cc" * 16,
        [Record(1, Severity.INFO, "Booting Linux", wall_ns=NOW + 500)],
        Origin.CONSOLE,
        NOW,
    )
    store.close()
    return tmp_path


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_logs_text(data: Path) -> None:
    code, out, _ = run("logs", "--data", str(data))
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 6
    assert lines[0].endswith("web-1 info started")
    assert lines[1].endswith("web-1 info/console Booting Linux")
    assert "web-1 warning demo.c:30 check: NULL pointer passed arg=p" in lines[2]
    assert "\x1b" not in out and "evil \\x1b[2J text" in out


def test_logs_single_instance_has_no_name_prefix(data: Path) -> None:
    code, out, _ = run("logs", "--data", str(data), "db")
    assert code == 0
    assert out.strip().endswith("Z crit corrupt")


def test_logs_json_fields(data: Path) -> None:
    code, out, _ = run("logs", "--data", str(data), "-o", "json", "-p", "err")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["instance"], r["severity"], r["message"]) for r in rows] == [
        ("web-1", "err", "division by zero"),
        ("db", "crit", "corrupt"),
    ]
    assert set(rows[0]) >= {
        "instance",
        "time",
        "severity",
        "seq",
        "origin",
        "file",
        "line",
        "function",
        "message",
        "fields",
    }
    assert rows[0]["fields"] == {"b": "0"} and rows[0]["time"].endswith("Z")


def test_logs_grep_lines_and_priority(data: Path) -> None:
    assert run("logs", "--data", str(data), "--grep", "ZERO")[1].count("\n") == 1
    assert run("logs", "--data", str(data), "-n", "2")[1].count("\n") == 2
    assert run("logs", "--data", str(data), "--origin", "console")[1].count("\n") == 1
    assert run("logs", "--data", str(data), "--origin", "app")[1].count("\n") == 5
    assert run("logs", "--data", str(data), "-p", "warning")[1].count("\n") == 3
    assert run("logs", "--data", str(data), "-p", "4")[1].count("\n") == 3


def test_ls_text_and_json(data: Path) -> None:
    code, out, _ = run("ls", "--data", str(data))
    assert code == 0
    assert out.splitlines()[0].split()[:4] == ["NAME", "STATE", "LEVEL", "ADDRESS"]
    code, out, _ = run("ls", "--data", str(data), "-o", "json")
    rows = {r["name"]: r for r in map(json.loads, out.splitlines())}
    assert rows["web-1"]["counts"]["warning"] == 1
    assert rows["web-1"]["records"] == 5
    assert rows["web-1"]["address"] == "10.77.0.5:4000"
    assert rows["web-1"]["connected"] is False
    assert rows["web-1"]["level"] is None  # known only while connected
    assert rows["db"]["counts"]["crit"] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["logs", "--since", "someday"], "cannot read the time"),
        (["logs", "-p", "loud"], "unknown level"),
        (["logs", "nosuch"], "no instance named nosuch"),
        (["logs", "-n", "-3"], "-n must be 0 or more"),
        (["level", "web-1", "loud"], "unknown level 'loud'"),
        (["level", "web-1", "info"], "no collector is running on"),
        (["ping", "web-1"], "no collector is running on"),
    ],
)
def test_user_mistakes_are_one_line(data: Path, args: list[str], message: str) -> None:
    code, _out, err = run(*args, "--data", str(data))
    assert code == 2
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_missing_data_dir_is_explained(tmp_path: Path) -> None:
    code, _, err = run("ls", "--data", str(tmp_path / "nothing"))
    assert code == 2 and "no umonitor data" in err


def test_send_without_collector_fails_clearly() -> None:
    code, _, err = run("send", "--to", "127.0.0.1:1", "--name", "x", "--timeout", "0.3", "hi")
    assert code == 4 and "did not acknowledge" in err


def test_send_bad_field_and_level() -> None:
    assert run("send", "--name", "x", "-F", "novalue", "hi")[0] == 2
    assert run("send", "--name", "x", "-p", "loud", "hi")[0] == 2


def test_serve_rejects_bad_listen_address(tmp_path: Path) -> None:
    code, _, err = run("serve", "--data", str(tmp_path), "--listen", "127.0.0.1:http")
    assert code == 2 and "port must be a number" in err


def test_run_passes_symbols_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from umonitor.fleet import daemon

    sent: list[dict[str, object]] = []
    monkeypatch.setattr(daemon, "request", lambda root, message: sent.append(message) or {})
    (tmp_path / "app").write_bytes(b"k")
    (tmp_path / "app.dbg").write_bytes(b"\x7fELF\x02\x01\x01")
    (tmp_path / "notes.txt").write_text("x")
    monkeypatch.chdir(tmp_path)  # relative paths, as a user types them
    runner = CliRunner()
    args = ["run", "app", "--name", "uk", "--flavor", "unikraft", "--data", str(tmp_path)]
    done = runner.invoke(main, [*args, "--symbols", "app.dbg"])
    assert done.exit_code == 0, done.output
    refused = runner.invoke(main, [*args, "--symbols", "notes.txt"])
    plain = runner.invoke(main, args)
    assert sent[0]["instance"]["symbols"] == str(tmp_path / "app.dbg")  # type: ignore[index]
    assert refused.exit_code != 0 and "not an ELF file" in refused.output
    assert plain.exit_code == 0 and sent[1]["instance"]["symbols"] is None  # type: ignore[index]


def test_image_build_passes_cflags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--cflag and --ldflag take a value that starts with a dash, in either spelling,
    repeatable."""
    from umonitor.image import linux

    calls: list[tuple[list[Path], Path, dict[str, object]]] = []

    def fake_build(sources: list[Path], out: Path, **kwargs: object) -> linux.Image:
        calls.append((sources, out, kwargs))
        return linux.Image(out / "vmlinuz", out / "initrd.img", out / "app", "6.1.0-1-amd64", ())

    monkeypatch.setattr(linux, "build_image", fake_build)
    source = tmp_path / "app.cpp"
    source.write_text("int main() {}\n")
    out = tmp_path / "out"
    args = ["image", "build", str(source), "-o", str(out)]
    flags = ["--cflag", "-finstrument-functions", "--cflag=-DX=1", "--ldflag", "-lm"]
    done = CliRunner().invoke(main, [*args, *flags, "--ldflag=-lrt"])
    assert done.exit_code == 0, done.output
    cflags = ("-finstrument-functions", "-DX=1")
    assert calls == [
        ([source], out, {"kernel_version": None, "cflags": cflags, "ldflags": ("-lm", "-lrt")})
    ]
    assert done.output == f"kernel {out / 'vmlinuz'}\ninitrd {out / 'initrd.img'}\n"


def test_every_command_is_found_where_the_group_looks_for_it() -> None:
    """``main`` imports a command's module only when it runs: the map must be whole."""
    import importlib

    from umonitor.cli.app import COMMANDS

    for module in set(COMMANDS.values()):
        importlib.import_module(f"umonitor.cli.{module}")
    assert {n: c.callback.__module__ for n, c in main.commands.items()} == {
        n: f"umonitor.cli.{m}" for n, m in COMMANDS.items()
    }
    result = CliRunner().invoke(main, ["--help"])
    assert all(name in result.output for name in COMMANDS)
