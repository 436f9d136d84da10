"""umonitor.toml: what is accepted, and every error reported with its line."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from umonitor.collector.server import GuestLimits
from umonitor.errors import UsageError
from umonitor.fleet.config import _INSTANCE_KEYS, load_config, parse_config
from umonitor.fleet.flavors import GuestNet, boot_spec

GOOD = """
[network]
bridge = "umtest0"
address = "10.78.0.1/24"

[collector]
port = 2444

[syslog]
port = 5514

[[instance]]
name = "web"
kernel = "img/vmlinuz"
initrd = "img/initrd.img"
memory = "128M"
count = 3
restart = "on-failure"
backoff = 0.5
backoff_max = 8

[[instance]]
name = "raw"
kernel = "img/vmlinuz"
flavor = "generic"
template = "ip={ip} log={collector}"
"""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "vmlinuz").write_bytes(b"k")
    (tmp_path / "img" / "initrd.img").write_bytes(b"i")
    return tmp_path


def write(tree: Path, text: str) -> Path:
    path = tree / "umonitor.toml"
    path.write_text(text)
    return path


def test_good_config(tree: Path) -> None:
    config = load_config(write(tree, GOOD))
    assert config.network.bridge == "umtest0"
    assert str(config.network.address) == "10.78.0.1/24"
    assert config.collector_port == 2444 and config.syslog_port == 5514
    assert [i.name for i in config.instances] == ["web-1", "web-2", "web-3", "raw"]
    web = config.instances[0]
    assert web.kernel == (tree / "img" / "vmlinuz").resolve()
    assert web.memory_mib == 128 and web.restart == "on-failure"
    assert (web.backoff, web.backoff_max) == (0.5, 8.0)
    assert config.instances[3].template == "ip={ip} log={collector}"


def test_every_error_with_its_line(tree: Path) -> None:
    bad = """[network]
address = "10.78.0.1"
[[instance]]
name = "Web!"
kernel = "img/vmlinuz"
[[instance]]
name = "db"
kernel = "img/missing"
memory = "lots"
restart = "sometimes"
cpus = 0
colour = "blue"
[[instance]]
name = "db"
kernel = "img/vmlinuz"
flavor = "windows"
"""
    with pytest.raises(UsageError) as info:
        load_config(write(tree, bad))
    message = str(info.value)
    assert "umonitor.toml:2: " in message and "address" in message
    assert "umonitor.toml:4: " in message and "name must be" in message
    assert "umonitor.toml:8: instance 'db': kernel 'img/missing' does not exist" in message
    assert "umonitor.toml:9: instance 'db': bad memory size" in message
    assert "umonitor.toml:10: instance 'db': restart must be" in message
    assert "umonitor.toml:11: instance 'db': cpus must be" in message
    assert "umonitor.toml:12: instance 'db': unknown key 'colour'" in message
    assert "umonitor.toml:16: instance 'db': unknown flavor 'windows'" in message
    assert "umonitor.toml:14: instance 'db': 'db' is also defined at line 6" in message


def test_syntax_error_has_a_line(tree: Path) -> None:
    with pytest.raises(UsageError, match=r"line 2"):
        load_config(write(tree, "[[instance]]\nname = \n"))


def test_empty_and_missing(tree: Path) -> None:
    with pytest.raises(UsageError, match="nothing to run"):
        load_config(write(tree, "[network]\n"))
    with pytest.raises(UsageError, match="cannot read"):
        load_config(tree / "nope.toml")


def test_open_mode_and_exporters(tree: Path) -> None:
    text = """[collector]
open = true
[[instance]]
name = "web"
kernel = "img/vmlinuz"
[[export]]
name = "central"
url = "relp://10.0.0.9:2514"
level = "warning"
[[export]]
url = "otlp+http://10.0.0.9:4318?batch=100"
"""
    config = load_config(write(tree, text))
    assert config.open is True
    central, second = config.exports
    assert (central.name, central.scheme, central.port, central.level.label) == (
        "central", "relp", 2514, "warning"
    )  # fmt: skip
    assert (second.name, second.path, second.batch) == ("export-2", "/v1/logs", 100)
    assert load_config(write(tree, text.replace("open = true\n", ""))).open is False


def test_open_and_exporter_errors_have_lines(tree: Path) -> None:
    bad = """[collector]
