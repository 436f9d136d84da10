"""Guest address leases: stable, persistent, never handed out twice."""

from __future__ import annotations

import json
import multiprocessing
import tempfile
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from umonitor.errors import UsageError
from umonitor.fleet import leases as leases_module
from umonitor.fleet.leases import IFNAMSIZ, OWNER_MAX_AGE, Leases, leases_path

NET = IPv4Network("10.77.0.0/24")
HOST = IPv4Address("10.77.0.1")


def table(tmp_path: Path, network: IPv4Network = NET, host: str | IPv4Address = HOST) -> Leases:
    return Leases(leases_path(tmp_path), network, host)


def test_first_address_is_above_the_host_and_stable(tmp_path: Path) -> None:
    leases = table(tmp_path)
    assert leases.lease("web-1") == IPv4Address("10.77.0.2")
    assert leases.lease("db") == IPv4Address("10.77.0.3")
    assert leases.lease("web-1") == IPv4Address("10.77.0.2")
    assert leases.all() == {"web-1": IPv4Address("10.77.0.2"), "db": IPv4Address("10.77.0.3")}


def test_leases_survive_a_restart(tmp_path: Path) -> None:
    first = table(tmp_path)
    addresses = {name: first.lease(name) for name in ("a", "b", "c")}
    taps = {name: first.tap_name(name) for name in addresses}
    again = table(tmp_path)
    assert again.all() == addresses
    assert {name: again.tap_name(name) for name in addresses} == taps
    assert again.lease("d") == IPv4Address("10.77.0.5")


def test_file_format(tmp_path: Path) -> None:
    leases = table(tmp_path)
    leases.lease("web-1")
    data = json.loads(leases_path(tmp_path).read_text())
    assert data == {
        "version": 1,
        "network": "10.77.0.0/24",
        "host": "10.77.0.1",
        "leases": {"web-1": {"address": "10.77.0.2", "tap": leases.tap_name("web-1")}},
    }
    assert not list(tmp_path.glob("*.tmp*"))


def test_allocation_skips_host_network_and_broadcast_and_wraps(tmp_path: Path) -> None:
    leases = table(tmp_path, IPv4Network("10.0.0.0/29"), "10.0.0.5")
    got = [leases.lease(f"i{n}") for n in range(5)]
    assert got == [IPv4Address(f"10.0.0.{n}") for n in (6, 1, 2, 3, 4)]
    with pytest.raises(UsageError, match=r"no free guest address left in 10\.0\.0\.0/29"):
        leases.lease("one-too-many")


def test_exhaustion_is_a_clear_error_and_changes_nothing(tmp_path: Path) -> None:
    leases = table(tmp_path, IPv4Network("10.0.0.0/30"), "10.0.0.1")
    assert leases.lease("only") == IPv4Address("10.0.0.2")
    before = leases_path(tmp_path).read_bytes()
    with pytest.raises(UsageError, match="release instances that are gone or use a larger subnet"):
        leases.lease("second")
    assert leases_path(tmp_path).read_bytes() == before


def test_release_frees_the_address_for_reuse(tmp_path: Path) -> None:
    leases = table(tmp_path)
    a, b, _ = (leases.lease(name) for name in ("a", "b", "c"))
    assert leases.release("b") is True
    assert leases.release("b") is False
    assert leases.owner(b) is None
    assert leases.lease("d") == b
    assert leases.owner(b) == "d"
    assert leases.owner(a) == "a"


def test_owner(tmp_path: Path) -> None:
    leases = table(tmp_path)
    leases.lease("web-1")
    assert leases.owner("10.77.0.2") == "web-1"
    assert leases.owner(IPv4Address("10.77.0.2")) == "web-1"
    assert leases.owner("10.77.0.3") is None
    assert leases.owner(HOST) is None
    assert leases.owner("not an address") is None


