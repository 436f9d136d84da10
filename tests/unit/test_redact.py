"""Token redaction: known secrets and ``umon.token=`` values, whole or streamed."""

from __future__ import annotations

import secrets as random_secrets

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tests.samples import console_samples
from umonitor.protocol.console_lines import ConsoleDecoder
from umonitor.protocol.redact import (
    MARKER,
    MIN_SECRET,
    TOKEN_WORD,
    VALUE_LIMIT,
    VALUE_STOP,
    Redactor,
    redact_bytes,
    redact_text,
)

SAMPLES = console_samples()
TOKEN = "9f86d081884c7d659a2feaa0c55ad015"
OTHER = "0123456789abcdef0123456789abcdef"
R = MARKER

CASES = [
    # (input, secrets, output)
    ("nothing to see here\n", [TOKEN], "nothing to see here\n"),
    ("", [TOKEN], ""),
    (
        f"Command line: console=ttyS0 umon.collector=10.77.0.1:2333 umon.token={TOKEN} quiet\n",
        [TOKEN],
        f"Command line: console=ttyS0 umon.collector=10.77.0.1:2333 umon.token={R} quiet\n",
    ),
    # An unknown value after the word goes too, up to white space, a quote, NUL or the end.
    (f"umon.token={OTHER} x", [], f"umon.token={R} x"),
    (f'args="umon.token={OTHER}" x', [], f'args="umon.token={R}" x'),
    (f"args='umon.token={OTHER}'", [], f"args='umon.token={R}'"),
    (f"umon.token={OTHER}\x00rest", [], f"umon.token={R}\x00rest"),
    (f"umon.token={OTHER}\tnext", [], f"umon.token={R}\tnext"),
    (f"umon.token={OTHER}", [], f"umon.token={R}"),
    ("umon.token=x", [], f"umon.token={R}"),
    ("umon.token= nothing", [], "umon.token= nothing"),
    ("umon.token=", [], "umon.token="),
    ("umon.tokens=abcdefghij umon.token", [], "umon.tokens=abcdefghij umon.token"),
    (f"UMON.TOKEN={OTHER}", [], f"UMON.TOKEN={OTHER}"),  # the word is case-sensitive
    # The value is bounded: past VALUE_LIMIT it is ordinary text again.
    ("umon.token=" + "a" * VALUE_LIMIT + "TAIL", [], f"umon.token={R}TAIL"),
    # A known secret anywhere, however often, and next to anything.
    (f"token {TOKEN}.", [TOKEN], f"token {R}."),
    (f"{TOKEN}{TOKEN} and {TOKEN}", [TOKEN], f"{R} and {R}"),
    (f"a{TOKEN}{OTHER}b", [TOKEN, OTHER], f"a{R}b"),
    (f"key={TOKEN}", [TOKEN], f"key={R}"),
    # Overlapping secrets: every byte of both goes, under one marker.
    ("xabcdefghijkly", ["abcdefgh", "efghijkl"], f"x{R}y"),
    ("xabcdefghijy", ["abcdefgh", "abcdefghij"], f"x{R}y"),
    # A known secret as a token value, and one that runs past the value's end.
    (f"umon.token={TOKEN}", [TOKEN], f"umon.token={R}"),
    ("umon.token=abcdefgh ijklm", ["fgh ijkl"], f"umon.token={R}m"),
    # Text that only resembles the marker stays.
    ("<redacted> is a word", [TOKEN], "<redacted> is a word"),
    ("non-ASCII é ü 雪 stays", ["secret-é-ü-雪"], "non-ASCII é ü 雪 stays"),
    ("the secret-é-ü-雪 goes", ["secret-é-ü-雪"], f"the {R} goes"),
]


@pytest.mark.parametrize(("text", "secrets", "want"), CASES)
def test_table(text: str, secrets: list[str], want: str) -> None:
    assert redact_text(text, secrets) == want
    assert redact_bytes(text.encode(), secrets) == want.encode()
    data = text.encode()
    redactor = Redactor(secrets)
    streamed = b"".join(redactor.feed(data[i : i + 1]) for i in range(len(data)))
    assert streamed + redactor.flush() == want.encode()


@pytest.mark.parametrize(
    "secret", ["", "short", "1234567", "abc<defghi", "abcdefgh>", "redacted", "\udc80" * 8]
)
def test_refused_secrets(secret: str) -> None:
    with pytest.raises(ValueError):
        Redactor([secret])
    with pytest.raises(ValueError):
        Redactor().add(secret)
    with pytest.raises(ValueError):
        redact_text("text", [secret])


