"""The C library's own address parser, umon_init_default() and the demos' arguments.

The library parses the collector's address itself (Unikraft's lwIP exports no
``inet_pton``), with inet_pton's rules: a driver program feeds strings to both and
every answer must agree. On Linux ``umon_init_default()`` reads ``UMON_CONFIG``. The
demo apps and ``tests/c/spin_guest.c`` take ``umon.*`` words from any argument (or
one argument holding several) and print the rest as ``app args:``, which is how a
unikernel test sees its arguments reach ``main()``. Everything builds with the house
flags under gcc, clang and static gcc (the Nanos build), without a diagnostic.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "src" / "umonitor" / "guest" / "c"
DEMO = ROOT / "src" / "umonitor" / "guest" / "demo"
SPIN = ROOT / "tests" / "c" / "spin_guest.c"

STRICT = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2"]
TOOLCHAINS = {"gcc": ("gcc", []), "clang": ("clang", []), "gcc-static": ("gcc", ["-static"])}

# Reads addresses, one a line; prints "<umon_init accepted> <inet_pton accepted>".
# Port 1 on loopback: an accepted address only ever starts a refused connect.
ADDRESS_DRIVER = r"""
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "umonitor.h"

int main(int argc, char **argv)
{
    char line[256];
    struct in_addr addr;

    if (argc > 1 && strcmp(argv[1], "default") == 0) {
        int r = umon_init_default();
        printf("%d %d\n", r, umon_get_level());
        return 0;
    }
    while (fgets(line, sizeof line, stdin) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        printf("%d %d\n", umon_init(line, 1, "t", NULL) == 0,
               inet_pton(AF_INET, line, &addr) == 1);
    }
    return 0;
}
"""


class Programs:
    """The driver, the demo app and the spin guest of one toolchain."""

    def __init__(self, out: Path) -> None:
        self.driver = out / "address_driver"
        self.demo = out / "demo_app"
        self.spin = out / "spin_guest"

    def addresses(self, texts: list[str]) -> list[tuple[bool, bool]]:
        done = subprocess.run(
            [str(self.driver)],
            input="".join(t + "\n" for t in texts),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        pairs = [line.split() for line in done.stdout.splitlines()]
        return [(ours == "1", libc == "1") for ours, libc in pairs]


@pytest.fixture(scope="module", params=list(TOOLCHAINS))
def programs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Programs:
    compiler, flags = TOOLCHAINS[request.param]
    if shutil.which(compiler) is None:
        pytest.fail(f"{compiler} is not installed (apt-get install {compiler})", pytrace=False)
    out = tmp_path_factory.mktemp(f"platform-{request.param}")
    driver_source = out / "address_driver.c"
    driver_source.write_text(ADDRESS_DRIVER)
    built = Programs(out)
    for exe, source in [
        (built.driver, driver_source),
        (built.demo, DEMO / "demo_app.c"),
        (built.spin, SPIN),
    ]:
        cmd = [compiler, *STRICT, *flags, f"-I{LIB}", "-o", str(exe), str(source)]
        cmd.append(str(LIB / "umonitor.c"))
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stderr}"
        # Static glibc warns at link time about functions that need its shared
        # NSS modules (getaddrinfo and friends); the library uses none of them.
        assert done.stderr == "", f"{' '.join(cmd)} printed diagnostics:\n{done.stderr}"
    return built


ADDRESSES = [
    "127.0.0.1",
    "127.255.255.255",
    "127.1.2.3",
    "127.0.0.01",
    "127.00.0.1",
    "0127.0.0.1",
    "127.0.0.256",
    "127.0.0.1000",
    "127.0.0",
    "127.0.0.1.",
    ".127.0.0.1",
    "127..0.1",
    "127.0.0.1.5",
    "127.0.0.1 ",
    " 127.0.0.1",
    "127.0.0.1:80",
    "127.0.0.+1",
    "127.0.0.-1",
    "127.0x0.0.1",
    "127.0.0.a",
    "127",
    "2130706433",
    "localhost",
    "::1",
    "",
    ".",
    "...",
    "999.999.999.999",
    "256.0.0.1",
]


def test_address_parser_agrees_with_inet_pton(programs: Programs) -> None:
    for text, (ours, libc) in zip(ADDRESSES, programs.addresses(ADDRESSES), strict=True):
        assert ours == libc, f"{text!r}: umon_init {ours}, inet_pton {libc}"


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.builds(
            "127.".__add__,
            st.text(alphabet="0123456789.x -", max_size=14),
        ),
        min_size=1,
        max_size=50,
    )
)
def test_address_parser_agrees_with_inet_pton_on_any_text(
    programs: Programs, texts: list[str]
) -> None:
    # Everything starts with "127.", so an address both accept is on loopback.
    for text, (ours, libc) in zip(texts, programs.addresses(texts), strict=True):
        assert ours == libc, f"{text!r}: umon_init {ours}, inet_pton {libc}"


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("umon.collector=127.0.0.1:1 umon.name=d umon.level=warning", "0 4"),
        ("umon.collector=127.0.0.1:1", "0 7"),
        ("umon.name=d", "-1 7"),
        ("umon.collector=127.0.0.1:1 umon.level=loud", "-1 7"),
        (None, "-1 7"),
    ],
)
def test_init_default_reads_umon_config(
    programs: Programs, config: str | None, expected: str
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "UMON_CONFIG"}
    if config is not None:
        env["UMON_CONFIG"] = config
    done = subprocess.run(
        [str(programs.driver), "default"], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.stdout.strip() == expected


def _demo(programs: Programs, *args: str, env_config: str | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "UMON_CONFIG"}
    if env_config is not None:
        env["UMON_CONFIG"] = env_config
    done = subprocess.run(
        [str(programs.demo), *args], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_demo_prints_its_own_arguments_and_takes_umon_words_from_any(
    programs: Programs,
) -> None:
    out = _demo(programs, "appword1", "umon.rate=100000", "appword2", "umon.count=2")
    lines = out.splitlines()
    assert lines[0] == "app args: appword1 appword2"
    # 19 records besides the steady ones, of which umon.count asked for 2.
    assert lines[1].startswith("demo_app: logged=21 ")


def test_demo_reads_one_argument_holding_several_words(programs: Programs) -> None:
    out = _demo(programs, "umon.rate=100000 umon.count=3")
    assert out.startswith("demo_app: logged=22 "), "no app args line without app args"


def test_demo_falls_back_to_umon_config(programs: Programs) -> None:
    out = _demo(programs, "x", env_config="umon.rate=100000 umon.count=1")
    assert out.splitlines() == ["app args: x", out.splitlines()[1]]
    assert out.splitlines()[1].startswith("demo_app: logged=20 ")


def test_demo_arguments_win_over_umon_config(programs: Programs) -> None:
    out = _demo(programs, "umon.rate=100000 umon.count=1", env_config="umon.count=5")
    assert out.startswith("demo_app: logged=20 ")


def test_spin_guest_reports_the_cost_of_its_log_calls_then_spins(programs: Programs) -> None:
    with subprocess.Popen(
        [str(programs.spin), "umon.count=7", "word"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            lines = [proc.stdout.readline() for _ in range(3)]
            assert lines[0] == "app args: word\n"
            assert lines[1].startswith("spin: 7 records logged in ")
            assert lines[2] == "spin: spinning\n"
            assert proc.poll() is None, "it keeps spinning"
        finally:
            proc.kill()
