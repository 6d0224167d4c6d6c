"""Where batches end up: one SQLite file, written by one connection.

Records are keyed by (device, id), so storing a batch twice stores nothing the second
time; a batch is stored in one transaction, so it is there entirely or not at all. The
file runs in WAL mode with ``synchronous=FULL``: a 200 sent to a device means the batch
survives a power cut, which is what lets the device delete its copy. Every SQLite error is
translated into ``StoreError`` here.

A batch arrives from ``schema`` as columns of values already in their stored form
(canonical JSON text for inputs, outputs and flags), so storing it is one executemany
with no Python code per record.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import repeat
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
_UPDATE_DEVICE = """
    INSERT INTO devices (device, first_seen, last_seen, batches, dropped, sampled_out, dead_lettered)
    VALUES (:device, :now, :now, 1, :dropped, :sampled_out, :dead_lettered)
    ON CONFLICT(device) DO UPDATE SET
        last_seen = MAX(last_seen, excluded.last_seen),
        batches = batches + 1,
        dropped = MAX(dropped, excluded.dropped),
        sampled_out = MAX(sampled_out, excluded.sampled_out),
        dead_lettered = MAX(dead_lettered, excluded.dead_lettered)
"""
CACHE_MIB = 64
"""Page cache of the writer connection. edgepack devices send time-ordered ids (UUIDv7),
whose index entries land at the end of the (device, id) key, but any sender may use random
UUIDs, which touch index pages all over it; with SQLite's default 2 MiB cache those pages
are read back from the OS on every batch once the store holds some 100,000 records."""


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
            # Autocommit mode: every transaction is begun and ended explicitly below. The
            # hot path (ingest) uses the plain connection: one executemany per batch.
            self.conn = sqlite3.connect(self.path, isolation_level=None)
            self.db = sqlite_utils.Database(self.conn)
            try:
                self.conn.execute(f"PRAGMA busy_timeout={int(lock_timeout_seconds * 1000)}")
                self.db.enable_wal()
                self.conn.execute("PRAGMA synchronous=FULL")
                self.conn.execute(f"PRAGMA cache_size=-{CACHE_MIB * 1024}")
                self._create()
            except BaseException:
                self.conn.close()
                raise

    def _create(self) -> None:
        with self._write_transaction():
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
        # process to let go. A deferred BEGIN would read first and upgrade to a write later,
        # and in WAL mode SQLite refuses such an upgrade at once ("database is locked")
        # without ever calling the busy handler.
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.rollback()
            raise
        try:
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.rollback()
            raise

    def ingest(self, device: str, batch: Batch, *, received_at: float) -> IngestResult:
        """Store ``batch`` for ``device`` in one transaction; already-known record ids are skipped."""
        records = batch.records
        counters = batch.counters
        with _translated(f"storing batch {batch.batch_id!r} of device {device!r}"):
            with self._write_transaction():
                accepted = 0
                if len(records):
                    # One executemany over the columns as they come: rows are zipped in C, with
                    # no Python code per record. rowcount sums the rows each INSERT OR IGNORE
                    # really inserted (not those of triggers), so duplicates need no query.
                    rows = zip(
                        repeat(device),
                        records.id,
                        repeat(batch.batch_id),
                        repeat(received_at),
                        records.ts,
                        records.model,
                        records.version,
                        records.bundle_sha256,
                        records.inputs,
                        records.outputs,
                        records.flags,
                    )
                    accepted = self.conn.executemany(_INSERT_RECORD, rows).rowcount
                # Counters are cumulative on the device, so the largest value seen is the truth,
                # whatever order batches arrive in.
                self.conn.execute(
                    _UPDATE_DEVICE,
                    {
                        "device": device,
                        "now": received_at,
                        **{key: getattr(counters, key) if counters else 0 for key in COUNTER_KEYS},
                    },
                )
        return IngestResult(accepted=accepted, duplicates=len(records) - accepted)

    def stats(self) -> dict[str, Any]:
        """Totals over every device: records, devices, records per model version, counters."""
        with _translated("reading stats"):
            by_model: dict[str, dict[str, int]] = {}
            for model, version, count in self.conn.execute(
                "SELECT model, version, COUNT(*) FROM records GROUP BY model, version ORDER BY model, version"
            ):
                by_model.setdefault(model, {})[version] = count
            records = self.conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]
            devices, dropped, sampled_out, dead_lettered = self.conn.execute(
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
