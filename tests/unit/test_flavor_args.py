"""``args`` on a kernel command line: every shell word reaches the guest as one word.

Models of the guests' parsers check the property: Linux's ``next_arg()``
(kernel/params.c), Unikraft's ``uk_argnparse()`` (lib/ukargparse), and rumprun's JSON
tokenizer (jsmn, which keeps a string's bytes unescaped) followed by
``rumprun_parseargs()`` (lib/librumprun_base/parseargs.c), ported below.
"""

from __future__ import annotations

import ipaddress
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from umonitor.errors import UsageError
from umonitor.fleet.flavors import (
    APP_ARGS_FLAVORS,
    FLAVORS,
    GuestNet,
    boot_spec,
    cmdline_words,
    rumprun_word,
    split_args,
)

NET = GuestNet(
    "web-1",
    ipaddress.IPv4Interface("10.77.0.5/24"),
    ipaddress.IPv4Address("10.77.0.1"),
    2333,
    "s3cret",
)
UMON = "umon.collector=10.77.0.1:2333 umon.name=web-1 umon.token=s3cret"

# Linux lib/ctype.c: isspace() is true for 9-13, 32 and 0xA0.
LINUX_SPACE = b"\t\n\v\f\r \xa0"
UNIKRAFT_SPACE = " \r\n\t\v"


def linux_words(line: str) -> list[str]:
    """The words Linux's ``next_arg()`` makes of ``line``, quotes removed as it does."""
    data, words, at = line.encode(), [], 0
    while True:
        while at < len(data) and data[at] in LINUX_SPACE:
            at += 1
        if at >= len(data):
            return words
        quoted = in_quote = data[at] == ord('"')
        at += quoted
        args = data[at:]
        i = equals = 0
        while i < len(args) and (in_quote or args[i] not in LINUX_SPACE):
            if equals == 0 and args[i] == ord("="):
                equals = i
            if args[i] == ord('"'):
                in_quote = not in_quote
            i += 1
        at += i + 1
        end, value = i, 0
        if equals:
            value = equals + 1
            if value < i and args[value] == ord('"'):
                value += 1
                if args[i - 1] == ord('"'):
                    end = i - 1
        if quoted and i > 0 and args[i - 1] == ord('"'):
            end = i - 1
        word = args[:end] if not equals else args[:equals] + b"=" + args[value : max(end, value)]
        words.append(word.decode())


def unikraft_words(line: str) -> list[str]:
    """The words Unikraft's ``uk_argnparse()`` makes of ``line``: either quote groups."""
    words: list[str] = []
    between, in_quote = True, ""
    for char in line:
        if char in UNIKRAFT_SPACE and (not in_quote or between):
            between = between or not in_quote  # a space in quotes before a word is lost
        elif char in "'\"" and in_quote in ("", char):
            in_quote = "" if in_quote else char
        else:
            if between:
                words.append("")
                between = False
            words[-1] += char
    return words


