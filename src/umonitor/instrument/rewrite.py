"""The rewritten text of a C file: edits at each instrumented function's entry and returns.

How this works: every edit inserts or replaces bytes at offsets of the original, and
is followed by a ``#line`` directive naming the original line where the original text
resumes, so the compiler's diagnostics, ``__LINE__`` and ``__FILE__`` (which the
UMON_ENTER and UMON_EXIT macros record) are the original's. The inserted code sits in
blocks of its own, with names that begin ``umon_i_``: it declares nothing the
function can see, and shadows nothing.

  int twice(int a)         int twice(int a)
  {                        {
      return 2 * a;        #line 1 "t.c"
  }                        { char umon_i_v[1][UMON_I_VALUE]; ...; UMON_ENTER(umon_i_f, 1u); }
                           #line 2 "t.c"

                           #line 3 "t.c"
                           { int umon_i_r = (2 * a);
                           #line 3 "t.c"
                           { ...; UMON_EXIT(umon_i_f, 1u); } return umon_i_r; }
                           #line 3 "t.c"

                           }

A ``void`` function also logs its exit before its closing brace (reached only if
control falls off the end); so does ``main``, with the 0 it then returns.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from umonitor.instrument.parse import Function, Return, Unit, parse
from umonitor.instrument.types import Format, Shape, classify

HEADER = "umonitor_instrument.h"


@dataclass(frozen=True, slots=True)
class Result:
    """A rewritten file, the functions instrumented, and those left as they were."""

    text: bytes
    instrumented: tuple[str, ...]
    skipped: tuple[tuple[str, int, str], ...]  # name, line, why


def rewrite(
    source: bytes, path: str, globs: Sequence[str] = ("*",), *, skip_inline: bool = False
) -> Result:
    """``source`` (the file at ``path``, as named in the records) rewritten so that the
    functions whose names match one of ``globs`` log their entries and returns."""
    unit = parse(source)
    edits: list[tuple[int, int, str]] = []
    done: list[str] = []
    skipped: list[tuple[str, int, str]] = []
    for function in unit.functions:
        if not any(fnmatch.fnmatchcase(function.name, g) for g in globs):
            continue
        if function.skip is None and skip_inline and function.inline:
            skipped.append((function.name, function.line, "inline (--skip-inline)"))
        elif function.skip is not None:
            skipped.append((function.name, function.line, function.skip))
        else:
            edits.extend(_Function(function, unit, path, source).edits())
            done.append(function.name)
    head = f'#include "{HEADER}"\n#line 1 "{_quote(path)}"\n'
    return Result(head.encode() + _apply(source, edits), tuple(done), tuple(skipped))


def _quote(path: str) -> str:
    return path.replace("\\", "\\\\").replace('"', '\\"')


def _apply(source: bytes, edits: list[tuple[int, int, str]]) -> bytes:
    out: list[bytes] = []
    at = 0
    for start, end, text in sorted(edits, key=lambda e: (e[0], e[1])):
        out.append(source[at:start])
        out.append(text.encode("utf-8", "surrogateescape"))
        at = end
    out.append(source[at:])
    return b"".join(out)


_HELPERS = {
    Format.SIGNED: "umon_i_int({buf}, (long long)({x}))",
    Format.UNSIGNED: "umon_i_uint({buf}, (unsigned long long)({x}))",
    Format.FLOAT: "umon_i_float({buf}, (double)({x}))",
    Format.STRING: "umon_i_str({buf}, {x})",
    Format.POINTER: "umon_i_ptr({buf}, (const void *)({x}))",
    Format.FUNCTION: "umon_i_fn({buf}, (const void *)&({x}), sizeof({x}))",
    Format.ADDRESS: "umon_i_ptr({buf}, (const void *)&({x}))",
    Format.ANY: "UMON_I_ANY({buf}, {x})",
}


def record(macro: str, values: Sequence[tuple[str, Format, str]]) -> str:
    """A block that logs one record with ``values`` (key, format, lvalue) as fields."""
    if not values:
        return f"{macro}(NULL, 0u);"
    n = len(values)
    fields = ", ".join(
        f'{{"{key}", {_HELPERS[fmt].format(buf=f"umon_i_v[{i}]", x=x)}}}'
        for i, (key, fmt, x) in enumerate(values)
    )
    return (
        f"{{ char umon_i_v[{n}][UMON_I_VALUE]; "
        f"const struct umon_field umon_i_f[{n}] = {{{fields}}}; "
        f"{macro}(umon_i_f, {n}u); }}"
    )


class _Function:
    """The edits of one function."""

    def __init__(self, function: Function, unit: Unit, path: str, source: bytes) -> None:
        self.f = function
        self.typedefs: Mapping[str, Shape] = unit.typedefs
        self.path = _quote(path)
        self.source = source
        assert function.returns_shape is not None
        self.result = classify(function.returns_shape, self.typedefs, parameter=False)

    def line(self, n: int) -> str:
        return f'\n#line {n} "{self.path}"\n'

    def edits(self) -> list[tuple[int, int, str]]:
        f = self.f
        params = [
            (p.name, classify(p.shape, self.typedefs, parameter=True), p.name) for p in f.params
        ]
        entry = self.line(f.line) + record("UMON_ENTER", params) + self.line(f.open_line)
        out = [(f.body_open, f.body_open, entry)]
        out.extend(self.at_return(r) for r in f.returns)
        falls_off = not f.ends_in_return
        if falls_off and (self.result is Format.VOID or f.name == "main"):
            values = [] if self.result is Format.VOID else [("return", Format.SIGNED, "0")]
            exit_ = self.line(f.close_line) + record("UMON_EXIT", values) + self.line(f.close_line)
            out.append((f.body_close, f.body_close, exit_))
        return out

    def at_return(self, r: Return) -> tuple[int, int, str]:
        resume = self.line(r.end_line)
        if r.expr is None:
            return (r.start, r.end, self.line(r.line) + "{ UMON_EXIT(NULL, 0u); return; }" + resume)
        start, end, expr_line = r.expr
        expr = self.source[start:end].decode("utf-8", "surrogateescape")
        if self.result is Format.VOID:  # `return f();` where f returns void too (GNU C)
            head = f"{{ (void)({expr});"
            tail = "UMON_EXIT(NULL, 0u); return; }"
        else:
            head = f"{{ {self.f.result_decl} = ({expr});"
            value = [("return", self.result, "umon_i_r")]
            tail = record("UMON_EXIT", value) + " return umon_i_r; }"
        return (r.start, r.end, self.line(expr_line) + head + self.line(r.line) + tail + resume)
