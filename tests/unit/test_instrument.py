"""``umonitor instrument``: which format each C type gets, what is left alone, and
rewritten programs that still compile warning-free and behave the same.

The compiled checks build tests/c/instrument_sample.c (a function for each kind of
parameter, return and control flow) as it is and as rewritten, with gcc (C11, gnu99,
C99 -pedantic) and clang, under -Wall -Wextra -Werror, run both without a collector,
and compare what they print. The records themselves are checked against a real collector
in tests/integration/test_instrument.py.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from umonitor.cli import main
from umonitor.instrument.parse import parse
from umonitor.instrument.rewrite import rewrite
from umonitor.instrument.types import Format, classify

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "src" / "umonitor" / "guest" / "c"
SAMPLE = ROOT / "tests" / "c" / "instrument_sample.c"
STRICT = ["-Wall", "-Wextra", "-Werror"]

PRELUDE = """
typedef unsigned int u32;
typedef int (*binop)(int, int);
typedef char *text;
struct point { int x, y; };
"""


@pytest.mark.parametrize(
    ("param", "expected"),
    [
        ("int a", Format.SIGNED),
        ("const int a", Format.SIGNED),
        ("short a", Format.SIGNED),
        ("long long a", Format.SIGNED),
        ("char a", Format.SIGNED),
        ("signed char a", Format.SIGNED),
        ("unsigned a", Format.UNSIGNED),
        ("unsigned char a", Format.UNSIGNED),
        ("unsigned long long a", Format.UNSIGNED),
        ("size_t a", Format.UNSIGNED),
        ("uint32_t a", Format.UNSIGNED),
        ("int64_t a", Format.SIGNED),
        ("_Bool a", Format.UNSIGNED),
        ("u32 a", Format.UNSIGNED),  # a typedef of this file
        ("enum color a", Format.SIGNED),
        ("float a", Format.FLOAT),
        ("double a", Format.FLOAT),
        ("long double a", Format.FLOAT),
        ("char *a", Format.STRING),
        ("const char *a", Format.STRING),
        ("const char *const a", Format.STRING),
        ("text a", Format.STRING),
        ("unsigned char *a", Format.POINTER),
        ("char **a", Format.POINTER),
        ("char *a[]", Format.POINTER),  # array of pointers: decays
        ("char a[16]", Format.POINTER),  # an array parameter is a pointer
        ("int a[4]", Format.POINTER),
        ("void *a", Format.POINTER),
        ("const volatile int *const a", Format.POINTER),
        ("struct point *a", Format.POINTER),
        ("int (*a)[4]", Format.POINTER),
        ("void (*a)(int)", Format.FUNCTION),
        ("binop a", Format.FUNCTION),
        ("int a(int)", Format.FUNCTION),  # a function parameter is a pointer
        ("struct point a", Format.ADDRESS),
        ("union { int i; float f; } a", Format.ADDRESS),
        ("FILE_HANDLE a", Format.ANY),  # a typedef from elsewhere
    ],
)
def test_parameter_formats(param: str, expected: Format) -> None:
    unit = parse(f"{PRELUDE}void f({param}) {{}}\n".encode())
    (function,) = unit.functions
    assert function.skip is None
    (p,) = function.params
    assert p.name == "a"
    assert classify(p.shape, unit.typedefs, parameter=True) is expected


@pytest.mark.parametrize(
    ("head", "expected", "decl"),
    [
        ("int f(void)", Format.SIGNED, "int umon_i_r"),
        ("static const char *f(void)", Format.STRING, "const char *umon_i_r"),
        ("static inline unsigned long f(int x)", Format.UNSIGNED, "unsigned long umon_i_r"),
        ("void f(void)", Format.VOID, "void umon_i_r"),
        ("void *f(void)", Format.POINTER, "void *umon_i_r"),
        ("struct point f(void)", Format.ADDRESS, "struct point umon_i_r"),
        ("int (*f(int which))(int, int)", Format.FUNCTION, "int (*umon_i_r)(int, int)"),
        ("binop f(void)", Format.FUNCTION, "binop umon_i_r"),
        ("double f(double x)", Format.FLOAT, "double umon_i_r"),
    ],
)
def test_return_formats(head: str, expected: Format, decl: str) -> None:
    unit = parse(f"{PRELUDE}{head} {{ }}\n".encode())
    (function,) = unit.functions
    assert function.name == "f" and function.skip is None
    assert function.returns_shape is not None
    assert classify(function.returns_shape, unit.typedefs, parameter=False) is expected
    assert function.result_decl == decl


def test_what_is_left_alone() -> None:
    source = b"""#define SQUARE(x) ((x) * (x))
