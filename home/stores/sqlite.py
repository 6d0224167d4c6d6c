"""Where batches end up: one SQLite file, its records written by one connection per process.

Records are keyed by (device, id), so storing a batch twice stores nothing the second
time; a batch is stored in one transaction, so it is there entirely or not at all. The
file runs in WAL mode with ``synchronous=FULL``: a 200 sent to a device means the batch
survives a power cut, which is what lets the device delete its copy. Every SQLite error is
translated into ``StoreError`` here.

A batch arrives from ``schema`` as columns of values already in their stored form
(canonical JSON text for inputs, outputs and flags), so storing it is a few multi-row INSERTs
with no Python code per record.

The file and its -wal/-shm are owner-only (SQLite gives the journal files the mode of
the database file, so creating that one 0600 is enough). The app talks to a store only
through ``RecordStore``; ``postgres.py`` is the PostgreSQL store behind the same contract,
and ``backends.py`` picks one from the settings. The schema is versioned in ``migrations.py``.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any, Protocol

import sqlite_utils

from ..errors import StoreError
from .migrations import migrate_sqlite
from .write_lock import close, locked
from ..schema import COUNTER_KEYS, Batch

_PER_ROW = ("id", "ts", "model", "version", "bundle_sha256", "inputs", "outputs", "flags")
"""A record's own columns; the batch's device, batch id and reception time go with each."""
_RECORD_COLUMNS = ("device", "batch_id", "received_at", *_PER_ROW)
ROWS_PER_INSERT = 500
"""Records per INSERT statement. The store's thread shares the GIL with the threads that
parse the next batches: an executemany takes the GIL back after every row, and each time
waits for a parsing thread to let go of it (up to the switch interval), so a batch stored
beside a parse took a hundred times as long. One statement of many rows is bound with the
GIL held and then inserted in one step without it. Larger statements are slower to
prepare and to run in SQLite; 500 rows was the fastest alone and beside a busy thread."""


@functools.lru_cache(maxsize=8)
def _insert_records(rows: int) -> str:
    """INSERT OR IGNORE of ``rows`` records: ?1..?3 are the batch's device, batch id and
    reception time, bound once; each row's own fields follow."""
    width = len(_PER_ROW)
    values = ",".join(f"(?1,?2,?3,{','.join(f'?{4 + width * r + j}' for j in range(width))})" for r in range(rows))
    return f"INSERT OR IGNORE INTO records ({', '.join(_RECORD_COLUMNS)}) VALUES {values}"


def rows_per_insert(conn: sqlite3.Connection) -> int:
    """``ROWS_PER_INSERT``, or fewer where SQLite takes fewer parameters per statement
    (999 before 3.32, instead of 32,766)."""
    return min(ROWS_PER_INSERT, (conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) - 3) // len(_PER_ROW))


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
_UPDATE_COUNTER = """
    INSERT INTO device_counters (device, name, value) VALUES (?, ?, ?)
    ON CONFLICT(device, name) DO UPDATE SET value = MAX(value, excluded.value)
"""
OWNER_ONLY = 0o600
FULL_BELOW_BYTES = 1 << 20
"""Free space under which a failed write is reported as a full disk."""
logger = logging.getLogger("edgepack.collector")
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


class StatsSource(Protocol):
    """Where the app reads stats from."""

    def stats(self, device: str | None = None) -> dict[str, Any]: ...

    def close(self) -> None: ...


def stats_answer(device: str | None, records: int, devices: int, by_model: dict[str, Any], counters: dict[str, int]) -> dict[str, Any]:
    """The ``GET /v1/stats`` document, the same from every store."""
    return {
        "scope": "fleet" if device is None else "device",
        "device": device,
        "records": records,
        "devices": devices,
        "by_model": by_model,
        **{key: counters[key] for key in COUNTER_KEYS},
        "counters": counters,
    }


class RecordStore(StatsSource, Protocol):
    """What the app needs of a store (SQLite here, PostgreSQL in ``postgres.py``): one batch
    stored atomically and once per (device, record id), and counts read back."""

    def ingest(self, device: str, batch: Batch, *, received_at: float) -> IngestResult: ...


def _free_bytes(path: Path) -> int | None:
    try:
        return shutil.disk_usage(path.parent).free
    except OSError:
        return None


@contextmanager
def _translated(action: str, path: Path) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        # SQLite says "database or disk is full" for ENOSPC, but a full disk met while
        # creating or growing the WAL can also surface as a bare "disk I/O error": look
        # at the free space before calling it anything else, so that nobody deletes a
        # healthy file to "repair" it.
        code = getattr(exc, "sqlite_errorcode", None) or 0
        primary = code & 0xFF
        free = _free_bytes(path) if primary in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR) else None
        if primary == sqlite3.SQLITE_FULL or (primary == sqlite3.SQLITE_IOERR and free is not None and free < FULL_BELOW_BYTES):
            where = f"{free} bytes free" if free is not None else "free space unknown"
            raise StoreError(
                f"{action} failed: the disk holding {path} is full ({where} in {path.parent}); the file is not "
                "damaged: free some space, then try again"
            ) from exc
        raise StoreError(f"{action} failed: {exc}") from exc
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise StoreError(
                f"{action} failed: the disk holding {path} is full; free some space, then try again"
            ) from exc
        raise StoreError(f"{action} failed: {exc.strerror or exc}") from exc