open = "yes"
[[instance]]
name = "web"
kernel = "img/vmlinuz"
[[export]]
name = "a"
url = "ftp://x:1"
[[export]]
name = "b"
"""
    with pytest.raises(UsageError) as info:
        load_config(write(tree, bad))
    message = str(info.value)
    assert "umonitor.toml:2: open must be true or false" in message
    assert "umonitor.toml:6: exporter a: unknown kind 'ftp'" in message
    assert "umonitor.toml:9: each [[export]] needs url" in message


INSTANCE = '[[instance]]\nname = "web"\nkernel = "img/vmlinuz"\n'


def test_web_table(tree: Path) -> None:
    assert load_config(write(tree, INSTANCE)).web is None
    web = load_config(write(tree, INSTANCE + "[web]\n")).web
    assert web is not None and (web.listen, web.token) == ("127.0.0.1:8321", None)
    (tree / "web.token").write_text("s3cret token\nignored\n")
    text = INSTANCE + '[web]\nlisten = "0.0.0.0:9000"\ntoken_file = "web.token"\n'
    web = load_config(write(tree, text)).web
    assert web is not None and (web.listen, web.token) == ("0.0.0.0:9000", "s3cret token")
    web = load_config(write(tree, INSTANCE + '[web]\nlisten = "[::]:9000"\ntoken = "t"\n')).web
    assert web is not None and web.token == "t"


@pytest.mark.parametrize(
    ("table", "line", "sentence"),
    [
        ('listen = "0.0.0.0:9000"', 5, "the dashboard on 0.0.0.0 (not loopback) needs token_file"),
        ('listen = "web.example:9000"', 5, "(not loopback) needs token_file or token"),
        ('listen = "127.0.0.1:x"', 5, "the port must be a number"),
        ("listen = 8321", 5, 'listen is "HOST:PORT"'),
        ('token_file = "missing.token"', 5, "cannot read the token file"),
        ('token = ""', 5, "the token must be 1 to 4096 characters"),
        ('token = "a"\ntoken_file = "b"', 5, "give token or token_file, not both"),
        ("port = 1", 5, "unknown key 'port' in [web]"),
    ],
)
def test_web_table_errors_have_lines(tree: Path, table: str, line: int, sentence: str) -> None:
    with pytest.raises(UsageError) as info:
        load_config(write(tree, INSTANCE + "[web]\n" + table + "\n"))
    assert f"umonitor.toml:{line}: " in str(info.value)
    assert sentence in str(info.value)


def test_collector_limits(tree: Path) -> None:
    text = """[collector]
max_connections = 4096
max_per_source = 64
handshake_timeout = 5
frame_timeout = 12.5
idle_timeout = 600
rate_limit = 5000
pause_timeout = 90
[[instance]]
name = "web"
kernel = "img/vmlinuz"
"""
    limits = load_config(write(tree, text)).guest_limits
    assert (limits.max_connections, limits.max_per_source) == (4096, 64)
    assert (limits.handshake_seconds, limits.frame_seconds) == (5, 12.5)
    assert (limits.idle_seconds, limits.rate, limits.pause_seconds) == (600, 5000, 90)
    without = "[collector]\n[[instance]]" + text.split("[[instance]]")[1]
    assert load_config(write(tree, without)).guest_limits == GuestLimits()


def test_collector_limit_errors_have_lines(tree: Path) -> None:
    bad = """[collector]
max_connections = 0
max_per_source = 2.5
frame_timeout = 0
idle_timeout = -1
rate_limit = true
burst = 3
[[instance]]
name = "web"
kernel = "img/vmlinuz"
"""
    with pytest.raises(UsageError) as info:
        load_config(write(tree, bad))
    message = str(info.value)
    assert "umonitor.toml:2: max_connections must be a whole number of at least 1" in message
    assert "umonitor.toml:3: max_per_source must be a whole number of at least 1" in message
    assert "umonitor.toml:4: frame_timeout must be seconds above 0" in message
    assert "umonitor.toml:5: idle_timeout must be a number of at least 0" in message
    assert "umonitor.toml:6: rate_limit must be a number of at least 0" in message
    assert "umonitor.toml:7: unknown key 'burst' in [collector]" in message


def test_every_problem_of_one_instance_with_its_line(tree: Path) -> None:
    bad = """[[instance]]