def test_owner_sees_its_own_changes_at_once_and_another_tables_within_its_max_age(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(leases_module.time, "monotonic", lambda: now[0])
    reader, writer = table(tmp_path), table(tmp_path)
    assert reader.owner("10.77.0.2") is None
    writer.lease("x")
    assert writer.owner("10.77.0.2") == "x"  # its own write: at once
    assert reader.owner("10.77.0.2") is None  # read less than OWNER_MAX_AGE ago: not yet
    now[0] += OWNER_MAX_AGE
    assert reader.owner("10.77.0.2") == "x"
    writer.release("x")
    assert writer.owner("10.77.0.2") is None
    now[0] += OWNER_MAX_AGE
    assert reader.owner("10.77.0.2") is None


def test_names_must_be_sanitized(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sanitized"):
        table(tmp_path).lease("../etc")


def test_tap_names_fit_ifnamsiz_and_are_unique(tmp_path: Path) -> None:
    leases = table(tmp_path)
    names = [f"instance-{n}" for n in range(60)] + ["x" * 64, "a"]
    for name in names:
        leases.lease(name)
    taps = [leases.tap_name(name) for name in names]
    assert len(set(taps)) == len(taps)
    for tap in taps:
        assert tap.startswith("umt")
        assert len(tap) <= IFNAMSIZ - 1
        assert tap.isascii() and tap.isalnum()


def test_tap_name_is_deterministic(tmp_path: Path) -> None:
    one, other = table(tmp_path / "one"), table(tmp_path / "other")
    one.lease("web-1")
    other.lease("zzz")
    other.lease("web-1")
    assert one.tap_name("web-1") == other.tap_name("web-1")


def test_tap_name_collision_gets_another_name(tmp_path: Path) -> None:
    probe = table(tmp_path / "probe")
    probe.lease("b")
    taken = probe.tap_name("b")
    path = leases_path(tmp_path)
    path.write_text(
        json.dumps({"version": 1, "leases": {"a": {"address": "10.77.0.2", "tap": taken}}})
    )
    leases = table(tmp_path)
    leases.lease("b")
    assert leases.tap_name("a") == taken
    assert leases.tap_name("b") != taken
    assert len(leases.tap_name("b")) <= 15


def test_tap_name_needs_a_lease(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no address lease"):
        table(tmp_path).tap_name("nobody")


def test_changed_network_moves_the_lease_but_keeps_the_tap(tmp_path: Path) -> None:
    old = table(tmp_path)
    old.lease("a")
    tap = old.tap_name("a")
    new = table(tmp_path, IPv4Network("10.78.0.0/24"), "10.78.0.1")
    assert new.lease("a") == IPv4Address("10.78.0.2")
    assert new.tap_name("a") == tap


@pytest.mark.parametrize(
    ("network", "host", "message"),
    [
        ("10.0.0.0/31", "10.0.0.0", "/30 or shorter"),
        ("10.0.0.0/24", "10.0.1.1", "not a usable address"),
        ("10.0.0.0/24", "10.0.0.0", "not a usable address"),
        ("10.0.0.0/24", "10.0.0.255", "not a usable address"),
    ],
)
def test_bad_network(tmp_path: Path, network: str, host: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        Leases(leases_path(tmp_path), IPv4Network(network), host)


# -- damaged files -------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [b"", b"{not json", b"\xff\xfe", b"[]", b'{"version": 1}', b'{"leases": {}}', b"null"],
)
def test_corrupt_file_starts_empty_and_is_kept_aside(tmp_path: Path, content: bytes) -> None:
    path = leases_path(tmp_path)
    path.write_bytes(content)
    leases = table(tmp_path)
    assert leases.all() == {}
    assert leases.owner("10.77.0.2") is None
    assert leases.lease("a") == IPv4Address("10.77.0.2")
    assert leases.set_aside is not None
    assert leases.set_aside.read_bytes() == content
    assert table(tmp_path).all() == {"a": IPv4Address("10.77.0.2")}


def test_missing_file_is_an_empty_table(tmp_path: Path) -> None:
    leases = table(tmp_path / "not-yet")
    assert leases.all() == {}
    assert leases.lease("a") == IPv4Address("10.77.0.2")
    assert leases.set_aside is None


def test_damaged_records_do_not_free_the_addresses_of_valid_ones(tmp_path: Path) -> None:
    records = {
        "good": {"address": "10.77.0.2", "tap": "umt0000000001"},
        "no-tap": {"address": "10.77.0.3"},
        "bad-tap": {"address": "10.77.0.4", "tap": "../../evil-name"},
        "dup-tap": {"address": "10.77.0.5", "tap": "umt0000000001"},
        "dup-address": {"address": "10.77.0.2", "tap": "umt0000000002"},
        "bad-address": {"address": "10.77.0.300", "tap": "umt0000000003"},
        "../escape": {"address": "10.77.0.6", "tap": "umt0000000004"},
        "not-a-record": "10.77.0.7",
    }
    leases_path(tmp_path).write_text(json.dumps({"version": 1, "leases": records}))
    leases = table(tmp_path)
    assert leases.all() == {
        "good": IPv4Address("10.77.0.2"),
        "no-tap": IPv4Address("10.77.0.3"),
        "bad-tap": IPv4Address("10.77.0.4"),
        "dup-tap": IPv4Address("10.77.0.5"),
    }
    taps = [leases.tap_name(name) for name in ("good", "no-tap", "bad-tap", "dup-tap")]
    assert taps[0] == "umt0000000001"
    assert len(set(taps)) == 4
    assert all(len(tap) <= 15 for tap in taps)
    assert leases.owner("10.77.0.2") == "good"
    assert leases.lease("new") == IPv4Address("10.77.0.6")
    assert leases.set_aside is None


def test_file_from_a_newer_version_is_refused_not_overwritten(tmp_path: Path) -> None:
    path = leases_path(tmp_path)
    path.write_text(json.dumps({"version": 99, "leases": {}}))
    with pytest.raises(UsageError, match="newer umonitor"):
        table(tmp_path).lease("a")
    assert json.loads(path.read_text())["version"] == 99


# -- two processes at once -----------------------------------------------------------


def _lease_many(path: str, names: list[str], start: multiprocessing.synchronize.Event) -> None:
    leases = Leases(Path(path), NET, HOST)
    start.wait()
    for name in names:
        leases.lease(name)


def test_concurrent_processes_never_share_an_address(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    path = str(leases_path(tmp_path))
    mine = [f"p{p}-{n}" for p in range(2) for n in range(40)]
    shared = [f"shared-{n}" for n in range(20)]
    procs = [
        ctx.Process(target=_lease_many, args=(path, mine[p * 40 : (p + 1) * 40] + shared, start))
        for p in range(2)
    ]
    for proc in procs:
        proc.start()
    start.set()
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    leased = table(tmp_path).all()
    assert set(leased) == set(mine) | set(shared)
    assert len(set(leased.values())) == len(leased)
    assert all(address in NET and address != HOST for address in leased.values())


# -- properties ----------------------------------------------------------------------

ops = st.lists(st.tuples(st.booleans(), st.sampled_from([f"i{n}" for n in range(8)])))


@settings(max_examples=50, deadline=None)
@given(ops)
def test_any_lease_release_sequence_keeps_the_table_consistent(
    steps: list[tuple[bool, str]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        leases = Leases(Path(tmp) / "leases.json", IPv4Network("10.0.0.0/28"), "10.0.0.3")
        expected: dict[str, IPv4Address] = {}
        for is_lease, name in steps:
            if is_lease:
                address = leases.lease(name)
                assert expected.setdefault(name, address) == address
            else:
                assert leases.release(name) == (expected.pop(name, None) is not None)
        reloaded = Leases(Path(tmp) / "leases.json", IPv4Network("10.0.0.0/28"), "10.0.0.3")
        assert reloaded.all() == expected
        assert len(set(expected.values())) == len(expected)
        for name, address in expected.items():
            assert reloaded.owner(address) == name
            assert address not in (IPv4Address("10.0.0.3"), IPv4Address("10.0.0.0"))
            assert address != IPv4Address("10.0.0.15")
