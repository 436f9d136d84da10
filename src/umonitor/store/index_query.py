"""Queries of the index: the instances ``umonitor ls`` lists and the records ``logs`` shows."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from umonitor.records import Kind, Origin, Record, Severity, StoredRecord
from umonitor.store.index_schema import from_sql_u64

_WORD = re.compile(r"\w+")


@dataclass(frozen=True, slots=True)
class InstanceSummary:
    name: str
    first_ns: int | None
    last_ns: int | None
    peer: str
    library: str
    counts: tuple[int, ...]
    dropped: int
    boots: int


def instances(conn: sqlite3.Connection) -> list[InstanceSummary]:
    out = []
    for row in conn.execute(
        "SELECT id, name, first_ns, last_ns, peer, library, "
        "(SELECT CAST(total(dropped) AS INTEGER) FROM boots b WHERE b.instance_id = i.id), "
        "(SELECT count(*) FROM boots b WHERE b.instance_id = i.id) "
        "FROM instances i ORDER BY name"
    ).fetchall():
        counts = [0] * 8
        for sev, n in conn.execute(
            "SELECT severity, n FROM counts WHERE instance_id = ?", (row[0],)
        ):
            counts[int(sev)] = int(n)
        out.append(
            InstanceSummary(
                row[1], row[2], row[3], row[4], row[5], tuple(counts), int(row[6]), int(row[7])
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class Query:
    """What ``umonitor logs`` asks for. ``max_severity`` 4 means warning and worse."""

    names: Sequence[str] = ()
    since_ns: int | None = None
    until_ns: int | None = None
    max_severity: int = 7
    grep: str | None = None
    origins: Sequence[str] = ()


def fts_expression(text: str) -> str | None:
    """An FTS5 query that needs every word of ``text`` (as a word or word prefix)."""
    words = _WORD.findall(text)
    if not words:
        return None
    return " AND ".join('"' + w.replace('"', '""') + '"*' for w in words)


def _where(query: Query) -> tuple[str, list[object]]:
    clauses = ["r.severity <= ?"]
    args: list[object] = [query.max_severity]
    if query.names:
        clauses.append(f"i.name IN ({', '.join('?' * len(query.names))})")
        args.extend(query.names)
    if query.since_ns is not None:
        clauses.append("r.time_ns >= ?")
        args.append(query.since_ns)
    if query.until_ns is not None:
        clauses.append("r.time_ns <= ?")
        args.append(query.until_ns)
    if query.origins:
        clauses.append(f"r.origin IN ({', '.join('?' * len(query.origins))})")
        args.extend(query.origins)
    if query.grep:
        expression = fts_expression(query.grep)
        if expression is not None:
            clauses.append("r.id IN (SELECT rowid FROM records_fts WHERE records_fts MATCH ?)")
            args.append(expression)
        clauses.append("instr(lower(r.message), lower(?)) > 0")
        args.append(query.grep)
    return " AND ".join(clauses), args


@dataclass(frozen=True, slots=True)
class Row:
    id: int
    stored: StoredRecord
    boot: str


def _row(raw: tuple[object, ...]) -> Row:
    (rid, name, boot, seq, time_ns, mono, sev, origin, kind, file, line, func, msg, fields) = raw
    parsed_fields: tuple[tuple[str, str], ...] = ()
    if fields:
        parsed_fields = tuple((str(k), str(v)) for k, v in json.loads(str(fields)).items())
    record = Record(
        from_sql_u64(int(str(seq))),
        Severity(int(str(sev))),
        str(msg),
        Kind(int(str(kind))),
        None if mono is None else from_sql_u64(int(str(mono))),
        None,
        str(file),
        int(str(line)),
        str(func),
        parsed_fields,
    )
    stored = StoredRecord(str(name), int(str(time_ns)), Origin(str(origin)), record)
    return Row(int(str(rid)), stored, str(boot or ""))


_SELECT = (
    "SELECT r.id, i.name, b.boot, r.seq, r.time_ns, r.mono_ns, r.severity, r.origin, "
    "r.kind, r.file, r.line, r.func, r.message, r.fields FROM records r "
    "JOIN instances i ON i.id = r.instance_id LEFT JOIN boots b ON b.id = r.boot_id "
)


def select(
    conn: sqlite3.Connection, query: Query, *, last: int | None = None, after_id: int = 0
) -> Iterator[Row]:
    """Matching records, oldest first (by record time); ``last`` keeps the newest N."""
    where, args = _where(query)
    if after_id:
        where += " AND r.id > ?"
        args.append(after_id)
    if last is not None:
        sql = (
            f"SELECT * FROM ({_SELECT} WHERE {where} ORDER BY r.time_ns DESC, r.id DESC "
            "LIMIT ?) ORDER BY 5, 1"
        )
        args.append(last)
    else:
        sql = f"{_SELECT} WHERE {where} ORDER BY r.time_ns, r.id"
    for raw in conn.execute(sql, args):
        yield _row(raw)


def max_record_id(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT coalesce(max(id), 0) FROM records").fetchone()[0])