name = "Web!"
kernel = "img/nope"
initrd = "img/gone.img"
flavor = "generic"
template = "ip={ip} log={colector}"
args = 'app.msg="unclosed'
memory = "lots"
restart = "sometimes"
accel = "warp"
[[instance]]
flavor = "linux"
args = "app.msg='say \\"hi\\"'"
"""
    with pytest.raises(UsageError) as info:
        load_config(write(tree, bad))
    problems = str(info.value).splitlines()[1:]
    expected = [
        "umonitor.toml:2: instance 'Web!': name must be",
        "umonitor.toml:3: instance 'Web!': kernel 'img/nope' does not exist",
        "umonitor.toml:4: instance 'Web!': initrd 'img/gone.img' does not exist",
        "umonitor.toml:6: instance 'Web!': bad template 'ip={ip} log={colector}': unknown "
        "placeholder {colector}; placeholders are {ip}, {cidr}",
        "umonitor.toml:7: instance 'Web!': args 'app.msg=\"unclosed': no closing quotation",
        "umonitor.toml:8: instance 'Web!': bad memory size 'lots'",
        "umonitor.toml:9: instance 'Web!': restart must be one of no, on-failure, always",
        "umonitor.toml:10: instance 'Web!': accel must be one of auto, kvm, tcg",
        # the second instance: no name, no kernel, and a word no command line can carry
        "umonitor.toml:11: instance 2: name must be",
        "umonitor.toml:11: instance 2: kernel (the image to boot) is required",
        "umonitor.toml:13: instance 2: args word 'app.msg=say \"hi\"' has a double quote",
    ]
    assert len(problems) == len(expected), problems
    for start in expected:
        assert [p for p in problems if p.strip().startswith(start)], (start, problems)


def test_quoted_args_load_and_boot(tree: Path) -> None:
    text = """[[instance]]
name = "web"
kernel = "img/vmlinuz"
args = 'app.msg="a b" c'
"""
    (web,) = load_config(write(tree, text)).instances
    net = GuestNet(web.name, ipaddress.IPv4Interface("10.77.0.5/24"),
                   ipaddress.IPv4Address("10.77.0.1"))  # fmt: skip
    append = boot_spec(web.flavor, net, web.args, web.template).append
    assert append is not None and append.endswith(' app.msg="a b" c')


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        ('kernel = "img"', "umonitor.toml:3: instance 'web': kernel 'img' is not a file"),
        ('kernel = "loop"', "umonitor.toml:3: instance 'web': kernel 'loop' cannot be looked at"),
        ('kernel = "' + "k" * 300 + '"', "cannot be looked at: File name too long"),
        ('kernel = "img/\\u0000"', "(it has a NUL character)"),
        ('kernel = "img/vmlinuz"\nflavor = ["linux"]', "4: instance 'web': unknown flavor"),
        ('kernel = "img/vmlinuz"\nmemory = 1.5', "4: instance 'web': bad memory size 1.5"),
        ('kernel = "img/vmlinuz"\nmemory = "²M"', "4: instance 'web': bad memory size '²M'"),
        ('kernel = "img/vmlinuz"\nflavor = "generic"', "1: instance 'web': the generic flavor"),
        ('kernel = "img/vmlinuz"\nflavor = "nanos"\nargs = "a \'b"', "5: instance 'web': args"),
    ],
)
def test_odd_values_are_reported_not_raised(tree: Path, lines: str, problem: str) -> None:
    (tree / "loop").symlink_to("loop")
    with pytest.raises(UsageError, match="invalid configuration") as info:
        load_config(write(tree, f'[[instance]]\nname = "web"\n{lines}\n'))
    assert problem in str(info.value)


TOML_VALUES = st.recursive(
    st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
    | st.sampled_from(["img/vmlinuz", "generic", "{ip}", "{nope}", "256M", "a 'b", "tcg"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=3),
    max_leaves=6,
)  # fmt: skip
INSTANCE_KEYS = st.sampled_from(sorted(_INSTANCE_KEYS)) | st.text(max_size=6)


@given(st.lists(st.dictionaries(INSTANCE_KEYS, TOML_VALUES, max_size=8) | TOML_VALUES,
                max_size=3))  # fmt: skip
@settings(max_examples=300, deadline=None)
def test_any_instance_table_only_raises_usage_error(instances: list[object]) -> None:
    path = Path(__file__).parent / "umonitor.toml"  # relative kernels: test files
    try:
        config = parse_config({"instance": instances}, "", path)
    except UsageError:
        return
    assert all(i.kernel.is_file() for i in config.instances)


def test_unikernel_keys(tree: Path) -> None:
    nanos = tree / "nanos"
    nanos.mkdir()
    for name in ("kernel.img", "boot.img", "mkfs"):
        (nanos / name).write_bytes(b"x")
    config = load_config(
        write(
            tree,
            """[[instance]]
