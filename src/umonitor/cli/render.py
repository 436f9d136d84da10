"""How commands print: tables, sizes, and records as text or JSON lines (one renderer)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import click

from umonitor.debug.record_stack import RecordStacks
from umonitor.records import SEVERITY_NAMES
from umonitor.store.index_query import Row
from umonitor.store.logfile import escape, format_fields
from umonitor.timeparse import format_time

if TYPE_CHECKING:
    pass


_COLOURS = {
    0: "red",
    1: "red",
    2: "red",
    3: "red",
    4: "yellow",
    5: "cyan",
    6: None,
    7: "bright_black",
}


def print_table(table: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for r in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())


def format_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    size = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024 or unit == "GiB":
            break
    return f"{size:.1f} {unit}"


def format_text(row: Row, with_name: bool, colour: bool) -> str:
    stored = row.stored
    rec = stored.record
    parts = [format_time(stored.time_ns)]
    if with_name:
        parts.append(click.style(stored.instance, bold=True) if colour else stored.instance)
    level = SEVERITY_NAMES[rec.severity]
    if stored.origin.value != "app":
        level = f"{level}/{stored.origin.value}"
    parts.append(click.style(level, fg=_COLOURS[rec.severity]) if colour else level)
    if rec.kind:
        parts.append(f"[{rec.kind.name.lower()}]")
    if rec.file or rec.function:
        where = f"{rec.file}:{rec.line}" if rec.line else rec.file
        parts.append(f"{where} {rec.function}:" if rec.function else f"{where}:")
    # Guest text never reaches the terminal with its own escape sequences.
    parts.append(escape(rec.message))
    if rec.fields:
        parts.append(format_fields(rec.fields))
    return " ".join(p for p in parts if p)


def format_json(row: Row, stack: list[dict[str, Any]] | None = None) -> str:
    stored = row.stored
    rec = stored.record
    return json.dumps(
        {
            "instance": stored.instance,
            "time": format_time(stored.time_ns),
            "severity": SEVERITY_NAMES[rec.severity],
            "seq": rec.seq,
            "origin": stored.origin.value,
            "kind": rec.kind.name.lower(),
            "file": rec.file,
            "line": rec.line,
            "function": rec.function,
            "message": rec.message,
            "fields": dict(rec.fields),
            "boot": row.boot,
            **({"stack": stack} if stack is not None else {}),
        },
        ensure_ascii=False,
    ).translate(_LINE_BREAKS_ESCAPED)


# JSON allows these raw in strings, but many line readers (Python's splitlines, older
# JavaScript) break lines there: escaped, one record stays one line.
_LINE_BREAKS_ESCAPED = {0x85: "\\u0085", 0x2028: "\\u2028", 0x2029: "\\u2029"}


def emit(
    rows: Iterable[Row], output: str, with_name: bool, colour: bool, stacks: RecordStacks
) -> None:
    """Print ``rows`` (in time order). A record's call stack (the C library's
    ``umon.stack``) follows it, one frame a line."""
    for row in rows:
        name, fields = row.stored.instance, row.stored.record.fields
        if output == "json":
            line = format_json(row, stacks.json_stack(name, fields))
        else:
            line = "\n".join([format_text(row, with_name, colour),
                              *stacks.text_lines(name, fields)])  # fmt: skip
        click.echo(line, color=colour)
