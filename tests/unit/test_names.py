"""Instance names from guests can never become paths outside their directory."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from umonitor.store import layout
from umonitor.store.names import is_instance_name, sanitize_instance_name

HOSTILE = [
    "..",
    ".",
    "../x",
    "../../etc/passwd",
    "/",
    "/etc/passwd",
    "a/b",
    "a\\b",
    "a\0b",
    "x" * 10240,
    "",
    " ",
    "\u202eevil",
    "ｗｅｂ-1",
    "web\u20141",
    "Web-1",
    "WEB-1",
    ".hidden",
    "-rf",
    "con",
    "nul\0",
    "\n",
    "a\x1b[31m",
    "index.sqlite",
]


@pytest.mark.parametrize("raw", HOSTILE)
def test_hostile_names_stay_inside(raw: str, tmp_path: Path) -> None:
    name = sanitize_instance_name(raw)
    assert is_instance_name(name)
    assert len(name) <= 64
    path = layout.instance_dir(tmp_path, name).resolve()
    assert path.parent == (tmp_path / "instances").resolve()


def test_plain_names_are_kept_and_case_folds() -> None:
    assert sanitize_instance_name("web-1") == "web-1"
    assert sanitize_instance_name("10.77.0.5") == "10.77.0.5"
    assert sanitize_instance_name("Web-1") == sanitize_instance_name("web-1")


def test_changed_names_do_not_collide() -> None:
    assert sanitize_instance_name("../x") != sanitize_instance_name("x")
    assert sanitize_instance_name("a b") != sanitize_instance_name("a-b")
    assert sanitize_instance_name("x" * 100) != sanitize_instance_name("x" * 101)


def test_unsanitized_name_is_refused_by_layout(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        layout.instance_dir(tmp_path, "../x")


@given(st.text())
def test_any_name_sanitizes_to_a_safe_stable_name(raw: str) -> None:
    name = sanitize_instance_name(raw)
    assert is_instance_name(name)
    assert sanitize_instance_name(raw) == name
    assert sanitize_instance_name(name) == name
