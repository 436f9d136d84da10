"""The index's tables, their version, and how a record's values are kept in them.

An index of another version is dropped and rebuilt from the log files (the truth):
``prepare`` does that, so a schema change is a new ``VERSION`` and nothing else.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from umonitor.store.logfile import RecordLine

VERSION = 2
SCHEMA = """
CREATE TABLE IF NOT EXISTS instances(
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    first_ns INTEGER,
    last_ns INTEGER,
    peer TEXT NOT NULL DEFAULT '',
    library TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS boots(
    id INTEGER PRIMARY KEY,
    instance_id INTEGER NOT NULL REFERENCES instances(id),
    boot TEXT NOT NULL,
    peer TEXT NOT NULL DEFAULT '',
    library TEXT NOT NULL DEFAULT '',
    max_seq INTEGER NOT NULL DEFAULT 0,
    dropped INTEGER NOT NULL DEFAULT 0,
    UNIQUE(instance_id, boot)
);
CREATE TABLE IF NOT EXISTS records(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id INTEGER NOT NULL,
    boot_id INTEGER,
    seq INTEGER NOT NULL,
    time_ns INTEGER NOT NULL,
    mono_ns INTEGER,
    severity INTEGER NOT NULL,
    origin TEXT NOT NULL,
    kind INTEGER NOT NULL,
    file TEXT NOT NULL,
    line INTEGER NOT NULL,
    func TEXT NOT NULL,
    message TEXT NOT NULL,
    fields TEXT,
    log_id INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS records_by_instance ON records(instance_id, id);
CREATE INDEX IF NOT EXISTS records_by_time ON records(time_ns);
CREATE VIRTUAL TABLE IF NOT EXISTS records_fts USING fts5(
    message, content='records', content_rowid='id', detail=none
);
CREATE TABLE IF NOT EXISTS counts(
    instance_id INTEGER NOT NULL,
    severity INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY(instance_id, severity)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS positions(
    id INTEGER PRIMARY KEY,
    instance_id INTEGER NOT NULL,
    file TEXT NOT NULL,
    head BLOB NOT NULL,
    offset INTEGER NOT NULL,
    context TEXT NOT NULL DEFAULT '',
    bad_lines INTEGER NOT NULL DEFAULT 0,
    first_id INTEGER,
    last_id INTEGER,
    UNIQUE(instance_id, file)
);
"""
TABLES = ("records_fts", "records", "counts", "positions", "boots", "instances")


def prepare(conn: sqlite3.Connection) -> None:
    """Create the tables; drop an index of another version first (it is rebuilt)."""
    if conn.execute("PRAGMA user_version").fetchone()[0] == VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        if conn.execute("PRAGMA user_version").fetchone()[0] != VERSION:
            for table in TABLES:
                conn.execute(f"DROP TABLE IF EXISTS {table}")
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


I64_END = 1 << 63  # past SQLite's INTEGER
U64_SPAN = 1 << 64


def sql_u64(value: int) -> int:
    """An unsigned 64-bit value (seq, mono_ns) as SQLite's signed INTEGER holds it.

    Two's complement, so nothing a guest sends is refused or changed; ``from_sql_u64``
    turns it back. Values past 2**63 (only a hostile guest gets there) sort as
    negative in SQL.
    """
    return value - U64_SPAN if value >= I64_END else value


def from_sql_u64(value: int) -> int:
    return value + U64_SPAN if value < 0 else value


def record_row(parsed: RecordLine) -> tuple[Any, ...]:
    """The ``records`` columns after ``instance_id, boot_id`` for one record line.

    ``_speedups.parse_record_lines`` returns exactly these tuples for plain lines.
    """
    rec = parsed.record
    return (
        sql_u64(rec.seq),
        min(max(parsed.time_ns, -I64_END), I64_END - 1),  # the file keeps the exact time
        None if rec.mono_ns is None else sql_u64(rec.mono_ns),
        int(rec.severity),
        parsed.origin.value,
        int(rec.kind),
        rec.file,
        rec.line,
        rec.function,
        rec.message,
        json.dumps(dict(rec.fields)) if rec.fields else None,
    )
