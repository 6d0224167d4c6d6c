"""Where batches end up: one SQLite file, written by one connection.

Records are keyed by (device, id), so storing a batch twice stores nothing the second
time; a batch is stored in one transaction, so it is there entirely or not at all. The
file runs in WAL mode with ``synchronous=FULL``: a 200 sent to a device means the batch
survives a power cut, which is what lets the device delete its copy. Every SQLite error is
translated into ``StoreError`` here.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from .errors import StoreError
from .schema import COUNTER_KEYS, Batch


_RECORD_COLUMNS = (
    "device", "id", "batch_id", "received_at", "ts", "model", "version", "bundle_sha256", "inputs", "outputs", "flags",
)
_INSERT_RECORD = (
    f"INSERT OR IGNORE INTO records ({', '.join(_RECORD_COLUMNS)}) VALUES ({', '.join('?' * len(_RECORD_COLUMNS))})"
)


@dataclass(frozen=True, kw_only=True)
class IngestResult:
    """What storing one batch did."""

    accepted: int
    """Records stored for the first time."""

    duplicates: int
    """Records this device had already sent (or sent twice in the batch)."""


@contextmanager
def _translated(action: str) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        raise StoreError(f"{action} failed: {exc}") from exc


class Store:
    """The collector's SQLite database. Not thread-safe: use it from one thread only."""

    def __init__(self, path: str | Path, *, lock_timeout_seconds: float = 5.0) -> None:
        self.path = Path(path)
        with _translated(f"opening the store {self.path}"):
            self.db = sqlite_utils.Database(self.path)
            self.db.enable_wal()
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute(f"PRAGMA busy_timeout={int(lock_timeout_seconds * 1000)}")
            self._create()

    def _create(self) -> None:
        with self.db.atomic():
            self.db["records"].create(
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
            self.db["records"].create_index(["model", "version"], if_not_exists=True)
            self.db["devices"].create(
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

    @contextmanager
    def _write_transaction(self) -> Iterator[None]:
        # BEGIN IMMEDIATE takes the write lock first, waiting up to busy_timeout for another
        # process to let go. sqlite-utils' atomic() issues a deferred BEGIN; its insert then
        # reads the schema and upgrades to a write, and in WAL mode SQLite refuses such an
        # upgrade at once ("database is locked") without ever calling the busy handler.
        # insert_all() inside nests as a savepoint.
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.rollback()
            raise
        try:
            self.db.execute("COMMIT")
        except BaseException:
            self.db.rollback()
            raise

    def ingest(self, device: str, batch: Batch, *, received_at: float) -> IngestResult:
        """Store ``batch`` for ``device`` in one transaction; already-known record ids are skipped."""
        rows = [
            (
                device,
                record.id,
                batch.batch_id,
                received_at,
                record.ts,
                record.model,
                record.version,
                record.bundle_sha256,
                json.dumps(record.inputs, sort_keys=True),
                json.dumps(record.outputs, sort_keys=True),
                json.dumps(record.flags),
            )
            for record in batch.records
        ]
        counters = batch.counters
        with _translated(f"storing batch {batch.batch_id!r} of device {device!r}"):
            with self._write_transaction():
                before = self.db.conn.total_changes
                if rows:
                    # Plain executemany: sqlite-utils' insert_all re-inspects the table and builds
                    # a statement per chunk, several times slower for a 1,000-record batch.
                    self.db.conn.executemany(_INSERT_RECORD, rows)
                accepted = self.db.conn.total_changes - before
                # Counters are cumulative on the device, so the largest value seen is the truth,
                # whatever order batches arrive in.
                self.db.execute(
                    """
                    INSERT INTO devices (device, first_seen, last_seen, batches, dropped, sampled_out, dead_lettered)
                    VALUES (:device, :now, :now, 1, :dropped, :sampled_out, :dead_lettered)
                    ON CONFLICT(device) DO UPDATE SET
                        last_seen = MAX(last_seen, excluded.last_seen),
                        batches = batches + 1,
                        dropped = MAX(dropped, excluded.dropped),
                        sampled_out = MAX(sampled_out, excluded.sampled_out),
                        dead_lettered = MAX(dead_lettered, excluded.dead_lettered)
                    """,
                    {
                        "device": device,
                        "now": received_at,
                        **{key: getattr(counters, key) if counters else 0 for key in COUNTER_KEYS},
                    },
                )
        return IngestResult(accepted=accepted, duplicates=len(rows) - accepted)

    def stats(self) -> dict[str, Any]:
        """Totals over every device: records, devices, records per model version, counters."""
        with _translated("reading stats"):
            by_model: dict[str, dict[str, int]] = {}
            for model, version, count in self.db.execute(
                "SELECT model, version, COUNT(*) FROM records GROUP BY model, version ORDER BY model, version"
            ):
                by_model.setdefault(model, {})[version] = count
            records = self.db.execute("SELECT COUNT(*) FROM records").fetchone()[0]
            devices, dropped, sampled_out, dead_lettered = self.db.execute(
                "SELECT COUNT(*), TOTAL(dropped), TOTAL(sampled_out), TOTAL(dead_lettered) FROM devices"
            ).fetchone()
        return {
            "records": records,
            "devices": devices,
            "by_model": by_model,
            "dropped": int(dropped),
            "sampled_out": int(sampled_out),
            "dead_lettered": int(dead_lettered),
        }

    def close(self) -> None:
        """Close the connection (checkpointing the WAL)."""
        with _translated(f"closing the store {self.path}"):
            self.db.close()
