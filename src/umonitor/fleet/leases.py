"""Address leases: which instance holds which guest address and which TAP device.

How this works: the table lives in ``DATA/leases.json``. Every change takes an
exclusive ``flock`` on ``DATA/leases.lock``, re-reads the table, changes it, writes a
temporary file, fsyncs it and renames it over the old one. So two umonitor processes
never hand out one address twice, and a crash leaves either the old table or the new
one, never half of each. Readers take no lock (the rename is atomic); they re-read
the file each time but parse it again only when its bytes changed, so ``owner`` is
cheap enough for the collector to call per connection.

An instance keeps its record until it is released, so it gets the same address and
the same TAP device name after a restart. A file that is not a lease table (not JSON,
wrong shape) is renamed aside to ``leases.json.corrupt-<time>`` and the table starts
empty; a valid table is never dropped, and a record in it holds its address even
when another record in the same file is damaged.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from umonitor.errors import UsageError
from umonitor.store.names import is_instance_name

log = logging.getLogger(__name__)

LEASES = "leases.json"
LOCK = "leases.lock"
VERSION = 1
IFNAMSIZ = 16  # the kernel's buffer for an interface name, NUL included
TAP_PREFIX = "umt"
_TAP = re.compile(rf"[a-z0-9]{{1,{IFNAMSIZ - 1 - len(TAP_PREFIX)}}}")
_TAP_DIGEST = 5  # bytes: "umt" + 10 hex digits = 13 characters
OWNER_MAX_AGE = 1.0  # seconds owner() may answer from the table last read


@dataclass(frozen=True, slots=True)
class Lease:
    """One instance's address on the guest network and its TAP device."""

    instance: str
    address: IPv4Address
    tap: str


def leases_path(root: Path) -> Path:
    """The lease table of data directory ``root``."""
    return root / LEASES


def _tap_candidate(instance: str, attempt: int) -> str:
    salt = f"\0{attempt}" if attempt else ""
    digest = hashlib.blake2s((instance + salt).encode(), digest_size=_TAP_DIGEST)
    return TAP_PREFIX + digest.hexdigest()


def _is_tap_name(name: object) -> bool:
    return (
        isinstance(name, str)
        and name.startswith(TAP_PREFIX)
        and _TAP.fullmatch(name[len(TAP_PREFIX) :]) is not None
    )


class _Table:
    """The parsed file: records in file order, plus what they occupy."""

    def __init__(self) -> None:
        self.records: dict[str, Lease] = {}
        self.by_address: dict[IPv4Address, str] = {}
        self.by_tap: dict[str, str] = {}

    def add(self, lease: Lease) -> None:
        self.records[lease.instance] = lease
        self.by_address[lease.address] = lease.instance
        self.by_tap[lease.tap] = lease.instance

    def remove(self, instance: str) -> Lease | None:
        lease = self.records.pop(instance, None)
        if lease is not None:
            del self.by_address[lease.address]
            del self.by_tap[lease.tap]
        return lease

    def new_tap(self, instance: str) -> str:
        attempt = 0
        while (tap := _tap_candidate(instance, attempt)) in self.by_tap:
            attempt += 1
        return tap


class _Corrupt(Exception):
    """The file exists but is not a lease table."""