#define KB *(1 << 10)
static int sizes(void) { return 2 KB; }
int old(a) int a; { return a; }
inline int twice(int x) { return 2 * x; }
static inline int thrice(int x) { return SQUARE(x) * 0 + 3 * x; }
int plain(int x) { return x; }
"""
    result = rewrite(source, "m.c")
    assert result.instrumented == ("thrice", "plain")
    assert [(name, line) for name, line, _ in result.skipped] == [
        ("sizes", 3),
        ("old", 4),
        ("twice", 5),
    ]
    reasons = [why for _, _, why in result.skipped]
    assert reasons[0] == "the parser could not read line 3 (a macro?)"
    assert "K&R" in reasons[1]
    assert "inline" in reasons[2]
    text = result.text.decode()
    assert "#define SQUARE(x) ((x) * (x))\n" in text  # macro definitions as they were
    assert "static int sizes(void) { return 2 KB; }\n" in text
    assert "int old(a) int a; { return a; }\n" in text

    only_plain = rewrite(source, "m.c", ["pl*"])
    assert only_plain.instrumented == ("plain",)
    assert only_plain.skipped == ()  # not asked for: not reported either
    no_inline = rewrite(source, "m.c", skip_inline=True)
    assert no_inline.instrumented == ("plain",)
    assert ("thrice", 6, "inline (--skip-inline)") in no_inline.skipped


def test_varargs_log_the_named_parameters() -> None:
    text = rewrite(b"int sum(int n, ...) { return n; }\n", "v.c").text.decode()
    assert '{"n", umon_i_int(umon_i_v[0], (long long)(n))}' in text
    assert "UMON_ENTER(umon_i_f, 1u);" in text


def _cc(compiler: str) -> str:
    path = shutil.which(compiler)
    assert path, f"{compiler} is needed: apt-get install {compiler}"
    return path


def _build(
    cc: str, std: str, source: Path, out: Path, extra: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [cc, f"-std={std}", *STRICT, *extra, f"-I{LIB}", "-o", str(out), str(source),
         str(LIB / "umonitor.c")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("compiler", "std", "extra"),
    [
        ("gcc", "c11", ()),
        ("gcc", "gnu99", ()),
        ("gcc", "c99", ("-pedantic",)),  # the C library's own flags
        ("clang", "c11", ()),
        ("clang", "c99", ("-pedantic",)),
    ],
)
def test_rewritten_sample_compiles_clean_and_behaves_the_same(
    tmp_path: Path, compiler: str, std: str, extra: tuple[str, ...]
) -> None:
    cc = _cc(compiler)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["instrument", str(SAMPLE), "-o", str(out)])
    assert result.exit_code == 0, result.output
    original = _build(cc, std, SAMPLE, tmp_path / "original", extra)
    assert original.returncode == 0, original.stderr
    rewritten = _build(cc, std, out / SAMPLE.name, tmp_path / "rewritten", extra)
    assert rewritten.returncode == 0, rewritten.stderr
    env = {"PATH": "/usr/bin:/bin"}  # no UMON_CONFIG: the records stay in the ring
    before = subprocess.run([tmp_path / "original"], capture_output=True, text=True, env=env)
    after = subprocess.run([tmp_path / "rewritten"], capture_output=True, text=True, env=env)
    assert before.returncode == after.returncode == 0
    assert before.stdout == after.stdout
    assert "add 5\n" in after.stdout and "cleanup -1\ncleanup 2\n" in after.stdout
    assert "ticks 103\n" in after.stdout


def test_diagnostics_name_the_original_line(tmp_path: Path) -> None:
    source = tmp_path / "broken.c"
    source.write_text(
        "static int twice(int a)\n{\n    int b = a;\n\n    return a +\n        missing;\n}\n"
        "int main(void) { return twice(1); }\n"
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["instrument", str(source), "-o", str(out)])
    assert result.exit_code == 0, result.output
    built = _build(_cc("gcc"), "c11", out / "broken.c", tmp_path / "broken")
    assert built.returncode != 0
    assert f"{source}:6:9: error: 'missing' undeclared" in built.stderr.replace("‘", "'").replace(
        "’", "'"
    )


def test_cli_writes_files_and_reports_what_it_left(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.c").write_text(
        "#define KB *1024\nint k(void) { return 2 KB; }\nint g(int x) { return x; }\n"
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["instrument", str(src / "a.c"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert f"{out / 'a.c'}: 1 functions instrumented, 1 left as is" in result.stdout
    note = f"umonitor: {src / 'a.c'}:2: k left as is: the parser could not read line 2 (a macro?)"
    assert note in result.stderr
    assert (out / "umonitor_instrument.h").read_bytes() == (
        LIB / "umonitor_instrument.h"
    ).read_bytes()
    assert (out / "a.c").read_text().startswith('#include "umonitor_instrument.h"\n#line 1 "')


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.c", "-o", "out"], "umonitor: cannot read missing.c: No such file or directory"),
        (
            ["src/a.c", "-o", "src"],
            "umonitor: src holds the sources: the output needs a directory of its own",
        ),
        (["src/a.c", "other/a.c", "-o", "out"], "umonitor: two sources are named a.c:"),
    ],
)
def test_cli_usage_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    for d in ("src", "other"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "a.c").write_text("int f(void) { return 0; }\n")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["instrument", *args])
    assert result.exit_code == 2
    assert result.stderr.startswith(message)
    assert "Traceback" not in result.output


def test_macros_before_the_type_are_read_as_attributes(tmp_path: Path) -> None:
    source = tmp_path / "m.c"
    source.write_text(
        '#define API __attribute__((visibility("default")))\n'
        "#define FORCE_INLINE static inline __attribute__((always_inline))\n"
        "#define HOT __attribute__((hot))\n"
        "FORCE_INLINE void g(void) { }\n"
        "FORCE_INLINE\nunsigned h(unsigned x) { g(); return x + 1; }\n"
        "API HOT int f(int a) { return (int)h((unsigned)a); }\n"
    )
    unit = parse(source.read_bytes())
    assert [(f.name, f.skip, f.result_decl) for f in unit.functions] == [
        ("g", None, "void umon_i_r"),
        ("h", None, "unsigned umon_i_r"),
        ("f", None, "int umon_i_r"),
    ]
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["instrument", str(source), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "3 functions instrumented, 0 left as is" in result.stdout
    built = subprocess.run(
        [
            _cc("gcc"),
            "-std=c11",
            *STRICT,
            f"-I{LIB}",
            "-c",
            "-o",
            str(tmp_path / "m.o"),
            str(out / "m.c"),
        ],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
