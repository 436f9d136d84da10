"""The index's tables and their version.

An index of another version is dropped and rebuilt from the log files (the truth):
``prepare`` does that, so a schema change is a new ``VERSION`` and nothing else.
"""

from __future__ import annotations

import sqlite3

VERSION = 4
SCHEMA = """
CREATE TABLE IF NOT EXISTS instances(
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    peer TEXT NOT NULL DEFAULT '',
    library TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS boots(
    id INTEGER PRIMARY KEY,
    instance_id INTEGER NOT NULL REFERENCES instances(id),
    boot TEXT NOT NULL,
    peer TEXT NOT NULL DEFAULT '',
    library TEXT NOT NULL DEFAULT '',
    dropped INTEGER NOT NULL DEFAULT 0,
    UNIQUE(instance_id, boot)
);
CREATE TABLE IF NOT EXISTS positions(
    id INTEGER PRIMARY KEY,
    instance_id INTEGER NOT NULL,
    file TEXT NOT NULL,
    head BLOB NOT NULL,
    offset INTEGER NOT NULL,
    context TEXT NOT NULL DEFAULT '',
    covered INTEGER NOT NULL DEFAULT 0,
    UNIQUE(instance_id, file)
);
CREATE TABLE IF NOT EXISTS blocks(
    id INTEGER PRIMARY KEY,
    instance_id INTEGER NOT NULL,
    log_id INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    length INTEGER NOT NULL,
    lines INTEGER NOT NULL,
    records INTEGER NOT NULL,
    min_ns INTEGER NOT NULL,
    max_ns INTEGER NOT NULL,
    severities INTEGER NOT NULL,
    origins INTEGER NOT NULL,
    boot TEXT NOT NULL,
    bad INTEGER NOT NULL,
    c0 INTEGER NOT NULL, c1 INTEGER NOT NULL, c2 INTEGER NOT NULL, c3 INTEGER NOT NULL,
    c4 INTEGER NOT NULL, c5 INTEGER NOT NULL, c6 INTEGER NOT NULL, c7 INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS blocks_by_log ON blocks(log_id, offset);
CREATE INDEX IF NOT EXISTS blocks_by_instance ON blocks(instance_id, max_ns);
CREATE TABLE IF NOT EXISTS grams(
    block_id INTEGER PRIMARY KEY,
    bits BLOB NOT NULL
);
"""
TABLES = ("records_fts", "records", "counts", "grams", "blocks", "positions", "boots", "instances")


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
