"""Nanos manifests: exact text, refusals, and every value read back as Nanos reads it.

``NanosReader`` is a model of Nanos' manifest parser (src/runtime/tuple_parser.c at
b9c3671), written from its rules, so that the property "any argument and environment
reaches the program unchanged" can be checked without booting. The same cases were
checked on a real boot (argv and environ printed by the program).
"""

from __future__ import annotations

import ipaddress
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from umonitor.errors import UsageError
from umonitor.fleet.flavors import GuestNet, boot_spec
from umonitor.image import nanos

ADDRESS = ipaddress.IPv4Interface("10.77.0.5/24")
GATEWAY = ipaddress.IPv4Address("10.77.0.1")
APP = Path("/srv/app")
KLIBS = Path("/opt/nanos/klibs")
NET = GuestNet("web-1", ADDRESS, GATEWAY, 2333, "s3cret")

_SPACE = " \n\r\t"
_NAME_END = frozenset("()[]:|/" + _SPACE)
_VALUE_END = frozenset("()[]" + _SPACE)

Value = str | list["Value"] | dict[str, "Value"]


class NanosReader:
    """Reads a manifest the way Nanos' tuple parser does; ValueError where Nanos fails.

    Where white space may stand, ``#`` starts a comment to the end of the line. A bare
    word ends at white space or ``()[]`` (a name also at ``:|/``); a quoted one at the
    next unescaped ``"``, a backslash taking the character after it as it is. After a
    vector element, white space then ``]`` gives one more, empty, element.
    """

    def __init__(self, text: str) -> None:
        self._text = text
        self._at = 0

    def read(self) -> dict[str, Value]:
        self._skip()
        self._expect("(")
        root = self._tuple()
        self._skip()
        if self._at != len(self._text):
            raise ValueError(f"text after the manifest at {self._at}")
        return root

    def _peek(self) -> str:
        if self._at >= len(self._text):
            raise ValueError("manifest ends early")
        return self._text[self._at]

    def _take(self) -> str:
        char = self._peek()
        self._at += 1
        return char

    def _expect(self, char: str) -> None:
        if self._take() != char:
            raise ValueError(f"expected {char!r} at {self._at - 1}")

    def _skip(self) -> None:
        while self._at < len(self._text):
            char = self._text[self._at]
            if char == "#":
                end = self._text.find("\n", self._at)
                self._at = len(self._text) if end < 0 else end + 1
            elif char in _SPACE:
                self._at += 1
            else:
                return

    def _word(self, ends: frozenset[str]) -> str:
        if self._peek() == '"':
            self._at += 1
            chars = []
            while (char := self._take()) != '"':
                chars.append(self._take() if char == "\\" else char)
            return "".join(chars)
        start = self._at
        while self._peek() not in ends:
            self._at += 1
        return self._text[start : self._at]

    def _value(self) -> Value:
        char = self._peek()
        if char in "([":
            self._at += 1
            return self._tuple() if char == "(" else self._vector()
        self._skip()
        return self._word(_VALUE_END)

    def _tuple(self) -> dict[str, Value]:
        tuple_: dict[str, Value] = {}
        self._skip()
        while self._peek() != ")":
            name = self._word(_NAME_END)
            self._skip()
            self._expect(":")
            tuple_[name] = self._value()
            self._skip()
        self._at += 1
        return tuple_

    def _vector(self) -> list[Value]:
        vector: list[Value] = []
        self._skip()
        while self._peek() != "]":
            self._skip()
            vector.append(self._value())
        self._at += 1
        return vector


def test_reader_follows_nanos_quirks() -> None:
    assert NanosReader('(a:[x "y z" ] # note\n b:(c:"q\\"\\\\"))').read() == {
        "a": ["x", "y z", ""],
        "b": {"c": 'q"\\'},
    }


def test_manifest_without_syslog() -> None:
    text = nanos.manifest(APP, ["-v", "two words"], {"A": "1"}, ADDRESS, GATEWAY, None, None)
    assert text == (
        "(\n"
        "    children:(app:(contents:(host:/srv/app)))\n"
        "    program:/app\n"
        '    arguments:[app -v "two words"]\n'
        "    environment:(A:1)\n"
        "    en1:(ipaddr:10.77.0.5 netmask:255.255.255.0 gateway:10.77.0.1)\n"
        ")\n"
    )


def test_manifest_for_a_fleet_instance_with_syslog() -> None:
    env = dict(boot_spec("nanos", NET).environment)
    text = nanos.manifest(APP, [], env, ADDRESS, GATEWAY, ("10.77.0.1", 5514), KLIBS)
    assert text == (
        "(\n"
        "    children:(app:(contents:(host:/srv/app)))\n"
        "    program:/app\n"
        "    arguments:[app]\n"
        '    environment:(UMON_CONFIG:"umon.collector=10.77.0.1:2333 umon.name=web-1 '
        'umon.token=s3cret" IMAGE_NAME:web-1)\n'
        "    en1:(ipaddr:10.77.0.5 netmask:255.255.255.0 gateway:10.77.0.1)\n"
        "    boot:(children:(klib:(children:(syslog:(contents:"
        "(host:/opt/nanos/klibs/syslog))))))\n"
        "    klibs:bootfs\n"
        "    syslog:(server:10.77.0.1 server_port:5514)\n"
        ")\n"
    )
    assert NanosReader(text).read()["syslog"] == {"server": "10.77.0.1", "server_port": "5514"}