@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction on an autocommit connection of a home database (records,
    feedback, export claims alike), rolled back on any error, COMMIT's own included.

    The file's edgepack write lock comes first (``write_lock``: the WAL-reset race),
    waited for up to the connection's busy timeout. BEGIN IMMEDIATE then takes SQLite's
    write lock, waiting up to busy_timeout for another program to let go. A deferred
    BEGIN would read first and upgrade to a write later, and in WAL mode SQLite refuses
    such an upgrade at once ("database is locked") without ever calling the busy handler.
    """
    with locked(conn):
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.rollback()
            raise
        try:
            conn.execute("COMMIT")
        except BaseException:
            conn.rollback()
            raise


def _owner_only(path: Path) -> None:
    """Create ``path`` 0600 if missing; take group and other access away from an existing one."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, OWNER_ONLY)
    except FileExistsError:
        for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            try:
                mode = name.stat().st_mode & 0o777
            except FileNotFoundError:
                continue
            if mode & 0o077:
                os.chmod(name, mode & 0o700)
                logger.warning("%s was readable by others (mode %o); made it owner-only", name, mode)
    else:
        os.close(fd)


class Store:
    """The collector's SQLite database. Not thread-safe: use it from one thread only."""

    def __init__(self, path: str | Path, *, lock_timeout_seconds: float = 5.0) -> None:
        self.path = Path(path)
        with _translated(f"opening the store {self.path}", self.path):
            _owner_only(self.path)
            # Autocommit mode: every transaction is begun and ended explicitly below. The
            # hot path (ingest) uses the plain connection (ROWS_PER_INSERT).
            self.conn = sqlite3.connect(self.path, isolation_level=None)
            self.db = sqlite_utils.Database(self.conn)
            try:
                self.conn.execute(f"PRAGMA busy_timeout={int(lock_timeout_seconds * 1000)}")
                self.db.enable_wal()
                self.conn.execute("PRAGMA synchronous=FULL")
                self.conn.execute(f"PRAGMA cache_size=-{CACHE_MIB * 1024}")
                self._rows_per_insert = rows_per_insert(self.conn)
                self._create()
            except BaseException:
                self.conn.close()
                raise

    def _create(self) -> None:
        # The versioned schema (home/stores/migrations.py), the same steps as PostgreSQL's.
        with self._write_transaction():
            migrate_sqlite(self.db, str(self.path))

    def _write_transaction(self) -> Any:
        return write_transaction(self.conn)

    def ingest(self, device: str, batch: Batch, *, received_at: float) -> IngestResult:
        """Store ``batch`` for ``device`` in one transaction; already-known record ids are skipped."""
        records = batch.records
        counters = batch.counters
        with _translated(f"storing batch {batch.batch_id!r} of device {device!r}", self.path):
            with self._write_transaction():
                accepted = 0
                if len(records):
                    # The columns as they come, ROWS_PER_INSERT records per statement, their
                    # parameters flattened in C. rowcount is the rows each INSERT OR IGNORE
                    # really inserted (not those of triggers), so duplicates need no query.
                    fields = [getattr(records, name) for name in _PER_ROW]
                    head = [device, batch.batch_id, received_at]
                    step = self._rows_per_insert
                    for start in range(0, len(records), step):
                        end = min(start + step, len(records))
                        flat = chain.from_iterable(zip(*(column[start:end] for column in fields)))
                        accepted += self.conn.execute(_insert_records(end - start), [*head, *flat]).rowcount
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
                if counters is not None and counters.extra:
                    self.conn.executemany(_UPDATE_COUNTER, [(device, name, value) for name, value in counters.extra.items()])
        return IngestResult(accepted=accepted, duplicates=len(records) - accepted)

    def stats(self, device: str | None = None) -> dict[str, Any]:
        """Totals for ``device``, or over every device when None (see ``read_stats``)."""
        return read_stats(self.conn, self.path, device)

    def close(self) -> None:
        """Close the connection (checkpointing the WAL)."""
        with _translated(f"closing the store {self.path}", self.path):
            close(self.conn)


class StoreReader:
    """A read-only connection to the store, for stats: reading never waits for a write
    (WAL), and a stats request queued behind others never delays a batch on the writer."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with _translated(f"opening the store {self.path} for reading", self.path):
            self.conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None)

    def stats(self, device: str | None = None) -> dict[str, Any]:
        """Totals for ``device``, or over every device when None (see ``read_stats``)."""
        return read_stats(self.conn, self.path, device)

    def close(self) -> None:
        with _translated(f"closing the store {self.path}", self.path):
            self.conn.close()


def read_stats(conn: sqlite3.Connection, path: Path, device: str | None = None) -> dict[str, Any]:
    """Totals for ``device``, or over every device when None: records, devices, records per
    model version, and counters (the three every device sends also at the top level)."""
    where, params = ("WHERE device = ?", (device,)) if device is not None else ("", ())
    with _translated("reading stats", path):
        # One read transaction, so the totals agree with one another.
        conn.execute("BEGIN")
        try:
            by_model: dict[str, dict[str, int]] = {}
            for model, version, count in conn.execute(
                f"SELECT model, version, COUNT(*) FROM records {where} GROUP BY model, version ORDER BY model, version",
                params,
            ):
                by_model.setdefault(model, {})[version] = count
            records = conn.execute(f"SELECT COUNT(*) FROM records {where}", params).fetchone()[0]
            devices, *known = conn.execute(
                f"SELECT COUNT(*), {', '.join(f'TOTAL({key})' for key in COUNTER_KEYS)} FROM devices {where}", params
            ).fetchone()
            counters = dict(zip(COUNTER_KEYS, map(int, known)))
            for name, total in conn.execute(
                f"SELECT name, TOTAL(value) FROM device_counters {where} GROUP BY name ORDER BY name", params
            ):
                counters[name] = int(total)
        finally:
            conn.execute("COMMIT")
    return stats_answer(device, records, devices, by_model, counters)