def test_minimum_length_is_accepted() -> None:
    secret = "x" * MIN_SECRET
    assert redact_text(f"a {secret} b", [secret]) == f"a {R} b"


def test_token_split_across_reads_is_held_then_redacted() -> None:
    redactor = Redactor([OTHER])
    assert redactor.feed(b"Command line: umon.to") == b"Command line: "
    assert redactor.pending == len("umon.to")
    # TOKEN is not known here: redacted as the value of the word, passed on at once.
    assert redactor.feed(b"ken=" + TOKEN[:10].encode()) == b"umon.token=" + R.encode()
    assert redactor.pending == 0
    assert redactor.feed(TOKEN[10:].encode() + b" quiet") == b" quiet"
    # A known secret cut by a read is held only as far as it could still match.
    assert redactor.feed(b" say " + OTHER[:5].encode()) == b" say "
    assert redactor.pending == 5
    assert redactor.feed(b"zz") == OTHER[:5].encode() + b"zz"
    assert redactor.feed(b" " + OTHER[:31].encode()) == b" "
    assert redactor.feed(OTHER[31:].encode() + b"\n") == R.encode() + b"\n"
    assert redactor.flush() == b""


def test_flush_ends_the_stream_and_the_next_feed_starts_a_new_one() -> None:
    redactor = Redactor([TOKEN])
    # The value so far could be the start of the known secret: held back.
    assert redactor.feed(b"x umon.token=" + TOKEN[:4].encode()) == b"x umon.token="
    assert redactor.pending == 4
    assert redactor.flush() == R.encode()  # a token value ends with the stream
    assert redactor.pending == 0 and redactor.kept == 0
    assert redactor.feed(b"abc umon.tok") == b"abc "
    assert redactor.flush() == b"umon.tok"  # cut off by the end, it is no token word


def test_secret_added_later_applies_to_what_is_held() -> None:
    redactor = Redactor()
    assert redactor.feed(b"before " + OTHER.encode()) == b"before " + OTHER.encode()
    redactor.add(OTHER)
    redactor.add(OTHER)  # twice is once
    assert redactor.secrets == {OTHER}
    assert redactor.feed(b" after " + OTHER.encode() + b"\n") == b" after " + R.encode() + b"\n"


def test_real_linux_console_with_a_token_decodes_without_it() -> None:
    raw = (SAMPLES / "linux-6.1-single-app-guest.log").read_bytes()
    line = b"loglevel=7 ignore_loglevel"
    assert line in raw
    token = random_secrets.token_hex(16)
    raw = raw.replace(line, line + f" umon.name=web umon.token={token}".encode())
    redactor = Redactor([token])
    decoder = ConsoleDecoder()
    for start in range(0, len(raw), 97):
        decoder.receive_data(redactor.feed(raw[start : start + 97]))
    decoder.receive_data(redactor.flush())
    messages = [r.message for r in decoder.next_events() + decoder.end_of_stream()]
    [command_line] = [m for m in messages if "Command line:" in m]
    assert command_line.endswith(f"umon.name=web umon.token={R}")
    assert not any(token in m for m in messages)


def test_large_stream_is_linear_and_keeps_little() -> None:
    redactor = Redactor([TOKEN])
    chunk = (b"a console line that is long enough to matter " * 100 + b"\n") * 20
    total = 0
    for _ in range(50):
        total += len(redactor.feed(chunk))
        assert redactor.kept <= 300
    assert total + len(redactor.flush()) == 50 * len(chunk)


# -- properties --------------------------------------------------------------------

# Small alphabets, so that secrets, their pieces and token words meet and overlap.
SECRET_CHARS = "abcdef0123.=umontke"
secret_st = st.text(SECRET_CHARS, min_size=MIN_SECRET, max_size=14).filter(
    lambda s: s not in MARKER
)
piece_st = st.one_of(
    st.binary(max_size=6),
    st.text(SECRET_CHARS + VALUE_STOP + "<>rd", max_size=8).map(str.encode),
    st.sampled_from([TOKEN_WORD.encode(), b"umon.tok", b"en=", R.encode(), b" ", b"\n"]),
)


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[str], bytes]:
    secrets = draw(st.lists(secret_st, max_size=3, unique=True))
    parts: list[bytes] = []
    for _ in range(draw(st.integers(0, 12))):
        if secrets and draw(st.booleans()):
            secret = draw(st.sampled_from(secrets)).encode()
            cut = draw(st.integers(0, len(secret)))
            parts.append(secret if draw(st.booleans()) else secret[:cut])
        else:
            parts.append(draw(piece_st))
    if draw(st.integers(0, 9)) == 0:
        parts.append(TOKEN_WORD.encode() + b"v" * draw(st.integers(250, 262)))
    return secrets, b"".join(parts)