@pytest.mark.parametrize(
    ("word", "written"),
    [
        ("plain-1.0", "plain-1.0"),
        ("key=v:w/x", "key=v:w/x"),
        ("", '""'),
        ("two words", '"two words"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("C:\\dir\\", '"C:\\\\dir\\\\"'),
        ("#not-a-comment", '"#not-a-comment"'),
        ("(x)", '"(x)"'),
        ("[x]", '"[x]"'),
        ("ünï", '"ünï"'),
        ("line\nbreak", '"line\nbreak"'),
    ],
)
def test_value_words(word: str, written: str) -> None:
    assert nanos.value_word("argument", word) == written
    assert NanosReader(f"(v:{written})").read() == {"v": word}


def test_names_are_quoted_where_nanos_would_end_them() -> None:
    assert nanos.name_word("name", "LANG") == "LANG"
    assert nanos.name_word("name", "a:b") == '"a:b"'
    assert nanos.name_word("name", "a/b") == '"a/b"'
    assert nanos.name_word("name", "a|b") == '"a|b"'


def test_the_flavor_gives_the_library_and_the_syslog_klib_their_names() -> None:
    assert dict(boot_spec("nanos", GuestNet("db", ADDRESS, GATEWAY, 7000)).environment) == {
        "UMON_CONFIG": "umon.collector=10.77.0.1:7000 umon.name=db",
        "IMAGE_NAME": "db",
    }


def test_klibs_dir_is_the_ops_layout() -> None:
    assert nanos.klibs_dir(Path("/root/.ops/0.1.54")) == Path("/root/.ops/0.1.54/klibs")


_TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\0"))


@given(
    args=st.lists(_TEXT, max_size=6),
    env=st.dictionaries(_TEXT.filter(lambda n: n != "" and "=" not in n), _TEXT, max_size=4),
)
def test_every_argument_and_variable_reads_back(args: list[str], env: dict[str, str]) -> None:
    text = nanos.manifest(APP, args, env, ADDRESS, GATEWAY, ("collector host", 514), KLIBS)
    root = NanosReader(text).read()
    assert root["arguments"] == ["app", *args]
    assert root["environment"] == env
    assert root["program"] == "/app"
    assert root["en1"] == {
        "ipaddr": "10.77.0.5",
        "netmask": "255.255.255.0",
        "gateway": "10.77.0.1",
    }
    assert root["syslog"] == {"server": "collector host", "server_port": "514"}


def _refused(**changes: object) -> str:
    call: dict[str, object] = {
        "program": APP,
        "args": [],
        "env": {},
        "address": ADDRESS,
        "gateway": GATEWAY,
        "syslog": None,
        "klibs_dir": None,
    }
    call.update(changes)
    with pytest.raises(UsageError) as info:
        nanos.manifest(**call)  # type: ignore[arg-type]
    return str(info.value)


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"args": ["a\0b"]}, "NUL"),
        ({"args": ["\udc80"]}, "not valid text"),
        ({"args": "-v"}, "list of words"),
        ({"env": {"A": "x\0"}}, "NUL"),
        ({"env": {"A=B": "x"}}, "without '='"),
        ({"env": {"": "x"}}, "non-empty"),
        ({"program": Path("app")}, "absolute path"),
        ({"program": "/srv/app"}, "must be a path"),
        ({"gateway": ipaddress.IPv4Address("10.78.0.1")}, "another address"),
        ({"gateway": ipaddress.IPv4Address("10.77.0.5")}, "another address"),
        ({"address": ipaddress.IPv4Interface("10.77.0.0/24")}, "network's own"),
        ({"address": ipaddress.IPv4Address("10.77.0.5")}, "IPv4 interface"),
        ({"syslog": ("10.77.0.1", 514)}, "klibs"),
        ({"syslog": ("10.77.0.1", 0), "klibs_dir": KLIBS}, "port"),
        ({"syslog": ("10.77.0.1", 65536), "klibs_dir": KLIBS}, "port"),
        ({"syslog": ("10.77.0.1", True), "klibs_dir": KLIBS}, "port"),
        ({"syslog": ("", 514), "klibs_dir": KLIBS}, "host"),
        ({"syslog": ("10.77.0.1", 514), "klibs_dir": Path("klibs")}, "absolute path"),
    ],
)
def test_refusals(changes: dict[str, object], says: str) -> None:
    assert says in _refused(**changes)


def test_build_image_names_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "kernel.img").write_bytes(b"")
    with pytest.raises(UsageError, match=r"has no boot\.img"):
        nanos.build_image(tmp_path, "()", tmp_path / "out.img")


def _fake_mkfs(nanos_dir: Path, script: str) -> None:
    for name in ("kernel.img", "boot.img"):
        (nanos_dir / name).write_bytes(b"")
    mkfs = nanos_dir / "mkfs"
    mkfs.write_text("#!/bin/sh\n" + script)
    mkfs.chmod(stat.S_IRWXU)


def test_build_image_reports_mkfs_own_words(tmp_path: Path) -> None:
    # mkfs prints its metadata and then its error on stdout, not stderr.
    _fake_mkfs(tmp_path, 'cat >/dev/null; echo metadata; echo "couldn\'t stat file /x"; exit 2\n')
    with pytest.raises(UsageError, match=r"couldn't stat file /x$"):
        nanos.build_image(tmp_path, "()", tmp_path / "out.img")
    assert not (tmp_path / "out.img").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_build_image_writes_the_image_for_its_owner_only(tmp_path: Path) -> None:
    # The fake mkfs checks its arguments and stores the manifest it was fed as the image.
    _fake_mkfs(
        tmp_path,
        f'[ "$1 $2 $3 $4" = "-b {tmp_path}/boot.img -k {tmp_path}/kernel.img" ] || exit 9\n'
        'cat >"$5"\n',
    )
    out = tmp_path / "web-1.img"
    nanos.build_image(tmp_path, "(program:/app)\n", out)
    assert out.read_text() == "(program:/app)\n"
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
