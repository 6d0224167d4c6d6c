"""The ``feedback`` table is migration 3 of both stores, and SQLite files whose table was
made before that (on first use, ``CREATE TABLE IF NOT EXISTS``) keep it, labels and all."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import sqlite_utils

from home.feedback.labels import LabelIn
from home.feedback.storage import open_feedback
from home.stores.migrations import LATEST, MIGRATIONS
from home.stores.postgres import PostgresStore
from home.stores.sqlite import Store

# What home/feedback/labels.py created before the table was a migration, verbatim.
_OLD_TABLE = """
CREATE TABLE IF NOT EXISTS feedback (
    device TEXT NOT NULL,
    record_id TEXT NOT NULL,
    label TEXT NOT NULL,
    ts REAL,
    received_at REAL NOT NULL,
    source TEXT NOT NULL,
    PRIMARY KEY (device, record_id)
)
"""


def _versions(db: str) -> list[tuple[int, str]]:
    if db.startswith("postgresql://"):
        with psycopg.connect(db) as conn:
            return [tuple(row) for row in conn.execute("SELECT version, name FROM schema_migrations ORDER BY version")]
    with sqlite3.connect(db) as conn:
        rows = [tuple(row) for row in conn.execute("SELECT version, name FROM schema_migrations ORDER BY version")]
    conn.close()
    return rows


def _columns(db: str) -> list[tuple[str, bool]]:
    """(name, part of the primary key) of each column of ``feedback``, in order."""
    if db.startswith("postgresql://"):
        with psycopg.connect(db) as conn:
            key = {row[0] for row in conn.execute(
                "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
                "WHERE i.indrelid = 'feedback'::regclass AND i.indisprimary")}
            names = [row[0] for row in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'feedback' ORDER BY ordinal_position")]
        return [(name, name in key) for name in names]
    with sqlite3.connect(db) as conn:
        rows = [(row[1], bool(row[5])) for row in conn.execute("PRAGMA table_info(feedback)")]
    conn.close()
    return rows


def test_feedback_is_migration_3_with_the_shared_contract(home_db: str) -> None:
    versions = _versions(home_db)
    assert [v for v, _ in versions] == list(range(1, LATEST + 1))
    assert versions[2] == (3, "ground-truth labels (feedback)")
    assert _columns(home_db) == [("device", True), ("record_id", True), ("label", False), ("ts", False),
                                 ("received_at", False), ("source", False)]


def test_a_sqlite_file_whose_feedback_table_predates_the_migration_keeps_its_labels(tmp_path: Path) -> None:
    path = tmp_path / "collector.db"
    # A file as a collector of before left it: schema version 2, feedback made on first use.
    conn = sqlite3.connect(path, isolation_level=None)
    db = sqlite_utils.Database(conn)
    db.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)")
    for migration in MIGRATIONS[:2]:
        migration.sqlite(db)
        db.execute("INSERT INTO schema_migrations VALUES (?, ?, 0)", (migration.version, migration.name))
    conn.execute(_OLD_TABLE)
    conn.execute("INSERT INTO feedback VALUES ('dev', 'r1', '1', NULL, 5.0, 'device')")
    conn.close()

    Store(path).close()  # what a collector does at startup
    assert [v for v, _ in _versions(str(path))] == [1, 2, 3]
    with open_feedback(str(path), create=False) as store:
        again = store.ingest([LabelIn("dev", "r1", "1", None), LabelIn("dev", "r2", "0", None)], received_at=6.0, source="api")
        assert (again.accepted, again.duplicates) == (1, 1)
        assert store.ingest([LabelIn("dev", "r1", "0", None)], received_at=7.0, source="api").status == 409
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT record_id, label, received_at FROM feedback ORDER BY record_id").fetchall() == [
            ("r1", "1", 5.0), ("r2", "0", 6.0)]
    conn.close()


def test_a_postgresql_database_at_version_2_gets_the_table_when_a_collector_opens_it(postgres_url: str) -> None:
    PostgresStore(postgres_url, pool_size=1).close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        # What a collector of before left: no feedback table, schema version 2.
        conn.execute("DROP TABLE feedback")
        conn.execute("DELETE FROM schema_migrations WHERE version = 3")
    with open_feedback(postgres_url) as store:  # opening applies the pending migration
        assert store.ingest([LabelIn("dev", "r1", '"yes"', 1.5)], received_at=2.0, source="import").accepted == 1
    assert [v for v, _ in _versions(postgres_url)] == [1, 2, 3]
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT device, record_id, label, ts, received_at, source FROM feedback").fetchall() == [
            ("dev", "r1", '"yes"', 1.5, 2.0, "import")]
