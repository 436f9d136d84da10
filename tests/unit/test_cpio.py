"""The newc writer against the format, and against GNU cpio as an independent reader.

How this works: ``parse_newc`` below is a strict reader written from the format
description (cpio(5), Linux's buffer-format.rst), not from the writer: it checks the
magic, that every field is 8 hex digits, that each header and each data part starts
on a 4-byte boundary with NUL padding, that names are NUL-terminated and counted
with their NUL, and that the trailer ends the archive. Golden bytes pin one small
archive exactly; Hypothesis checks the round trip and the order independence; GNU
cpio (Debian package ``cpio``) lists and unpacks a real archive. A missing cpio is a
failure, not a skip.
"""

from __future__ import annotations

import gzip
import os
import random
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from umonitor.image import cpio

FIELDS = (
    "ino",
    "mode",
    "uid",
    "gid",
    "nlink",
    "mtime",
    "filesize",
    "devmajor",
    "devminor",
    "rdevmajor",
    "rdevminor",
    "namesize",
    "check",
)


@dataclass
class Parsed:
    name: str
    fields: dict[str, int]
    data: bytes
    offset: int


def parse_newc(archive: bytes) -> list[Parsed]:
    """Every member up to and including the trailer; asserts the layout rules."""
    members = []
    at = 0
    while True:
        assert at % 4 == 0, f"header at {at} is not 4-byte aligned"
        header = archive[at : at + 110]
        assert len(header) == 110, "truncated header"
        assert header[:6] == b"070701", f"bad magic {header[:6]!r} at {at}"
        values = {}
        for i, field in enumerate(FIELDS):
            text = header[6 + 8 * i : 14 + 8 * i]
            assert all(c in b"0123456789ABCDEFabcdef" for c in text), (field, text)
            values[field] = int(text, 16)
        assert values["check"] == 0
        namesize = values["namesize"]
        name_end = at + 110 + namesize
        raw_name = archive[at + 110 : name_end]
        assert raw_name.endswith(b"\0") and b"\0" not in raw_name[:-1], raw_name
        data_at = name_end + (-name_end % 4)
        assert archive[name_end:data_at] == b"\0" * (data_at - name_end), "name padding"
        assert data_at % 4 == 0
        data_end = data_at + values["filesize"]
        data = archive[data_at:data_end]
        assert len(data) == values["filesize"], "truncated data"
        next_at = data_end + (-data_end % 4)
        assert archive[data_end:next_at] == b"\0" * (next_at - data_end), "data padding"
        name = raw_name[:-1].decode()
        members.append(Parsed(name, values, data, at))
        at = next_at
        if name == "TRAILER!!!":
            break
    assert at == len(archive), "bytes after the trailer"
    return members


def sample_members() -> list[cpio.Member]:
    return [
        cpio.regular("init", b"#!init\n", 0o755),
        cpio.char_device("dev/console", 5, 1, 0o600),
        cpio.directory("dev"),
        cpio.directory("proc", 0o555),
        cpio.directory("tmp", 0o1777),
        cpio.symlink("sbin/init", "/init"),
        cpio.regular("etc/empty", b""),
        cpio.regular("etc/three", b"abc", 0o640),
        cpio.regular("lib/modules/deep/x.ko", bytes(range(256)) * 5, 0o600),
    ]


# --- the format ----------------------------------------------------------------


def test_golden_bytes_of_one_small_file() -> None:
    # "a" holding "hi": header (110) + "a\0" (2) = 112, aligned; data 2 + 2 padding;
    # trailer header (110) + "TRAILER!!!\0" (11) + 3 padding.
    fields_a = [1, 0o100644, 0, 0, 1, 0, 2, 0, 0, 0, 0, 2, 0]
    fields_trailer = [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 11, 0]
    expected = (
        b"070701"
        + "".join(f"{v:08X}" for v in fields_a).encode()
        + b"a\0"
        + b"hi\0\0"
        + b"070701"
        + "".join(f"{v:08X}" for v in fields_trailer).encode()
        + b"TRAILER!!!\0"
        + b"\0\0\0"
    )
    assert cpio.newc([cpio.regular("a", b"hi")]) == expected
    assert len(expected) == 240


