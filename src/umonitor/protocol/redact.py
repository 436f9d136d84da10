"""Secrets out of guest text: fleet tokens replaced by a marker, streaming, sans-IO.

How this works
--------------
A fleet instance's token is on its kernel command line (``umon.token=<hex>``), and
Linux and Unikraft print that line on the console, which is stored and forwarded.
Everything that carries guest text past the host's own memory goes through here.

What is redacted is defined on the whole input, position by position. A position is
*covered* when it lies

(a) in an occurrence of a known secret (occurrences may overlap), or
(b) in the value of a ``umon.token=`` word: what follows the ``=`` up to the first
    white space, quote, NUL or the end of the input, at most ``VALUE_LIMIT`` of it,
    whether or not the value is a known secret.

Each maximal run of covered positions becomes one ``MARKER``; everything else passes
unchanged. So ``umon.token=9f86…`` becomes ``umon.token=<redacted>``, two secrets side
by side become one marker, and text that holds neither a secret nor ``umon.token=``
comes out as it went in.

Because the result depends only on the whole input, ``Redactor`` gives the same bytes
however the stream is cut into reads. It passes a byte on as soon as no match that
could still cover it is undecided: it holds back only the tail that is a proper
prefix of a secret or of ``umon.token=``, always fewer bytes than the longest of those.
To see occurrences that began before that tail (a token's value runs on across
reads), it also keeps up to ``context`` bytes it has already passed on; those are read
again, never output again.

Nothing here raises on any input; ``ValueError`` only for a secret that is refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import AnyStr, Generic

MARKER = "<redacted>"
TOKEN_WORD = "umon.token="
VALUE_LIMIT = 256  # longest token value redacted; what follows is ordinary text again
MIN_SECRET = 8  # shorter secrets are refused: they would redact ordinary text
VALUE_STOP = " \t\n\r\x0b\x0c\"'\x00"  # ends a token value (ASCII white space, quotes, NUL)

_VALUE = f"[^{re.escape(VALUE_STOP)}]{{1,{VALUE_LIMIT}}}"


def check_secret(secret: str) -> None:
    """Refuse a secret that could not be redacted safely (ValueError says why).

    Shorter than ``MIN_SECRET`` characters: it would match ordinary text. Containing
    ``<`` or ``>``, or occurring in the marker: the marker next to text could then
    spell the secret again, and "output never contains a secret" would not hold.
    """
    if not isinstance(secret, str):
        raise TypeError(f"a secret is text, not {type(secret).__name__}")
    if len(secret) < MIN_SECRET:
        raise ValueError(f"secrets shorter than {MIN_SECRET} characters are not redacted")
    if "<" in secret or ">" in secret or secret in MARKER:
        raise ValueError(f"a secret must not contain '<' or '>' or occur in {MARKER!r}")
    secret.encode()  # UnicodeEncodeError (a ValueError) for lone surrogates


@dataclass(frozen=True, slots=True)
class _Rules(Generic[AnyStr]):
    """What to look for, as bytes or as text."""

    secrets: tuple[AnyStr, ...]
    word: AnyStr
    value: re.Pattern[AnyStr]
    marker: AnyStr
    prefixes: frozenset[AnyStr]  # proper, non-empty prefixes of the secrets and the word
    longest: int  # longest secret or word
    context: int  # how far back an occurrence that covers a position can start


def _rules(secrets: Iterable[str], convert: Callable[[str], AnyStr]) -> _Rules[AnyStr]:
    word: AnyStr = convert(TOKEN_WORD)
    items: tuple[AnyStr, ...] = tuple(sorted({convert(secret) for secret in secrets}))
    patterns: tuple[AnyStr, ...] = (word,) + items  # noqa: RUF005 (mypy and AnyStr)
    longest = max(map(len, patterns))
    prefixes: set[AnyStr] = set()
    for pattern in patterns:
        prefixes.update(pattern[:k] for k in range(1, len(pattern)))
    return _Rules(
        secrets=items,
        word=word,
        value=re.compile(convert(_VALUE)),
        marker=convert(MARKER),
        prefixes=frozenset(prefixes),
        longest=longest,
        context=max(longest, len(word) + VALUE_LIMIT) - 1,
    )


def _text(s: str) -> str:
    return s


def _bytes(s: str) -> bytes:
    return s.encode()


def _cover(rules: _Rules[AnyStr], buf: AnyStr) -> list[tuple[int, int]]:
    """Every covered span ``[start, end)`` found in ``buf``, sorted, overlaps merged."""
    spans: list[tuple[int, int]] = []
    for secret in rules.secrets:
        at = buf.find(secret)
        while at >= 0:
            spans.append((at, at + len(secret)))
            at = buf.find(secret, at + 1)
    word = rules.word
    at = buf.find(word)
    while at >= 0:
        value = rules.value.match(buf, at + len(word))
        if value is not None:
            spans.append(value.span())
        at = buf.find(word, at + 1)
    spans.sort()
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def _undecided(rules: _Rules[AnyStr], buf: AnyStr, start: int) -> int:
    """The first position from ``start`` on where a match may begin that ``buf`` cuts off."""
    n = len(buf)
    for at in range(max(start, n - rules.longest + 1), n):
        if buf[at:] in rules.prefixes:
            return at
    return n


def _emit(
    rules: _Rules[AnyStr],
    buf: AnyStr,
    start: int,
    stop: int,
    covering: bool,
    out: list[AnyStr],
) -> bool:
    """Append ``buf[start:stop]`` redacted to ``out``; whether it ended in a marker.

    ``covering`` says whether what was output just before ended in a marker, so a
    covered run that goes on across two calls still gets one marker.
    """
    pos = start
    for span_start, span_end in _cover(rules, buf):
        if span_end <= pos:
            continue
        if span_start >= stop:
            break
        if span_start > pos:
            out.append(buf[pos:span_start])
            covering = False
        if not covering:
            out.append(rules.marker)
            covering = True
        pos = min(span_end, stop)
        if pos >= stop:
            break
    if pos < stop:
        out.append(buf[pos:stop])
        covering = False
    return covering


class Redactor:
    """Redacts a byte stream read in pieces: ``feed`` each piece, ``flush`` at its end.

    ``feed(a) + feed(b) + flush()`` is always ``feed(a + b) + flush()``. What ``feed``
    holds back (``pending`` bytes) is only the shortest tail that could still start a
    match, fewer bytes than the longest secret or ``umon.token=``; ``flush`` ends the
    stream (a token value ends there too) and the next ``feed`` starts a new one.
    A secret added while a stream runs applies to what has not been passed on yet.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self._rules: _Rules[bytes] = _rules((), _bytes)
        self._buf = b""  # context already passed on, then what is held back
        self._held = 0  # where in _buf the held-back tail starts
        self._covering = False  # the last thing passed on was a marker
        for secret in secrets:
            self.add(secret)

    @property
    def secrets(self) -> frozenset[str]:
        return frozenset(self._secrets)

    @property
    def pending(self) -> int:
        """Bytes fed but not passed on yet."""
        return len(self._buf) - self._held

    @property
    def kept(self) -> int:
        """Bytes held in memory: the pending ones and the context before them."""
        return len(self._buf)

    def add(self, secret: str) -> None:
        """Redact ``secret`` too (ValueError for a refused one, see ``check_secret``)."""
        check_secret(secret)
        if secret not in self._secrets:
            self._secrets.add(secret)
            self._rules = _rules(self._secrets, _bytes)

    def feed(self, data: bytes) -> bytes:
        """The redacted bytes that ``data`` lets pass; the rest waits for more."""
        rules = self._rules
        buf = self._buf + data
        stop = _undecided(rules, buf, self._held)
        out: list[bytes] = []
        self._covering = _emit(rules, buf, self._held, stop, self._covering, out)
        keep = max(0, stop - rules.context)
        self._buf = buf[keep:]
        self._held = stop - keep
        return b"".join(out)

    def flush(self) -> bytes:
        """The end of the stream: everything held back, redacted."""
        out: list[bytes] = []
        _emit(self._rules, self._buf, self._held, len(self._buf), self._covering, out)
        self._buf, self._held, self._covering = b"", 0, False
        return b"".join(out)


def redact_bytes(data: bytes, secrets: Iterable[str] = ()) -> bytes:
    """``data`` redacted as one whole stream."""
    redactor = Redactor(secrets)
    return redactor.feed(data) + redactor.flush()


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` redacted by the same rules (``VALUE_LIMIT`` counts characters here).

    For text that is already whole: a crash report's console lines, a message.
    """
    secrets = list(secrets)
    for secret in secrets:
        check_secret(secret)
    rules = _rules(secrets, _text)
    if not rules.secrets and rules.word not in text:
        return text
    out: list[str] = []
    _emit(rules, text, 0, len(text), False, out)
    return "".join(out)
