"""Buffer files as edgepack wrote them at schema 2 (one row per record, MessagePack), for upgrade tests.

The tables below are a frozen copy of schema 2 (telemetry/schema.py before chunks): tests
build real old files with them, the way a device upgraded in the field has them, with a
backlog that has gaps (records delivered from the middle of it) and two contexts.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import msgspec

from telemetry.ids import IdClock

SCHEMA_2 = """
CREATE TABLE contexts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    bundle_sha256 TEXT NOT NULL,
    input_names BLOB NOT NULL,
    UNIQUE (model, version, bundle_sha256, input_names)
);
CREATE TABLE records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid TEXT NOT NULL,
    ts REAL NOT NULL,
    context INTEGER NOT NULL REFERENCES contexts (id),
    payload BLOB NOT NULL,
    size INTEGER NOT NULL
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
) WITHOUT ROWID;
INSERT INTO counters (name, value) VALUES
    ('recorded', 0), ('delivered', 0), ('dropped', 0), ('sampled_out', 0),
    ('dead_lettered', 0), ('lost', 0), ('stored_bytes', 0), ('refusing', 0),
    ('held_upto', 0), ('held_until_ms', 0), ('identity', 4242);
PRAGMA application_id = 1162890050;
PRAGMA user_version = 2;
"""

POISON = b"\xdd\x7f\xff\xff\xff"
"""A MessagePack array header declaring 2**31-1 items and holding none."""


def write(path: Path, rows: list[dict[str, Any]], *, delivered: tuple[int, ...] = (), poison_at: tuple[int, ...] = ()) -> list[str]:
    """A schema 2 buffer that recorded ``rows``, of which the positions in ``delivered``
    were already sent (deleted, counted as delivered). Returns every UUID in order."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    for statement in SCHEMA_2.strip().split(";\n"):
        conn.execute(statement)
    encode = msgspec.msgpack.Encoder().encode
    contexts: dict[tuple[Any, ...], int] = {}
    ids = IdClock().take(len(rows))
    conn.execute("BEGIN")
    for position, (uid, row) in enumerate(zip(ids, rows)):
        key = (row["model"], row["version"], row["bundle_sha256"], encode(tuple(row["inputs"])))
        if key not in contexts:
            conn.execute("INSERT INTO contexts (model, version, bundle_sha256, input_names) VALUES (?, ?, ?, ?)", key)
            contexts[key] = conn.execute("SELECT max(id) FROM contexts").fetchone()[0]
        payload = POISON if position in poison_at else encode((tuple(row["inputs"].values()), row["outputs"], tuple(row["flags"])))
        conn.execute(
            "INSERT INTO records (uuid, ts, context, payload, size) VALUES (?, ?, ?, ?, ?)",
            (uid, 1_700_000_000.0 + position, contexts[key], payload, len(payload) + 96),
        )
    for position in delivered:
        conn.execute("DELETE FROM records WHERE id = ?", (position + 1,))
    conn.execute("UPDATE counters SET value = ? WHERE name = 'recorded'", (len(rows),))
    conn.execute("UPDATE counters SET value = ? WHERE name = 'delivered'", (len(delivered),))
    conn.execute("UPDATE counters SET value = (SELECT coalesce(sum(size), 0) FROM records) WHERE name = 'stored_bytes'")
    conn.execute("COMMIT")
    conn.close()
    return ids


def rows(count: int) -> list[dict[str, Any]]:
    """``count`` records of two models, switching every 150 records."""
    return [
        {
            "model": ["fire-risk", "flood-risk"][(seq // 150) % 2], "version": "3", "bundle_sha256": "ab" * 32,
            "inputs": {"seq": seq, "temp_c": 20.0 + seq % 7, "region": ["north", "south"][seq % 2]},
            "outputs": {"prediction": seq % 2, "probabilities": {"0": 0.25, "1": 0.75}},
            "flags": ["out_of_range:temp_c"] if seq % 5 == 0 else [],
        }
        for seq in range(count)
    ]