def _parse(raw: bytes) -> _Table:
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _Corrupt(f"not JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("leases"), dict):
        raise _Corrupt('no "leases" object')
    version = data.get("version")
    if not isinstance(version, int):
        raise _Corrupt('no integer "version"')
    if version > VERSION:
        raise UsageError(
            f"the lease table was written by a newer umonitor (format {version}); "
            "upgrade umonitor or use another data directory"
        )
    table = _Table()
    unnamed: list[tuple[str, IPv4Address]] = []
    for instance, record in data["leases"].items():
        address = _record_address(instance, record)
        if address is None:
            continue
        if address in table.by_address:
            log.warning(
                "lease table: %s and %s both hold %s; keeping %s",
                table.by_address[address],
                instance,
                address,
                table.by_address[address],
            )
            continue
        tap = record.get("tap")
        if _is_tap_name(tap) and tap not in table.by_tap:
            table.add(Lease(instance, address, tap))
        else:
            unnamed.append((instance, address))
            table.by_address[address] = instance  # hold the address until a tap is chosen
    for instance, address in unnamed:
        table.add(Lease(instance, address, table.new_tap(instance)))
    return table


def _record_address(instance: object, record: object) -> IPv4Address | None:
    if not isinstance(instance, str) or not is_instance_name(instance):
        log.warning("lease table: ignoring a record for unusable name %r", instance)
        return None
    if not isinstance(record, dict) or not isinstance(record.get("address"), str):
        log.warning("lease table: ignoring the record of %s: no address", instance)
        return None
    try:
        return IPv4Address(record["address"])
    except ValueError:
        log.warning("lease table: ignoring the record of %s: bad address", instance)
        return None


class Leases:
    """The lease table of one data directory, for one guest network.

    ``host_address`` is the host's own address on ``network`` (the bridge's); guests
    get addresses from the one above it upward, then wrap around below it.
    """

    def __init__(self, path: Path, network: IPv4Network, host_address: IPv4Address | str) -> None:
        self.path = Path(path)
        self.network = network
        self.host_address = IPv4Address(host_address)
        if network.prefixlen > 30:
            raise UsageError(
                f"guest network {network} has no room for guests; use a prefix of /30 or shorter"
            )
        if self.host_address not in network or self.host_address in (
            network.network_address,
            network.broadcast_address,
        ):
            raise UsageError(
                f"host address {self.host_address} is not a usable address of {network}; "
                "give the host an address inside the guest network"
            )
        self._lock_path = self.path.with_name(LOCK)
        # The table last read or written, its bytes and when (one attribute: thread-safe).
        self._cached: tuple[bytes, _Table, float] = (b"", _Table(), -OWNER_MAX_AGE)
        self.set_aside: Path | None = None
        """Where a corrupt table was moved to by this object, if it ever was."""

    # -- reading ------------------------------------------------------------

    def all(self) -> dict[str, IPv4Address]:
        """Every instance that holds a lease, with its address."""
        return {name: lease.address for name, lease in self._read().records.items()}

    def get(self, instance: str) -> Lease | None:
        """The lease of ``instance``, if it holds one."""
        return self._read().records.get(instance)

    def owner(self, address: IPv4Address | str) -> str | None:
        """The instance that holds ``address``, or None (also for a malformed address).

        Asked for every datagram and syslog message on the collector's event loop, so
        it answers from the table this object last read or wrote, read again at most
        once every ``OWNER_MAX_AGE`` seconds (leases are written by this process before
        the guest that holds them starts).
        """
        try:
            address = IPv4Address(address)
        except ValueError:
            return None
        table = self._cached[1]
        if time.monotonic() - self._cached[2] >= OWNER_MAX_AGE:
            table = self._read()
        name = table.by_address.get(address)
        return name if name in table.records else None

    def tap_name(self, instance: str) -> str:
        """The TAP device name of ``instance``: "umt" + 10 hex digits, at most 15 chars.

        It is derived from the instance name and stored in the lease, so it stays the
        same across restarts; if two names ever hash alike, the later one gets another.
        """
        lease = self.get(instance)
        if lease is None:
            raise UsageError(
                f"instance {instance} holds no address lease; lease an address for it first"
            )
        return lease.tap

    def _read(self) -> _Table:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            raw = b""
        except OSError as exc:
            raise UsageError(
                f"cannot read lease table {self.path}: {exc.strerror}; "
                "check the permissions of the data directory"
            ) from exc
        cached_raw, table, _ = self._cached
        if raw != cached_raw:
            table = _Table()
            try:
                table = _parse(raw)
            except _Corrupt as exc:
                log.warning("lease table %s is corrupt (%s); treating it as empty", self.path, exc)
        self._cached = (raw, table, time.monotonic())
        return table

    # -- changing -----------------------------------------------------------

    def lease(self, instance: str) -> IPv4Address:
        """The address of ``instance``: the one it already holds, else a new one."""
        if not is_instance_name(instance):
            raise ValueError(f"not a sanitized instance name: {instance!r}")
        with self._locked() as table:
            held = table.records.get(instance)
            if held is not None and self._usable(held.address):
                return held.address
            address = self._free(table, exclude=instance)
            tap = held.tap if held is not None else table.new_tap(instance)
            table.remove(instance)
            table.add(Lease(instance, address, tap))
            self._write(table)
            return address

    def release(self, instance: str) -> bool:
        """Give up the lease of ``instance``; whether it held one."""
        with self._locked() as table:
            if table.remove(instance) is None:
                return False
            self._write(table)
            return True

    def _usable(self, address: IPv4Address) -> bool:
        net = self.network
        return (
            address in net
            and address != self.host_address
            and address not in (net.network_address, net.broadcast_address)
        )

    def _free(self, table: _Table, exclude: str) -> IPv4Address:
        net = self.network
        first, last = int(net.network_address) + 1, int(net.broadcast_address) - 1
        host = int(self.host_address)
        for value in itertools.chain(range(host + 1, last + 1), range(first, host)):
            address = IPv4Address(value)
            if table.by_address.get(address, exclude) == exclude:
                return address
        raise UsageError(
            f"no free guest address left in {net} ({len(table.records)} leases); "
            "release instances that are gone or use a larger subnet"
        )

    @contextlib.contextmanager
    def _locked(self) -> Iterator[_Table]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise UsageError(
                f"cannot lock lease table {self._lock_path}: {exc.strerror}; "
                "check the permissions of the data directory"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield self._read_for_update()
        finally:
            os.close(fd)  # also drops the lock

    def _read_for_update(self) -> _Table:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return _Table()
        except OSError as exc:
            raise UsageError(
                f"cannot read lease table {self.path}: {exc.strerror}; "
                "check the permissions of the data directory"
            ) from exc
        try:
            return _parse(raw)
        except _Corrupt as exc:
            stamp = time.strftime("%Y%m%dT%H%M%S")
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{os.getpid()}")
            try:
                os.replace(self.path, aside)
            except OSError as err:
                raise UsageError(
                    f"lease table {self.path} is corrupt and cannot be moved aside "
                    f"({err.strerror}); move or delete it by hand"
                ) from err
            self.set_aside = aside
            log.warning(
                "lease table %s is corrupt (%s); moved it to %s and started a new one",
                self.path,
                exc,
                aside,
            )
            return _Table()

    def _write(self, table: _Table) -> None:
        document: dict[str, Any] = {
            "version": VERSION,
            "network": str(self.network),
            "host": str(self.host_address),
            "leases": {
                lease.instance: {"address": str(lease.address), "tap": lease.tap}
                for lease in table.records.values()
            },
        }
        data = (json.dumps(document, indent=2) + "\n").encode()
        tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            self._cached = (data, table, time.monotonic())
            dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise UsageError(
                f"cannot write lease table {self.path}: {exc.strerror}; "
                "check that the data directory is writable and not full"
            ) from exc