name = "uk"
kernel = "img/vmlinuz"
flavor = "unikraft"
args = "vfs.fstab=none"
app_args = "serve 'a b'"
[[instance]]
name = "nv"
kernel = "img/vmlinuz"
flavor = "nanos"
nanos = "nanos"
app_args = "-v"
[[instance]]
name = "seed"
kernel = "img/vmlinuz"
flavor = "rumprun"
listen = 2333
""",
        )
    )
    uk, nv, seed = config.instances
    assert (uk.args, uk.app_args) == ("vfs.fstab=none", "serve 'a b'")
    assert nv.nanos == nanos and nv.app_args == "-v"
    assert seed.listen == 2333 and seed.nanos is None and uk.listen is None


def test_unikernel_key_errors_have_lines(tree: Path) -> None:
    (tree / "empty").mkdir()
    bad = """[[instance]]
name = "a"
kernel = "img/vmlinuz"
flavor = "linux"
app_args = "x"
nanos = "empty"
listen = 70000
[[instance]]
name = "b"
kernel = "img/vmlinuz"
flavor = "rumprun"
args = "-v"
app_args = "it\\\\'s"
[[instance]]
name = "c"
kernel = "img/vmlinuz"
flavor = "nanos"
nanos = "empty"
[[instance]]
name = "d"
kernel = "img/vmlinuz"
flavor = "nanos"
"""
    with pytest.raises(UsageError) as info:
        load_config(write(tree, bad))
    problems = [p.strip() for p in str(info.value).splitlines()[1:]]
    expected = [
        "umonitor.toml:5: instance 'a': app_args is for unikraft, rumprun, nanos guests",
        "umonitor.toml:6: instance 'a': nanos (the Nanos kernel directory) is for the nanos",
        "umonitor.toml:7: instance 'a': listen must be the TCP port",
        "umonitor.toml:12: instance 'b': a rumprun guest has no kernel command line",
        "umonitor.toml:13: instance 'b': app_args word \"it's\" has a single quote",
        "umonitor.toml:18: instance 'c': nanos 'empty' has no kernel.img, boot.img, mkfs",
        "umonitor.toml:19: instance 'd': the nanos flavor needs nanos = \"DIR\"",
    ]
    assert len(problems) == len(expected), problems
    for start in expected:
        assert [p for p in problems if p.startswith(start)], (start, problems)


ELF_HEAD = b"\x7fELF\x02\x01\x01" + bytes(57)  # no sections: an ELF without DWARF


def test_symbols_key_is_relative_to_the_config_file(tree: Path) -> None:
    (tree / "img" / "app.dbg").write_bytes(ELF_HEAD)
    config = load_config(
        write(
            tree,
            """[[instance]]
name = "uk"
kernel = "img/vmlinuz"
flavor = "unikraft"
symbols = "img/app.dbg"
[[instance]]
name = "plain"
kernel = "img/vmlinuz"
""",
        )
    )
    uk, plain = config.instances
    assert uk.symbols == (tree / "img" / "app.dbg").resolve()
    assert plain.symbols is None  # the default rule decides when it is needed


def test_bad_symbols_are_config_errors_with_their_lines(tree: Path) -> None:
    bad = """[[instance]]
name = "a"
kernel = "img/vmlinuz"
symbols = "img/missing.dbg"
[[instance]]
name = "b"
kernel = "img/vmlinuz"
symbols = "img/initrd.img"
[[instance]]
name = "c"
kernel = "img/vmlinuz"
symbols = 3
[[instance]]
name = "d"
kernel = "img/vmlinuz"
symbols = "img"
"""
    with pytest.raises(UsageError) as info:
        load_config(write(tree, bad))
    problems = [p.strip() for p in str(info.value).splitlines()[1:]]
    assert problems == [
        f"umonitor.toml:4: instance 'a': symbols 'img/missing.dbg' does not exist "
        f"(looked at {(tree / 'img' / 'missing.dbg').resolve()})",
        "umonitor.toml:8: instance 'b': symbols 'img/initrd.img' is not an ELF file",
        "umonitor.toml:12: instance 'c': symbols must be the path of an ELF file with DWARF",
        f"umonitor.toml:16: instance 'd': symbols 'img' is not a file "
        f"(looked at {(tree / 'img').resolve()})",
    ]


def test_paused_instances(tree: Path) -> None:
    text = """[[instance]]
name = "dbg"
kernel = "img/vmlinuz"
paused = true
[[instance]]
name = "plain"
kernel = "img/vmlinuz"
[[instance]]
name = "bad"
kernel = "img/vmlinuz"
paused = "yes"
"""
    with pytest.raises(UsageError) as info:
        load_config(write(tree, text))
    assert "umonitor.toml:11: instance 'bad': paused must be true or false" in str(info.value)
    dbg, plain = load_config(write(tree, text.rsplit("[[instance]]", 1)[0])).instances
    assert dbg.paused and not plain.paused
