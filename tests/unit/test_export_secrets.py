"""Exporter credentials: header values from the environment, redacted in text, piped."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from umonitor.errors import UsageError
from umonitor.export.config import (
    REDACTED,
    parse_export,
    parse_export_option,
    read_spec_lines,
    spec_lines,
)
from umonitor.export.runner import read_specs
from umonitor.records import Severity

SECRET = "Bearer s3cr3t-9f86d081884c7d65"
URL = "otlp+https://otel.example:4318/v1/logs"


def test_header_value_from_the_environment() -> None:
    spec = parse_export(
        "o", f"{URL}?header=Authorization:env:OTEL_AUTH", environ={"OTEL_AUTH": SECRET}
    )
    assert spec.headers == (("Authorization", SECRET),)
    # The toml form (options as keys) resolves the same way.
    spec = parse_export("o", URL, {"header": ["X-Key:env:K", "X-Plain:v"]}, environ={"K": " key "})
    assert spec.headers == (("X-Key", "key"), ("X-Plain", "v"))


def test_header_value_from_this_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UMON_TEST_AUTH", SECRET)
    spec = parse_export_option(f"o={URL}?header=Authorization:env:UMON_TEST_AUTH")
    assert spec.headers == (("Authorization", SECRET),)


@pytest.mark.parametrize(
    ("header", "environ", "message"),
    [
        ("Authorization:env:NOPE", {}, "environment variable NOPE, which is not set"),
        ("Authorization:env:1BAD", {}, "not an environment variable name"),
        ("Authorization:env:", {}, "not an environment variable name"),
        ("X:env:V", {"V": "a\r\nHost: evil"}, "line break"),
    ],
)
def test_bad_environment_headers(header: str, environ: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_export("o", f"{URL}?header={header}", environ=environ)


def test_full_url_redacts_header_values_unless_asked() -> None:
    spec = parse_export("o", f"{URL}?level=warning&header=Authorization:{SECRET}")
    shown = unquote(spec.full_url())
    assert SECRET not in shown and f"header=Authorization:{REDACTED}" in shown
    assert "level=warning" in shown
    full = spec.full_url(header_values=True)
    assert parse_export("o", full) == spec


def test_spec_lines_round_trip_without_reading_the_environment() -> None:
    specs = [
        parse_export("a", f"{URL}?header=Authorization:env:T", environ={"T": "env:NOT_A_VAR"}),
        parse_export("b", "syslog+tcp://10.0.0.1:514?start=beginning&level=err&batch=10"),
        parse_export("c", "otlp+http://[::1]:4318/x?compression=gzip&header=A:1&header=B:%20x"),
    ]
    data = spec_lines(specs)
    assert data.count(b"\n") == 3
    back = read_spec_lines(data)
    assert back == specs
    assert back[0].headers == (("Authorization", "env:NOT_A_VAR"),)  # taken as it is
    assert back[1].start == "beginning" and back[1].level is Severity.ERR


@given(st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=40))
def test_any_latin1_header_value_survives_the_pipe(value: str) -> None:
    spec = replace(parse_export("o", URL), headers=(("X-Key", value),))
    assert read_spec_lines(spec_lines([spec])) == [spec]


@pytest.mark.parametrize(
    "line",
    [b"not json", b'{"name": "o"}', b'{"name": 1, "url": "x", "headers": []}', b"[1, 2]"],
)
def test_bad_spec_lines(line: bytes) -> None:
    with pytest.raises(UsageError, match="spec line 1"):
        read_spec_lines(line)


def test_runner_reads_its_specs_from_stdin_and_checks_the_names(tmp_path: Path) -> None:
    specs = [parse_export("a", f"{URL}?header=K:v"), parse_export("b", "relp://h:2514")]
    assert read_specs(io.BytesIO(spec_lines(specs)), ["a", "b"]) == specs
    assert read_specs(io.BytesIO(spec_lines(specs))) == specs
    with pytest.raises(SystemExit, match="argv names a but"):
        read_specs(io.BytesIO(spec_lines(specs)), ["a"])
    with pytest.raises(SystemExit, match="not valid"):
        read_specs(io.BytesIO(b"{"), [])
    assert read_specs(io.BytesIO(b""), []) == []
