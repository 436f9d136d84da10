"""What every fuzz target shares: the command line, seeds, chunking, fenced buffers.

Each ``fuzz_<name>.py`` next to this file defines ``test_one_input(data)`` and
``seeds()`` and ends with ``fuzzlib.main(...)``. Run one as
``python fuzz/fuzz_<name>.py [libFuzzer flags] [CORPUS_DIR ...]``; with
``--write-seeds DIR`` it only writes its seed inputs into DIR and exits.

This module imports nothing from umonitor, so the targets can import umonitor under
``atheris.instrument_imports()`` and have all of it instrumented for coverage.
"""

from __future__ import annotations

import ctypes
import hashlib
import mmap
import random
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

# Byte-by-byte feeding costs a call per byte; past this size the random chunkings
# (which include many one-byte chunks) cover the same ground faster.
BYTEWISE_MAX = 512


class Finding(AssertionError):
    """A broken invariant: atheris reports it as a crash and saves the input."""


def check(condition: object, message: str) -> None:
    """Raise a Finding with ``message`` unless ``condition`` holds."""
    if not condition:
        raise Finding(message)


def rng_for(data: bytes) -> random.Random:
    """A generator that depends on the input only, so every finding reproduces."""
    return random.Random(hashlib.blake2s(data, digest_size=8).digest())


def random_chunks(data: bytes, rng: random.Random, *, small: bool = False) -> list[bytes]:
    """``data`` cut at random points; ``small`` favours chunks of one to three bytes."""
    out = []
    pos = 0
    while pos < len(data):
        size = rng.randint(1, 3) if small else rng.randint(1, max(1, len(data) // 2))
        out.append(data[pos : pos + size])
        pos += size
    return out


def chunkings(
    data: bytes, rng: random.Random, *, bytewise_max: int = BYTEWISE_MAX
) -> Iterator[list[bytes]]:
    """The ways a target feeds one stream: whole first, then in pieces."""
    yield [data]
    yield random_chunks(data, rng)
    yield random_chunks(data, rng, small=True)
    if len(data) <= bytewise_max:
        yield [data[i : i + 1] for i in range(len(data))]


class LineStreamDecoder(Protocol):
    """What the line-oriented decoders (text, legacy, console) have in common."""

    @property
    def buffered(self) -> int: ...

    def receive_data(self, data: bytes) -> None: ...

    def next_events(self) -> list[Any]: ...

    def end_of_stream(self) -> list[Any]: ...


def check_numbered(records: Sequence[Any]) -> None:
    check(
        [r.seq for r in records] == list(range(1, len(records) + 1)),
        "records are not numbered from 1",
    )


def check_line_stream(
    data: bytes,
    max_lines: Sequence[int],
    make: Callable[[int], LineStreamDecoder],
    check_records: Callable[[list[Any]], None],
    *,
    bytewise_max: int = BYTEWISE_MAX,
) -> None:
    """A line decoder's invariants: first byte picks ``max_line``, the rest is the stream.

    Whole and every chunking give the same records; after ``next_events`` it holds
    less than ``max_line`` bytes, after ``end_of_stream`` none; ``check_records`` is
    applied to the records of the whole stream.
    """
    if not data:
        return
    max_line = max_lines[data[0] % len(max_lines)]
    whole = None
    for chunks in chunkings(data[1:], rng_for(data), bytewise_max=bytewise_max):
        decoder = make(max_line)
        records: list[Any] = []
        for chunk in chunks:
            decoder.receive_data(chunk)
            records += decoder.next_events()
            check(decoder.buffered < max_line, f"holds {decoder.buffered} of {max_line}")
        records += decoder.end_of_stream()
        check(decoder.buffered == 0, "end_of_stream left bytes behind")
        if whole is None:
            whole = records
            check_records(records)
        else:
            check(records == whole, "chunking changed the records")


class Fenced:
    """``data`` copied so that it ends right where an unreadable page begins.

    A C function that reads even one byte past the end of the data it was given
    then dies of SIGSEGV, which libFuzzer reports as a crash. Use as a context
    manager; ``buffer[start:end]`` is the data.
    """

    def __init__(self, data: bytes) -> None:
        page = mmap.PAGESIZE
        pages = -(-len(data) // page) + 1
        self.buffer = mmap.mmap(-1, (pages + 1) * page)
        self.end = pages * page
        self.start = self.end - len(data)
        self.buffer[self.start : self.end] = data
        anchor = ctypes.c_char.from_buffer(self.buffer)
        fence = ctypes.addressof(anchor) + self.end
        del anchor  # an export left behind would keep the map from closing
        if _mprotect(fence, page, 0) != 0:  # PROT_NONE
            raise OSError(ctypes.get_errno(), "mprotect failed")

    def __enter__(self) -> Fenced:
        return self

    def __exit__(self, *exc: object) -> None:
        self.buffer.close()


_libc = ctypes.CDLL(None, use_errno=True)
_mprotect = _libc.mprotect
_mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_mprotect.restype = ctypes.c_int


def _write_seeds(directory: Path, seeds: Iterable[bytes]) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    count = 0
    for seed in seeds:
        name = hashlib.sha1(seed).hexdigest()
        (directory / name).write_bytes(seed)
        count += 1
    return count


def main(test_one_input: Callable[[bytes], None], seeds: Callable[[], Iterable[bytes]]) -> None:
    """Write seeds (``--write-seeds DIR``) or hand the command line to libFuzzer."""
    args = sys.argv
    if len(args) == 3 and args[1] == "--write-seeds":
        count = _write_seeds(Path(args[2]), seeds())
        print(f"{count} seeds written to {args[2]}")
        return
    import atheris

    atheris.Setup(args, test_one_input)
    atheris.Fuzz()