def test_structure_of_a_full_archive() -> None:
    parsed = parse_newc(cpio.newc(sample_members()))
    names = [p.name for p in parsed]
    assert names[-1] == "TRAILER!!!"
    body = parsed[:-1]
    assert names[:-1] == sorted(names[:-1]), "members are sorted by path"
    # parents were added, before their children
    assert {"sbin", "etc", "lib", "lib/modules", "lib/modules/deep"} <= set(names)
    for p in body:
        parent = os.path.dirname(p.name)
        if parent:
            assert names.index(parent) < names.index(p.name)
    assert [p.fields["ino"] for p in body] == list(range(1, len(body) + 1))
    for p in body:
        assert p.fields["mtime"] == 0 and p.fields["uid"] == 0 and p.fields["gid"] == 0
        assert p.fields["devmajor"] == 0 and p.fields["devminor"] == 0
        assert p.fields["namesize"] == len(p.name) + 1
    by_name = {p.name: p for p in body}
    console = by_name["dev/console"]
    assert stat.S_ISCHR(console.fields["mode"]) and stat.S_IMODE(console.fields["mode"]) == 0o600
    assert (console.fields["rdevmajor"], console.fields["rdevminor"]) == (5, 1)
    link = by_name["sbin/init"]
    assert stat.S_ISLNK(link.fields["mode"]) and link.data == b"/init"
    assert stat.S_IMODE(by_name["tmp"].fields["mode"]) == 0o1777
    assert by_name["tmp"].fields["nlink"] == 2 and by_name["init"].fields["nlink"] == 1
    assert stat.S_IMODE(by_name["lib/modules/deep"].fields["mode"]) == 0o755
    assert by_name["lib/modules/deep/x.ko"].data == bytes(range(256)) * 5
    trailer = parsed[-1].fields
    assert trailer["nlink"] == 1 and trailer["filesize"] == 0 and trailer["mode"] == 0


@pytest.mark.parametrize("name_len", range(1, 9))
@pytest.mark.parametrize("data_len", range(6))
def test_padding_for_every_residue(name_len: int, data_len: int) -> None:
    name = "n" * name_len
    archive = cpio.newc([cpio.regular(name, b"x" * data_len)])
    first = parse_newc(archive)[0]
    name_end = 110 + name_len + 1
    data_at = name_end + (-name_end % 4)
    assert archive[data_at : data_at + data_len] == b"x" * data_len
    assert first.data == b"x" * data_len
    assert len(archive) % 4 == 0


def test_same_members_in_any_order_give_the_same_bytes() -> None:
    members = sample_members()
    assert cpio.newc(members) == cpio.newc(list(reversed(members)))
    assert cpio.gzip_newc(members) == cpio.gzip_newc(list(reversed(members)))


def test_gzip_is_deterministic_and_decompresses_to_newc() -> None:
    packed = cpio.gzip_newc(sample_members())
    assert packed[:3] == b"\x1f\x8b\x08", "gzip magic and deflate"
    assert packed[4:8] == b"\0\0\0\0", "no gzip timestamp"
    assert gzip.decompress(packed) == cpio.newc(sample_members())