def test_the_parser_models() -> None:
    assert linux_words('x="a b"  "c d" e=f\fg') == ["x=a b", "c d", "e=f", "g"]
    assert linux_words('"=a b" x=') == ["=a b", "x="]
    assert unikraft_words('x=\'a b\' "c\'d"\t"" " e"') == ["x=a b", "c'd", "e"]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ("", []),
        ("loglevel=7 quiet", ["loglevel=7", "quiet"]),
        ('app.greeting="hello world" x', ['app.greeting="hello world"', "x"]),
        ("app.greeting='hello world'", ['app.greeting="hello world"']),
        ('"a b"', ['"a b"']),
        ("'a b' c", ['"a b"', "c"]),
        ("a\\ b", ['"a b"']),
        ("'a b=c'", ['"a b=c"']),  # the key has a space: the whole word is quoted
        ("'=a b'", ['"=a b"']),
        ("x=''", ["x="]),
        ("''", ['""']),
        ("msg=it\\'s", ['msg="it\'s"']),  # Unikraft would open a quote at '
        ("'tab\there'", ['"tab\there"']),
        ("'form\ffeed'", ['"form\ffeed"']),  # shlex keeps it, Linux splits at it
        ("voilà café", ['"voilà"', "café"]),  # à is C3 A0 in UTF-8; Linux splits at A0
        ("/server.so --port 80", ["/server.so", "--port", "80"]),
        ("a\\b", ["ab"]),  # shell rules: a backslash escapes the next character
    ],
)
def test_words_keep_their_quoting(args: str, words: list[str]) -> None:
    assert cmdline_words(args) == words


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ('app.msg="unclosed', "no closing quotation"),
        ("it's", "no closing quotation"),
        ("trailing\\", "no escaped character"),
        ("'say \"hi\"'", "double quote"),
        ('x=\\"', "double quote"),
        ("a\0b", "NUL"),
        ("\ud800", "not valid text"),
    ],
)
def test_words_that_cannot_be_written(args: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        cmdline_words(args)


def test_split_args_errors_are_usage_errors() -> None:
    assert split_args("a 'b c' \"d\"") == ["a", "b c", "d"]
    assert split_args("'say \"hi\"'") == ['say "hi"']  # JSON (rumprun) can carry it
    with pytest.raises(UsageError, match=r"^args 'a \"b': no closing quotation$"):
        split_args('a "b')
    with pytest.raises(UsageError, match="args must be text"):
        split_args(None)  # type: ignore[arg-type]


QUOTED = 'app.msg="a b" c'


@pytest.mark.parametrize(
    ("flavor", "template", "append"),
    [
        ("linux", None, f"{UMON} {QUOTED}"),
        ("unikraft", None, f"netdev.ip=10.77.0.5/24:10.77.0.1 {UMON} {QUOTED} --"),
        ("osv", None, f"--defaultgw=10.77.0.1 {QUOTED} {UMON}"),
        ("mirage-solo5", None, f"--ipv4-gateway=10.77.0.1 {QUOTED}"),
        ("generic", "ip={ip}", f"ip=10.77.0.5 {QUOTED}"),
    ],
)
def test_every_command_line_keeps_quoted_words(
    flavor: str, template: str | None, append: str
) -> None:
    spec = boot_spec(flavor, NET, QUOTED, template)
    assert spec.append is not None and spec.append.endswith(append)
    assert "app.msg=a b" in linux_words(spec.append)
    assert "app.msg=a b" in unikraft_words(spec.append)


def test_unikraft_application_words_keep_their_quotes() -> None:
    spec = boot_spec("unikraft", NET, app=QUOTED)
    assert spec.append is not None
    assert unikraft_words(spec.append.partition(" -- ")[2]) == ["app.msg=a b", "c"]


def jsmn_raw_string(text: str, start: int) -> str:
    """The bytes of the JSON string opening at ``text[start]``, as jsmn keeps them."""
    assert text[start] == '"'
    at = start + 1
    while text[at] != '"':
        if text[at] == "\\":
            assert text[at + 1] in '"/\\bfrnt', "jsmn refuses this escape"
            at += 1
        at += 1
    return text[start + 1 : at]


def rumprun_argv(line: str) -> list[str]:
    """The words ``rumprun_parseargs()`` makes of ``line``."""
    words: list[str] = []
    out: list[str] | None = None
    quote: str | None = None  # None: between words; "": in a word; "'" or '"': quoted
    at = 0
    while True:
        ac = line[at] if at < len(line) else ""
        at += 1
        rc = ac
        if ac == "\\":
            rc = line[at] if at < len(line) else ""
            at += 1
        if not rc or ac in " \n\t":
            if not rc or quote == "":
                if out is not None:
                    words.append("".join(out))
                    out = None
                quote = None
            if not rc:
                return words
            if quote is None:
                continue
        if quote is None:
            out, quote = [], ""
        if quote and ac == quote:
            quote = ""
            continue
        if ac in "'\"":
            quote = ac
            continue
        assert out is not None
        out.append(rc)


def rumprun_cmdline(config: str) -> list[str]:
    key = '"cmdline":'
    return rumprun_argv(jsmn_raw_string(config, config.index(key) + len(key)))


def test_rumprun_gets_the_shell_words() -> None:
    spec = boot_spec("rumprun", NET, app="app.msg='say \"a b\"' c\\\\d ''")
    assert rumprun_cmdline(spec.files["rumprun.json"]) == ["app", 'app.msg=say "a b"', "c\\d", ""]


def test_rumprun_refuses_what_its_command_line_cannot_carry() -> None:
    for word in ("it's", "a\nb", "tab\there"):
        with pytest.raises(UsageError, match="rumprun's command line cannot carry"):
            rumprun_word(word)


@pytest.mark.parametrize("flavor", sorted(FLAVORS))
def test_unbalanced_args_are_a_usage_error_in_every_flavor(flavor: str) -> None:
    with pytest.raises(UsageError, match="no closing quotation"):
        boot_spec(flavor, NET, 'x="a b', "ip={ip}")
    if flavor in APP_ARGS_FLAVORS:
        with pytest.raises(UsageError, match="no closing quotation"):
            boot_spec(flavor, NET, app='x="a b')


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{nope}", r"unknown placeholder \{nope\}"),
        ("{ip.real}", r"unknown placeholder \{ip.real\}"),
        ("{ip[0]}", r"unknown placeholder \{ip\[0\]\}"),
        ("{ip:>999999999}", r"unknown placeholder \{ip:>999999999\}"),
        ("{ip!r}", r"unknown placeholder \{ip!r\}"),
        ("{}", r"unknown placeholder \{\}"),
        ("{0}", r"unknown placeholder \{0\}"),
        ("ip={ip", "expected '}'"),
        ("ip=}", "Single '}'"),
        ("a\0b", "NUL"),
    ],
)
def test_bad_templates(template: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        boot_spec("generic", NET, "", template)


def test_template_braces() -> None:
    assert boot_spec("generic", NET, "", "{{ip}}={ip}").append == "{ip}=10.77.0.5"


def test_bad_flavor_values() -> None:
    for flavor in ("windows", ["linux"], None):
        with pytest.raises(UsageError, match="unknown flavor"):
            boot_spec(flavor, NET)  # type: ignore[arg-type]


ARGS_TEXT = st.lists(
    st.sampled_from(["a", "=", " ", "\t", "\f", '"', "'", "\\", "à", "x.y", "--", "\0"])
    | st.text(max_size=3),
    max_size=12,
).map("".join)


@given(ARGS_TEXT)
@settings(max_examples=500)
def test_words_survive_linux_and_unikraft(args: str) -> None:
    try:
        words = cmdline_words(args)
    except UsageError:
        return
    line = " ".join(words)
    assert linux_words(line) == split_args(args)
    # Unikraft has no empty words, and loses spaces at the start of a quoted word.
    assert unikraft_words(line) == [
        w.lstrip(UNIKRAFT_SPACE) for w in split_args(args) if w.lstrip(UNIKRAFT_SPACE)
    ]


@given(st.sampled_from(sorted(FLAVORS)), ARGS_TEXT, st.none() | st.text(max_size=20), ARGS_TEXT)
@settings(max_examples=500)
def test_boot_spec_raises_only_usage_error(
    flavor: str, args: str, template: str | None, app: str
) -> None:
    try:
        spec = boot_spec(flavor, NET, args, template, app)
    except UsageError:
        return
    assert spec.append is None or "\0" not in spec.append


@given(ARGS_TEXT)
@settings(max_examples=500)
def test_words_survive_rumprun(args: str) -> None:
    try:
        spec = boot_spec("rumprun", NET, app=args)
    except UsageError:
        return
    config = spec.files["rumprun.json"]
    json.loads(config)  # what a JSON parser reads, too
    assert rumprun_cmdline(config) == ["app", *split_args(args)]