def reference(data: bytes, secrets: list[str]) -> bytes:
    """The definition, position by position, slowly."""
    covered = [False] * len(data)
    for secret in (s.encode() for s in secrets):
        for at in range(len(data)):
            if data.startswith(secret, at):
                covered[at : at + len(secret)] = [True] * len(secret)
    word = TOKEN_WORD.encode()
    stop = VALUE_STOP.encode()
    for at in range(len(data)):
        if data.startswith(word, at):
            end = at + len(word)
            while end < len(data) and end - at - len(word) < VALUE_LIMIT and data[end] not in stop:
                covered[end] = True
                end += 1
    out = bytearray()
    for at, byte in enumerate(data):
        if not covered[at]:
            out.append(byte)
        elif at == 0 or not covered[at - 1]:
            out += R.encode()
    return bytes(out)


def streamed(data: bytes, secrets: list[str], cuts: list[int]) -> tuple[bytes, int]:
    """Fed in pieces; also the most bytes ever held back."""
    redactor = Redactor(secrets)
    out, start, most = b"", 0, 0
    for cut in [*sorted(cuts), len(data)]:
        out += redactor.feed(data[start:cut])
        most = max(most, redactor.pending)
        assert redactor.kept <= redactor.pending + max(
            [len(TOKEN_WORD) + VALUE_LIMIT, *(len(s.encode()) for s in secrets)]
        )
        start = max(start, cut)
    return out + redactor.flush(), most


@settings(max_examples=500, deadline=None)
@given(streams(), st.lists(st.integers(0, 300), max_size=12))
def test_any_split_gives_what_the_whole_gives(
    case: tuple[list[str], bytes], cuts: list[int]
) -> None:
    secrets, data = case
    whole = redact_bytes(data, secrets)
    assert whole == reference(data, secrets)
    out, most = streamed(data, secrets, cuts)
    assert out == whole
    longest = max([len(TOKEN_WORD), *(len(s.encode()) for s in secrets)])
    assert most < longest


@settings(max_examples=300, deadline=None)
@given(streams())
def test_byte_by_byte_gives_what_the_whole_gives(case: tuple[list[str], bytes]) -> None:
    secrets, data = case
    out, _ = streamed(data, secrets, list(range(len(data))))
    assert out == redact_bytes(data, secrets)


@settings(max_examples=500, deadline=None)
@given(streams(), st.lists(st.integers(0, 300), max_size=6))
def test_output_never_holds_a_secret_or_a_token_value(
    case: tuple[list[str], bytes], cuts: list[int]
) -> None:
    secrets, data = case
    out, _ = streamed(data, secrets, cuts)
    for secret in secrets:
        assert secret.encode() not in out
    word, marker = TOKEN_WORD.encode(), R.encode()
    at = out.find(word)
    while at >= 0:
        rest = out[at + len(word) :]
        assert rest == b"" or rest.startswith(marker) or rest[0] in VALUE_STOP.encode()
        at = out.find(word, at + 1)


@settings(max_examples=300)
@given(st.binary(max_size=400), st.lists(secret_st, max_size=3), st.lists(st.integers(0, 400)))
def test_text_without_secrets_or_token_word_is_unchanged(
    data: bytes, secrets: list[str], cuts: list[int]
) -> None:
    assume(TOKEN_WORD.encode() not in data)
    assume(not any(s.encode() in data for s in secrets))
    assert streamed(data, secrets, cuts)[0] == data


@settings(max_examples=300)
@given(st.text(max_size=200), st.lists(secret_st, max_size=3))
def test_text_and_bytes_agree(text: str, secrets: list[str]) -> None:
    out = redact_text(text, secrets)
    if text.isascii():
        assert out.encode() == redact_bytes(text.encode(), secrets)
    for secret in secrets:
        assert secret not in out
    if TOKEN_WORD not in text and not any(s in text for s in secrets):
        assert out is text
