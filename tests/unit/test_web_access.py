"""The dashboard's access rules that need no server: addresses, tokens, cookies."""

from __future__ import annotations

from pathlib import Path

import pytest

from umonitor.errors import UsageError
from umonitor.web.access import (
    check_exposure,
    cookie_value,
    host_of,
    is_loopback,
    load_token,
    parse_listen,
)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("127.0.0.1:8321", ("127.0.0.1", 8321)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("[::1]:9000", ("::1", 9000)),
        ("localhost:80", ("localhost", 80)),
        (" 10.0.0.1:65535 ", ("10.0.0.1", 65535)),
    ],
)
def test_listen_addresses(text: str, want: tuple[str, int]) -> None:
    assert parse_listen(text) == want


@pytest.mark.parametrize("text", ["", "8321", ":8321", "host:", "host:port", "h:65536", "h:-1"])
def test_bad_listen_addresses_are_one_sentence(text: str) -> None:
    with pytest.raises(UsageError, match="cannot read --listen"):
        parse_listen(text)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.3.2.1", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.77.0.1", False),
        ("example.org", False),
        ("localhost.example.org", False),
    ],
)
def test_what_counts_as_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_public_address_needs_a_token() -> None:
    check_exposure("127.0.0.1", None)
    check_exposure("0.0.0.0", "t")
    with pytest.raises(UsageError, match=r"^listening on 0\.0\.0\.0 \(not loopback\) needs"):
        check_exposure("0.0.0.0", None)


def test_the_token_comes_from_the_file_then_the_environment(tmp_path: Path) -> None:
    file = tmp_path / "token"
    file.write_text("  from-file \nignored\n")
    assert load_token(file, {"UMONITOR_WEB_TOKEN": "from-env"}) == "from-file"
    assert load_token(None, {"UMONITOR_WEB_TOKEN": " from-env\n"}) == "from-env"
    assert load_token(None, {"UMONITOR_WEB_TOKEN": "  "}) is None
    assert load_token(None, {}) is None


@pytest.mark.parametrize("content", [b"", b"\nsecond\n", b"   \n", b"x" * 5000])
def test_a_token_file_without_a_token_is_refused(tmp_path: Path, content: bytes) -> None:
    file = tmp_path / "token"
    file.write_bytes(content)
    with pytest.raises(UsageError, match="holds no token on its first line"):
        load_token(file, {})


def test_an_unreadable_token_file_is_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read the token file"):
        load_token(tmp_path / "missing", {})
    with pytest.raises(UsageError, match="cannot read the token file"):
        load_token(tmp_path, {})  # a directory


def test_the_cookie_holds_no_token() -> None:
    value = cookie_value("s3cret")
    assert "s3cret" not in value and len(value) == 64
    assert value == cookie_value("s3cret") != cookie_value("s3cret2")


@pytest.mark.parametrize(
    ("header", "host"),
    [
        ("127.0.0.1:8321", "127.0.0.1"),
        ("localhost", "localhost"),
        ("[::1]:8321", "::1"),
        ("[::1]", "::1"),
        ("evil.example:80", "evil.example"),
        ("::1", "::1"),
        ("", ""),
    ],
)
def test_the_host_of_a_host_header(header: str, host: str) -> None:
    assert host_of(header) == host
