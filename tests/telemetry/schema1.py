"""Buffer files as edgepack wrote them at schema 1 (marshal payloads), for upgrade tests.

The tables and encoding below are a frozen copy of schema 1 (telemetry/store.py and
telemetry/encoding.py before schema 2): tests build real old files with them, the way a
device upgraded in the field has them. ``marshal.dumps`` is safe; only ``loads`` is not.
"""

from __future__ import annotations

import marshal
import sqlite3
import uuid
from pathlib import Path
from typing import Any

SCHEMA_1 = """
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
    ('dead_lettered', 0), ('stored_bytes', 0), ('refusing', 0),
    ('held_upto', 0), ('held_until_ms', 0);
PRAGMA application_id = 1162890050;
PRAGMA user_version = 1;
"""

POISON = b"(\xff\xff\xff\x7f"
"""A five-byte marshal blob declaring a tuple of 2**31-1 items: ``marshal.loads`` tries
to allocate 16 GiB for it (MemoryError on every attempt)."""


def write(path: Path, rows: list[dict[str, Any]], *, poison_at: tuple[int, ...] = ()) -> list[str]:
    """A schema 1 buffer holding ``rows`` (dicts of model/version/bundle_sha256/inputs/
    outputs/flags) pending, with the raw ``POISON`` payload at the given positions.
    Returns the UUIDs in order (poisoned ones included)."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    for statement in SCHEMA_1.strip().split(";\n"):
        conn.execute(statement)
    contexts: dict[tuple[Any, ...], int] = {}
    ids = []
    conn.execute("BEGIN")
    for position, row in enumerate(rows):
        names = tuple(row["inputs"])
        key = (row["model"], row["version"], row["bundle_sha256"], marshal.dumps(names, 4))
        if key not in contexts:
            conn.execute("INSERT INTO contexts (model, version, bundle_sha256, input_names) VALUES (?, ?, ?, ?)", key)
            contexts[key] = conn.execute("SELECT max(id) FROM contexts").fetchone()[0]
        if position in poison_at:
            payload = POISON
        else:
            payload = marshal.dumps((tuple(row["inputs"].values()), row["outputs"], tuple(row["flags"])), 2)
        uid = str(uuid.uuid4())
        ids.append(uid)
        conn.execute(
            "INSERT INTO records (uuid, ts, context, payload, size) VALUES (?, ?, ?, ?, ?)",
            (uid, 1_700_000_000.0 + position, contexts[key], payload, len(payload) + 96),
        )
    conn.execute("UPDATE counters SET value = ? WHERE name = 'recorded'", (len(rows),))
    conn.execute("UPDATE counters SET value = (SELECT sum(size) FROM records) WHERE name = 'stored_bytes'")
    conn.execute("COMMIT")
    conn.close()
    return ids


def rows(count: int) -> list[dict[str, Any]]:
    """``count`` records of the shapes the runtime records (floats, str, int-keyed probabilities)."""
    return [
        {
            "model": "fire-risk", "version": "3", "bundle_sha256": "ab" * 32,
            "inputs": {"seq": seq, "temp_c": 20.0 + seq % 7, "region": ["north", "south"][seq % 2]},
            "outputs": {"prediction": seq % 2, "probabilities": {0: 0.25, 1: 0.75}},
            "flags": ["out_of_range:temp_c"] if seq % 5 == 0 else [],
        }
        for seq in range(count)
    ]
