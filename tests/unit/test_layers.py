"""The house's layers (docs/architecture.md): imports point down, and never in a circle.

Every import in src/umonitor is read from the source (at module level, inside
functions, and under ``TYPE_CHECKING`` alike: a type-only import is still a dependency
of the code that names it). A module may import its own package's modules and the
packages of layers below its own, never a package beside or above it; and no chain of
imports leads from a module back to itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

# Bottom first. A top-level package or module of umonitor is on exactly one layer.
LAYERS: list[set[str]] = [
    {"errors"},  # the one tree of the errors a user sees
    {"__init__", "records", "timeparse", "procs", "sizes", "_speedups"},
    {"protocol"},  # every wire and file format: pure, parse and write
    {"store"},  # log files, index, retention
    {"collector", "export", "debug", "instrument"},  # beside each other, none uses another
    {"assembly", "guest", "overview"},  # what runs a collector; guest libraries; what ls reads
    {"image"},  # guest boot images (Linux kernel + initramfs, Nanos disks): fleet uses them
    {"fleet"},  # QEMU, network, supervisor: `up`
    {"web"},  # the dashboard and /metrics: the same library calls as the CLI, over HTTP
    {"cli"},
    {"__main__"},
]


def top(module: str) -> str:
    """``umonitor.collector.server`` -> ``collector``; ``umonitor`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / "umonitor").rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The umonitor modules ``path`` imports, by their full names."""
    out: set[str] = set()
    tree = ast.parse(path.read_text(), str(path))
    package = ".".join(path.relative_to(SRC).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "umonitor")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the importing module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base.split(".")[0] != "umonitor":
                continue
            for alias in node.names:  # `from umonitor.x import y`: y may be a module
                sub = f"{base}.{alias.name}"
                out.add(sub if sub in known else base)
    return {m for m in out if m in known}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, known) - {name} for name, path in known.items()}


def layer_of(module: str) -> int:
    name = top(module)
    for level, members in enumerate(LAYERS):
        if name in members:
            return level
    raise AssertionError(f"{module}: its package {name!r} is on no layer; add it to LAYERS")


def test_every_module_is_on_a_layer() -> None:
    for module in graph():
        layer_of(module)


def test_imports_point_down() -> None:
    upward = [
        f"{src} imports {dst} ({top(src)} may not use {top(dst)})"
        for src, targets in sorted(graph().items())
        for dst in sorted(targets)
        if top(src) != top(dst) and layer_of(dst) >= layer_of(src)
    ]
    assert upward == []


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


def test_the_checks_see_what_they_check() -> None:
    # A cycle and an upward import made up here are found: the checks can fail.
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    edges = graph()
    assert "umonitor.collector.base" in edges["umonitor.collector.server"]
    assert layer_of("umonitor.fleet.daemon") > layer_of("umonitor.assembly")
    assert layer_of("umonitor.image.nanos") < layer_of("umonitor.fleet.supervisor")
    assert layer_of("umonitor.protocol.syslog") < layer_of("umonitor.export.syslog_sink")