def test_fixed_mtime_is_used_everywhere() -> None:
    parsed = parse_newc(cpio.newc(sample_members(), mtime=1_700_000_000))
    assert {p.fields["mtime"] for p in parsed[:-1]} == {1_700_000_000}


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([cpio.regular("a", b""), cpio.regular("/a", b"")], "listed twice"),
        ([cpio.regular("a", b""), cpio.regular("a/b", b"")], "not a directory"),
        ([cpio.regular("../escape", b"")], "bad archive path"),
        ([cpio.regular("a/../b", b"")], "bad archive path"),
        ([cpio.regular("/", b"")], "bad archive path"),
        ([cpio.regular("", b"")], "bad archive path"),
        ([cpio.Member("d", stat.S_IFDIR | 0o755, b"data")], "carry data"),
        ([cpio.Member("l", stat.S_IFLNK | 0o777)], "needs a target"),
        ([cpio.Member("s", stat.S_IFSOCK | 0o755)], "unsupported file type"),
        ([cpio.char_device("c", 1 << 32, 0)], "out of range"),
    ],
)
def test_invalid_members_are_refused(members: list[cpio.Member], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cpio.newc(members)


def test_paths_are_normalized() -> None:
    parsed = parse_newc(cpio.newc([cpio.regular("/x//y/./z", b"1")]))
    assert [p.name for p in parsed] == ["x", "x/y", "x/y/z", "TRAILER!!!"]


_part = st.text(alphabet="abcdefghij0123456789._-", min_size=1, max_size=6).filter(
    lambda s: s not in {".", ".."}
)
_paths = st.lists(_part, min_size=1, max_size=3).map("/".join)
_files = st.dictionaries(
    _paths,
    st.tuples(st.binary(max_size=40), st.sampled_from([0o644, 0o755, 0o600, 0o4755])),
    max_size=8,
)


@given(_files, st.randoms(use_true_random=False))
def test_round_trip_and_order_independence(
    files: dict[str, tuple[bytes, int]], rnd: random.Random
) -> None:
    # keep only leaves: a path that is another's parent cannot also be a file
    leaves = {
        p: v for p, v in files.items() if not any(q.startswith(p + "/") for q in files if q != p)
    }
    members = [cpio.regular(p, data, mode) for p, (data, mode) in leaves.items()]
    archive = cpio.newc(members)
    shuffled = list(members)
    rnd.shuffle(shuffled)
    assert cpio.newc(shuffled) == archive
    parsed = {p.name: p for p in parse_newc(archive)[:-1]}
    for path, (data, mode) in leaves.items():
        assert parsed[path].data == data
        assert parsed[path].fields["mode"] == stat.S_IFREG | mode
    for name, p in parsed.items():
        if name not in leaves:
            assert stat.S_ISDIR(p.fields["mode"]), name
            assert any(q.startswith(name + "/") for q in leaves)


# --- GNU cpio as an independent reader ---------------------------------------------


@pytest.fixture(scope="module")
def cpio_tool() -> str:
    tool = shutil.which("cpio")
    assert tool, "GNU cpio is needed to check archives independently: apt-get install cpio"
    return tool


def test_gnu_cpio_lists_the_archive(cpio_tool: str, tmp_path: Path) -> None:
    archive = tmp_path / "initrd.cpio"
    archive.write_bytes(gzip.decompress(cpio.gzip_newc(sample_members())))
    with archive.open("rb") as f:
        out = subprocess.run(
            [cpio_tool, "-itv", "--quiet", "-H", "newc"],
            stdin=f,
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "LC_ALL": "C", "TZ": "UTC"},
        )
    lines = {}
    for line in out.stdout.splitlines():
        name = line.split(" -> ")[0].split()[-1]
        lines[name] = line
    assert set(lines) == {p.name for p in parse_newc(archive.read_bytes())[:-1]}
    assert lines["dev/console"].startswith("crw-------")
    assert "5,   1" in lines["dev/console"] or "5, 1" in lines["dev/console"]
    assert lines["sbin/init"].startswith("lrwxrwxrwx") and lines["sbin/init"].endswith("-> /init")
    assert lines["init"].startswith("-rwxr-xr-x")
    assert lines["etc/three"].startswith("-rw-r-----")
    assert lines["tmp"].startswith("drwxrwxrwt")
    assert all("1970" in line for line in lines.values())


def test_gnu_cpio_unpacks_the_archive(cpio_tool: str, tmp_path: Path) -> None:
    archive = tmp_path / "initrd.cpio"
    archive.write_bytes(cpio.newc(sample_members()))
    root = tmp_path / "root"
    root.mkdir()
    argv = [cpio_tool, "-idm", "--quiet", "-H", "newc", "--no-absolute-filenames"]
    as_root = os.geteuid() == 0
    if not as_root:  # only root may create device nodes
        argv += ["-f", "dev/console"]
    with archive.open("rb") as f:
        subprocess.run(argv, stdin=f, cwd=root, capture_output=True, check=True)

    assert (root / "init").read_bytes() == b"#!init\n"
    assert stat.S_IMODE((root / "init").stat().st_mode) == 0o755
    assert (root / "etc/three").read_bytes() == b"abc"
    assert stat.S_IMODE((root / "etc/three").stat().st_mode) == 0o640
    assert (root / "etc/empty").read_bytes() == b""
    assert (root / "lib/modules/deep/x.ko").read_bytes() == bytes(range(256)) * 5
    assert os.readlink(root / "sbin/init") == "/init"
    assert (root / "proc").is_dir() and (root / "tmp").is_dir()
    assert (root / "init").stat().st_mtime == 0
    if as_root:
        console = (root / "dev/console").lstat()
        assert stat.S_ISCHR(console.st_mode)
        assert (os.major(console.st_rdev), os.minor(console.st_rdev)) == (5, 1)
