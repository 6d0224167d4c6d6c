"""Versioned schema of the home database, one mechanism for SQLite and PostgreSQL.

Every store applies ``MIGRATIONS`` in order when it opens. Each migration has a number,
a name, and one body per dialect; the numbers applied are rows of ``schema_migrations``
(``version``, ``name``, ``applied_at``), written in the same transaction as the change,
so a migration is applied entirely or not at all, and exactly once. Opening a database
whose schema is newer than this edgepack knows is refused (an older collector must not
write into a layout it does not understand).

Several collectors may open one PostgreSQL database at the same moment: the migrations
run under a transaction-scoped advisory lock, so one applies them and the others find
them applied. On SQLite, ``BEGIN IMMEDIATE`` serialises openers the same way.

Version 1 is the layout the collector always had (created with ``IF NOT EXISTS``, so a
database made before versioning is adopted as it is); version 2 adds what the Parquet
export needs (``records.export_run`` and ``export_runs``); version 3 the ground-truth
labels (``feedback``, see ``home.feedback.labels``), with ``IF NOT EXISTS`` because SQLite files
made before it was a migration created that table on first use. Tables owned by other
modules (``bundles``) may join this list as further versions, or keep creating themselves
with ``IF NOT EXISTS``; either way they never change a version below them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import StoreError

ADVISORY_LOCK = 0x65646765_7061636B & 0x7FFFFFFFFFFFFFFF
"""Key of the PostgreSQL advisory lock held while migrating ("edgepack" in ASCII)."""


@dataclass(frozen=True, kw_only=True)
class Migration:
    """One step of the schema."""

    version: int
    """Its number: applied in increasing order, each once."""

    name: str
    """What it does, stored beside the number."""

    sqlite: Callable[[Any], None]
    """Applies it to a ``sqlite_utils.Database`` inside the open transaction."""

    postgres: tuple[str, ...]
    """Its PostgreSQL statements, run in order inside the open transaction."""


def _sqlite_v1(db: Any) -> None:
    # Exactly what the store created before versioning (sqlite-utils' DDL), so files
    # made then and now are the same.
    from ..schema import COUNTER_KEYS

    db["records"].create(
        {
            "device": str,
            "id": str,
            "batch_id": str,
            "received_at": float,
            "ts": float,
            "model": str,
            "version": str,
            "bundle_sha256": str,
            "inputs": str,
            "outputs": str,
            "flags": str,
        },
        pk=("device", "id"),
        not_null={"device", "id", "received_at", "ts", "model", "version", "bundle_sha256"},
        if_not_exists=True,
    )
    db["records"].create_index(["model", "version"], if_not_exists=True)
    db["devices"].create(
        {
            "device": str,
            "first_seen": float,
            "last_seen": float,
            "batches": int,
            "dropped": int,
            "sampled_out": int,
            "dead_lettered": int,
        },
        pk="device",
        not_null={"first_seen", "last_seen", "batches", *COUNTER_KEYS},
        defaults={"batches": 0, **{key: 0 for key in COUNTER_KEYS}},
        if_not_exists=True,
    )
    # Counters beyond the three columns above (sent by newer devices), by name.
    db["device_counters"].create(
        {"device": str, "name": str, "value": int},
        pk=("device", "name"),
        not_null={"value"},
        if_not_exists=True,
    )


_POSTGRES_V1 = (
    """CREATE TABLE IF NOT EXISTS records (
        device TEXT NOT NULL, id TEXT NOT NULL, batch_id TEXT, received_at DOUBLE PRECISION NOT NULL,
        ts DOUBLE PRECISION NOT NULL, model TEXT NOT NULL, version TEXT NOT NULL, bundle_sha256 TEXT NOT NULL,
        inputs TEXT, outputs TEXT, flags TEXT, PRIMARY KEY (device, id))""",
    "CREATE INDEX IF NOT EXISTS idx_records_model_version ON records (model, version)",
    """CREATE TABLE IF NOT EXISTS devices (
        device TEXT PRIMARY KEY, first_seen DOUBLE PRECISION NOT NULL, last_seen DOUBLE PRECISION NOT NULL,
        batches BIGINT NOT NULL DEFAULT 0, dropped BIGINT NOT NULL DEFAULT 0, sampled_out BIGINT NOT NULL DEFAULT 0,
        dead_lettered BIGINT NOT NULL DEFAULT 0)""",
    """CREATE TABLE IF NOT EXISTS device_counters (
        device TEXT NOT NULL, name TEXT NOT NULL, value BIGINT NOT NULL, PRIMARY KEY (device, name))""",
)


def _sqlite_v2(db: Any) -> None:
    db.execute("ALTER TABLE records ADD COLUMN export_run INTEGER")
    # Only records not yet exported are in this index: the export finds them without a scan.
    db.execute("CREATE INDEX idx_records_unexported ON records (export_run) WHERE export_run IS NULL")
    db.execute(
        "CREATE TABLE export_runs (run INTEGER PRIMARY KEY, destination TEXT NOT NULL, started_at REAL NOT NULL, "
        "finished_at REAL, records INTEGER NOT NULL)"
    )


_POSTGRES_V2 = (
    "ALTER TABLE records ADD COLUMN export_run BIGINT",
    "CREATE INDEX idx_records_unexported ON records (export_run) WHERE export_run IS NULL",
    """CREATE TABLE export_runs (run BIGINT PRIMARY KEY, destination TEXT NOT NULL, started_at DOUBLE PRECISION NOT NULL,
        finished_at DOUBLE PRECISION, records BIGINT NOT NULL)""",
)

# Ground truth (home.feedback.labels). IF NOT EXISTS: SQLite files made before this was a
# migration created the same table on first use, and keep it, labels and all.
_FEEDBACK = """CREATE TABLE IF NOT EXISTS feedback (
    device TEXT NOT NULL,
    record_id TEXT NOT NULL,
    label TEXT NOT NULL,
    ts {real},
    received_at {real} NOT NULL,
    source TEXT NOT NULL,
    PRIMARY KEY (device, record_id)
)"""


def _sqlite_v3(db: Any) -> None:
    db.execute(_FEEDBACK.format(real="REAL"))


_POSTGRES_V3 = (_FEEDBACK.format(real="DOUBLE PRECISION"),)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(version=1, name="records, devices and device counters", sqlite=_sqlite_v1, postgres=_POSTGRES_V1),
    Migration(version=2, name="export runs (records.export_run, export_runs)", sqlite=_sqlite_v2, postgres=_POSTGRES_V2),
    Migration(version=3, name="ground-truth labels (feedback)", sqlite=_sqlite_v3, postgres=_POSTGRES_V3),
)
LATEST = MIGRATIONS[-1].version

_CREATE_LEDGER = (
    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at {real} NOT NULL)"
)


def _pending(current: int, where: str) -> tuple[Migration, ...]:
    if current > LATEST:
        raise StoreError(
            f"the database {where} is at schema version {current}, but this edgepack knows versions up to {LATEST}; "
            "upgrade edgepack on this collector (every collector on one database must run the same or a newer version)"
        )
    return tuple(migration for migration in MIGRATIONS if migration.version > current)


def migrate_sqlite(db: Any, where: str) -> list[int]:
    """Apply the pending migrations to a ``sqlite_utils.Database`` (inside the caller's
    write transaction); return the versions applied."""
    db.execute(_CREATE_LEDGER.format(real="REAL"))
    current = db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0]
    applied = []
    for migration in _pending(current, where):
        migration.sqlite(db)
        db.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            (migration.version, migration.name, time.time()),
        )
        applied.append(migration.version)
    return applied


def migrate_postgres(conn: Any, where: str) -> list[int]:
    """Apply the pending migrations on a psycopg connection, in one transaction under the
    advisory lock; return the versions applied."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK,))
        conn.execute(_CREATE_LEDGER.format(real="DOUBLE PRECISION"))
        current = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0]
        applied = []
        for migration in _pending(current, where):
            for statement in migration.postgres:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (%s, %s, %s)",
                (migration.version, migration.name, time.time()),
            )
            applied.append(migration.version)
    return applied


def schema_version_sqlite(conn: Any) -> int:
    """The version a SQLite database is at (0 before any migration)."""
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'schema_migrations'").fetchone():
        return 0
    return conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0]
