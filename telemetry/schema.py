"""The buffer file's schema: tables, counters, version, and how a new file is laid out.

Layout: ``chunks`` holds the pending records, one row per commit group of one context
(their UUIDs, timestamps, and one MessagePack array of their input values, outputs and
flags, see ``telemetry.chunks``); ``contexts`` holds what consecutive records share
(model, version, bundle hash, input names) once; ``dead_letters`` keeps, one row per
record, what the collector refused or what could not be read; ``counters`` the
cumulative totals and a little state.

Versions: 1 stored one row per record with ``marshal``; 2 stored one row per record as
MessagePack and added the ``lost`` counter; 3 (this one) stores chunks. Older files are
migrated on open (``telemetry.migration``), newer ones refused.
"""

from __future__ import annotations

import secrets
import sqlite3

SCHEMA_VERSION = 3
"""Bumped with every schema change; older files are migrated on open, newer ones refused."""

APPLICATION_ID = 0x45504B42
"""``PRAGMA application_id`` of a buffer file ("EPKB"), so a wrong ``--db`` is caught."""

SQLITE_HEADER = b"SQLite format 3\x00"
"""The first 16 bytes of every SQLite database file."""

LEDGER_COUNTERS = ("recorded", "delivered", "dropped", "sampled_out", "dead_lettered", "lost")
"""The counters that only ever grow: mirrored in the ledger file (``telemetry.ledger``)."""

COUNTERS = (*LEDGER_COUNTERS, "stored_bytes")
"""The counters ``Store.counters`` reports."""

IDENTITY = "identity"
"""The ``counters`` row holding the file's identity: a random positive 63-bit number drawn
when the file is laid out (or first opened by a version that knows it), also kept in the
ledger, so a ledger left behind by a deleted buffer is told from one whose WAL was lost."""

TABLES = """
CREATE TABLE contexts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    bundle_sha256 TEXT NOT NULL,
    input_names BLOB NOT NULL,
    UNIQUE (model, version, bundle_sha256, input_names)
);
CREATE TABLE chunks (
    id INTEGER PRIMARY KEY,
    context INTEGER NOT NULL REFERENCES contexts (id),
    count INTEGER NOT NULL,
    gone INTEGER NOT NULL DEFAULT 0,
    size INTEGER NOT NULL,
    ids TEXT NOT NULL,
    ts BLOB NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid TEXT NOT NULL,
    ts REAL NOT NULL,
    context INTEGER NOT NULL REFERENCES contexts (id),
    payload BLOB NOT NULL,
    size INTEGER NOT NULL,
    batch_id TEXT NOT NULL,
    status INTEGER NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID
"""

SEQUENCE = "sequence"
"""The ``counters`` row holding the next record row id (a chunk's ``id`` is its first
record's): row ids are never reused, not even after the table was emptied."""

_STATE = ("refusing", "held_upto", "held_until_ms", SEQUENCE)
"""Counters rows that are state, not totals: drop_newest's refusal, the sync hold, the
record sequence."""

CHUNKS_TABLE = """CREATE TABLE chunks (
    id INTEGER PRIMARY KEY,
    context INTEGER NOT NULL REFERENCES contexts (id),
    count INTEGER NOT NULL,
    gone INTEGER NOT NULL DEFAULT 0,
    size INTEGER NOT NULL,
    ids TEXT NOT NULL,
    ts BLOB NOT NULL,
    payload BLOB NOT NULL
)"""
"""The chunks table alone (the migration from schema 2 creates it). The small columns
come first: SQLite reads a row's columns in order, so a column after a large blob
(``size`` was, at first) costs a walk through the blob's overflow pages."""


def create(conn: sqlite3.Connection) -> None:
    """Lay out an empty file as a buffer of this schema version (inside a transaction)."""
    for statement in TABLES.strip().split(";\n"):
        conn.execute(statement)
    conn.executemany("INSERT INTO counters (name, value) VALUES (?, 0)", [(name,) for name in (*COUNTERS, *_STATE)])
    conn.execute("UPDATE counters SET value = 1 WHERE name = ?", (SEQUENCE,))
    conn.execute("INSERT INTO counters (name, value) VALUES (?, ?)", (IDENTITY, new_identity()))
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def new_identity() -> int:
    """A fresh file identity: random, positive (0 means "unknown" in the ledger)."""
    return secrets.randbits(63) or 1
