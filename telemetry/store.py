"""The SQLite file behind a buffer: schema, transactions, and the cross-process write lock.

Only the buffer's writer thread touches a ``Store``: one connection per buffer.

Why a lock file as well as SQLite's own locks: the bundled SQLite (3.40.1) predates the
WAL-reset fix of 3.51.3. That race needs a checkpoint running while *another* connection
commits the transaction that restarts the WAL. ``edgepack sync`` deletes delivered rows
from its own process while the application keeps recording in another, so two connections
do write the same WAL. Every write transaction here (its automatic checkpoint runs inside
the commit) and the final close (which may checkpoint) hold an exclusive ``flock`` on
``<db>-lock``; with every writer and checkpointer serialised by it, a checkpoint can never
overlap another connection's commit, whichever process they live in. Readers take no
lock: the race is between writers and checkpointers only. Both sides may checkpoint, so
the WAL stays bounded even when only one of them runs. The lock is held for a group
commit (milliseconds), never across a network request.

Layout: ``records`` holds one row per pending record (UUID, timestamp, a reference to its
``contexts`` row, and a marshal blob of input values, outputs and flags); ``contexts``
holds what consecutive records share (model, version, bundle hash, input names) once;
``dead_letters`` keeps what the collector refused; ``counters`` the cumulative totals.

SQLite errors are translated into ``telemetry.errors`` here and nowhere else.
"""

from __future__ import annotations

import contextlib
import functools
import json
import marshal
import os
import sqlite3
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

try:
    import fcntl
except ImportError:  # Windows: no flock there; use one process per buffer file
    fcntl = None  # type: ignore[assignment]

from . import crashpoint
from .encoding import MARSHAL_VERSION
from .errors import BufferFormatError, StorageError


def _import_sqlite_utils() -> ModuleType:
    # sqlite-utils imports pandas at import time when it is installed (0.45 s, 140 MB);
    # a device must not pay that. A None entry in sys.modules makes that import fail
    # fast, and sqlite-utils then runs without its optional pandas support. Only done
    # when pandas is not already loaded (then masking would gain nothing), and undone
    # right after, so an application importing pandas later still can.
    if "sqlite_utils" in sys.modules or "pandas" in sys.modules:
        import sqlite_utils

        return sqlite_utils
    sys.modules["pandas"] = None  # type: ignore[assignment]
    try:
        import sqlite_utils
    finally:
        if sys.modules.get("pandas", 0) is None:
            del sys.modules["pandas"]
    return sqlite_utils


sqlite_utils = _import_sqlite_utils()

SCHEMA_VERSION = 1
"""Bumped with every schema change; older files are migrated on open, newer ones refused."""

APPLICATION_ID = 0x45504B42
"""``PRAGMA application_id`` of a buffer file ("EPKB"), so a wrong ``--db`` is caught."""

ROW_OVERHEAD = 96
"""Bytes counted per record on top of its payload: uuid, timestamp, row and index slack."""

_SCHEMA = f"""
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
PRAGMA application_id = {APPLICATION_ID};
PRAGMA user_version = {SCHEMA_VERSION};
"""

COUNTERS = ("recorded", "delivered", "dropped", "sampled_out", "dead_lettered", "stored_bytes")


class StoredRecord(NamedTuple):
    """One pending record as read back from the file (a named tuple: the sync service
    reads thousands per batch, and a frozen dataclass costs ~1 µs more each to build)."""

    rowid: int
    """Local row id (AUTOINCREMENT: never reused)."""
    id: str
    """The record's UUID, its identity at the collector forever."""
    ts: float
    """Unix seconds (UTC) when ``record()`` was called."""
    model: str
    """Model name."""
    version: str
    """Model version."""
    bundle_sha256: str
    """SHA-256 of the bundle that made the prediction."""
    input_names: tuple[str, ...]
    """Names of the input values, shared by every record of the same context."""
    payload: bytes
    """``(input values, outputs, flags)`` as packed by ``telemetry.encoding.pack``."""


class Context:
    """What records of one model and input layout share: stored once, referenced by id."""

    __slots__ = ("model", "version", "bundle_sha256", "names", "blob", "id")

    def __init__(self, model: str, version: str, bundle_sha256: str, names: tuple[str, ...]) -> None:
        self.model = model
        self.version = version
        self.bundle_sha256 = bundle_sha256
        self.names = names
        self.blob = marshal.dumps(names, MARSHAL_VERSION)
        self.id: int | None = None  # known once resolved inside a write transaction


Row = tuple[str, float, Context, bytes, int]
"""A record ready to insert: (uuid, ts, context, payload, size). A plain tuple because
the writer builds one per record on the hot path."""


_ROWS_PER_STATEMENT = 500
"""Rows per multi-row INSERT. One statement per row (``executemany``) pays statement
overhead, an AUTOINCREMENT sequence update and a GIL release/reacquire per row; the
last one stalls the writer behind a busy recording thread."""


def _insert_rows(conn: sqlite3.Connection, rows: Sequence[Row]) -> None:
    step = _ROWS_PER_STATEMENT
    for start in range(0, len(rows), step):
        chunk = rows[start : start + step]
        params = []
        for uid, ts, context, payload, size in chunk:
            params += (uid, ts, context.id, payload, size)
        conn.execute(_insert_sql(len(chunk)), params)


@functools.lru_cache(maxsize=8)
def _insert_sql(count: int) -> str:
    return "INSERT INTO records (uuid, ts, context, payload, size) VALUES " + ",".join(["(?,?,?,?,?)"] * count)


class Store:
    """One SQLite connection to a buffer file, with its schema checked or created."""

    def __init__(self, path: Path, *, synchronous: str, busy_timeout: float, create: bool) -> None:
        self.path = path
        if not create and not path.exists():
            raise BufferFormatError(f"no telemetry buffer at {path}: the file does not exist (expected the --db of the recording app)")
        try:
            self._lock_fd = os.open(f"{path}-lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StorageError(
                f"cannot open telemetry buffer {path}: {exc.strerror} ({exc.filename}); "
                "expected a writable directory for the buffer and its -wal, -shm and -lock files"
            ) from exc
        try:
            # isolation_level=None: transactions are explicit (db.atomic), never implicit.
            conn = sqlite3.connect(str(path), timeout=busy_timeout, isolation_level=None)
        except sqlite3.Error as exc:
            os.close(self._lock_fd)
            raise StorageError(f"cannot open telemetry buffer {path}: {exc}") from exc
        self.db = sqlite_utils.Database(conn, execute_plugins=False, recursive_triggers=False)
        try:
            with self._write_lock():
                self._prepare(synchronous, create)
        except sqlite3.DatabaseError as exc:
            conn.close()
            os.close(self._lock_fd)
            raise BufferFormatError(f"{path} is not a usable SQLite database ({exc}); expected an edgepack telemetry buffer") from exc
        except BaseException:
            conn.close()
            os.close(self._lock_fd)
            raise

    def _prepare(self, synchronous: str, create: bool) -> None:
        db = self.db
        application_id = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = db.table_names()
        if application_id != APPLICATION_ID and tables:
            raise BufferFormatError(
                f"{self.path} is a SQLite database but not an edgepack telemetry buffer "
                f"(tables: {', '.join(sorted(tables)[:5])}); point --db at the file the app records into"
            )
        if version > SCHEMA_VERSION:
            raise BufferFormatError(
                f"{self.path} has buffer schema version {version}, newer than this edgepack "
                f"understands (up to {SCHEMA_VERSION}); upgrade edgepack on this device"
            )
        db.enable_wal()
        db.execute(f"PRAGMA synchronous = {synchronous}")
        self._synchronous = synchronous
        db.execute("PRAGMA foreign_keys = ON")  # a record never points at a missing context
        # Truncate the WAL after checkpoints so a burst does not leave a large file behind.
        db.execute("PRAGMA journal_size_limit = 4194304")
        if not tables:
            if not create:
                raise BufferFormatError(f"{self.path} is empty, not a telemetry buffer")
            with db.atomic():
                for statement in _SCHEMA.strip().split(";\n"):
                    if statement.strip():
                        db.execute(statement)
        # Migrations from older schema versions go here (none yet: version 1 is the first).

    @contextlib.contextmanager
    def _write_lock(self) -> Iterator[None]:
        if fcntl is None:
            yield
            return
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _transaction(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """A write transaction under the cross-process lock.

        ``durable=False`` commits without waiting for the disk (``synchronous=NORMAL`` for
        that commit: still atomic and never corrupt, but the last such commits may be
        undone by a power cut). Used for what the sync service writes: losing a hold, a
        delete or a dead-letter move only means a batch is sent again, and the collector
        stores each record once. The next durable commit makes them durable as well.
        """
        conn = self.db.conn
        try:
            with self._write_lock():
                if not durable and self._synchronous != "NORMAL":
                    conn.execute("PRAGMA synchronous = NORMAL")
                try:
                    with self.db.atomic():
                        yield conn
                finally:
                    if not durable and self._synchronous != "NORMAL":
                        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"writing telemetry buffer {self.path} failed: {exc}") from exc

    def _add(self, conn: sqlite3.Connection, deltas: dict[str, int]) -> None:
        # One statement for all the counters: every statement run by the writer thread
        # gives up the GIL and may wait for it again behind a busy recording thread.
        changed = [(name, delta) for name, delta in deltas.items() if delta]
        if changed:
            cases = " ".join("WHEN ? THEN ?" for _ in changed)
            conn.execute(
                f"UPDATE counters SET value = value + CASE name {cases} END WHERE name IN ({', '.join('?' * len(changed))})",
                [*(v for pair in changed for v in pair), *(name for name, _ in changed)],
            )

    def insert(
        self,
        rows: Sequence[Row],
        *,
        accepted: int,
        sampled_out: int,
        lost: int,
        max_bytes: int | None,
        drop_oldest: bool,
    ) -> None:
        """Store ``rows`` in one transaction and account for everything else that happened.

        ``accepted`` counts every ``record()`` call this group stands for, ``sampled_out``
        those skipped by sampling, ``lost`` those refused earlier because the in-memory
        queue was full. With ``max_bytes``, either the oldest rows make room (``drop_oldest``)
        or rows that do not fit are not stored; both are counted as dropped.
        """
        resolved: list[Context] = []
        try:
            with self._transaction() as conn:
                dropped = lost
                stored = conn.execute("SELECT value FROM counters WHERE name = 'stored_bytes'").fetchone()[0]
                if max_bytes is not None and not drop_oldest:
                    # Once a record did not fit, newer ones are refused until a delivery makes
                    # room, so what is kept is always the oldest records, without holes.
                    refusing = conn.execute("SELECT value FROM counters WHERE name = 'refusing'").fetchone()[0]
                    kept = []
                    for row in rows:
                        if not refusing and stored + row[4] <= max_bytes:
                            kept.append(row)
                            stored += row[4]
                        else:
                            refusing = 1
                            dropped += 1
                    rows = kept
                    conn.execute("UPDATE counters SET value = ? WHERE name = 'refusing'", (refusing,))
                else:
                    stored += sum(row[4] for row in rows)
                for context in {id(row[2]): row[2] for row in rows if row[2].id is None}.values():
                    self._resolve(conn, context)
                    resolved.append(context)
                _insert_rows(conn, rows)
                freed = 0
                if max_bytes is not None and drop_oldest and stored > max_bytes:
                    count, freed = self._drop_oldest(conn, stored - max_bytes)
                    dropped += count
                added = sum(row[4] for row in rows)
                self._add(
                    conn,
                    {"recorded": accepted, "sampled_out": sampled_out, "dropped": dropped, "stored_bytes": added - freed},
                )
        except StorageError:
            # The transaction rolled back: context rows it created are gone again.
            for context in resolved:
                context.id = None
            raise


    def _resolve(self, conn: sqlite3.Connection, context: Context) -> None:
        # Another process may have stored the same context: INSERT OR IGNORE, then look up.
        key = (context.model, context.version, context.bundle_sha256, context.blob)
        conn.execute(
            "INSERT OR IGNORE INTO contexts (model, version, bundle_sha256, input_names) VALUES (?, ?, ?, ?)", key
        )
        context.id = conn.execute(
            "SELECT id FROM contexts WHERE model = ? AND version = ? AND bundle_sha256 = ? AND input_names = ?", key
        ).fetchone()[0]

    def _drop_oldest(self, conn: sqlite3.Connection, excess: int) -> tuple[int, int]:
        # Rows of a batch in flight are skipped: they are about to be delivered, and
        # dropping them would count them as lost although the collector gets them.
        held = dict(conn.execute("SELECT name, value FROM counters WHERE name IN ('held_upto', 'held_until_ms')").fetchall())
        after = held["held_upto"] if held["held_until_ms"] > time.time() * 1000 else 0
        count = freed = 0
        last = None
        for rowid, size in conn.execute("SELECT id, size FROM records WHERE id > ? ORDER BY id", (after,)):
            count += 1
            freed += size
            last = rowid
            if freed >= excess:
                break
        if last is not None:
            conn.execute("DELETE FROM records WHERE id > ? AND id <= ?", (after, last))
        return count, freed

    def _settle(self, conn: sqlite3.Connection, removed: int, *, keep_hold: bool = False) -> None:
        # A batch left the table: its hold ends (unless the next batch, already in flight,
        # shares it), and if it made room, drop_newest may accept records again.
        names = () if keep_hold else ("held_upto", "held_until_ms")
        names += ("refusing",) if removed else ()
        conn.executemany("UPDATE counters SET value = 0 WHERE name = ?", [(name,) for name in names])

    def hold(self, upto: int, seconds: float) -> None:
        """Keep rows up to ``upto`` from ``drop_oldest`` for ``seconds`` (a batch in flight).

        Stored in the file, so a sync in another process protects its batch from the
        recording app too; a crash leaves a hold that simply expires.
        """
        until = int((time.time() + seconds) * 1000) if upto else 0
        with self._transaction(durable=False) as conn:
            conn.executemany("UPDATE counters SET value = ? WHERE name = ?", [(upto, "held_upto"), (until, "held_until_ms")])

    def oldest(self, limit: int, after: int = 0) -> list[StoredRecord]:
        """The ``limit`` oldest pending records with a row id above ``after``, oldest first."""
        try:
            rows = self.db.execute(
                "SELECT r.id, r.uuid, r.ts, c.model, c.version, c.bundle_sha256, c.input_names, r.payload "
                "FROM records AS r LEFT JOIN contexts AS c ON c.id = r.context WHERE r.id > ? ORDER BY r.id LIMIT ?",
                [after, limit],
            ).fetchall()
            names: dict[bytes | None, tuple[str, ...]] = {}
            out = []
            for r in rows:
                if r[6] is None:
                    names[r[6]] = ()  # no context: cannot be unpacked, will be dead-lettered
                elif r[6] not in names:
                    try:
                        names[r[6]] = tuple(marshal.loads(r[6]))
                    except (ValueError, EOFError, TypeError):
                        names[r[6]] = ()  # unreadable: its records fail to unpack and are dead-lettered
                out.append(StoredRecord(r[0], r[1], r[2], r[3] or "", r[4] or "", r[5] or "", names[r[6]], r[7]))
            return out
        except sqlite3.Error as exc:
            raise StorageError(f"reading telemetry buffer {self.path} failed: {exc}") from exc

    def delete(self, rowids: Sequence[int], *, keep_hold: bool = False) -> int:
        """Delete delivered rows in one transaction; returns how many were still there.

        Rows already gone (dropped by ``max_bytes`` while their batch was in flight, or
        acknowledged by a concurrent sync) are not counted again: every row is counted
        exactly once, by the way it left the table.
        """
        ids = json.dumps([int(rowid) for rowid in rowids])
        with self._transaction(durable=False) as conn:
            count, size = conn.execute(
                "SELECT count(*), coalesce(sum(size), 0) FROM records WHERE id IN (SELECT value FROM json_each(?))", (ids,)
            ).fetchone()
            conn.execute("DELETE FROM records WHERE id IN (SELECT value FROM json_each(?))", (ids,))
            self._add(conn, {"delivered": count, "stored_bytes": -size})
            self._settle(conn, count, keep_hold=keep_hold)
            crashpoint.reach("during_delete")
        return int(count)

    def dead_letter(self, rowids: Sequence[int], *, batch_id: str, status: int, reason: str, keep_bytes: int | None) -> int:
        """Move rows to ``dead_letters`` (kept for inspection, never resent); returns how many moved.

        With ``keep_bytes``, the oldest dead letters beyond it are discarded (they stay
        counted in ``dead_lettered``): a collector refusing everything cannot fill the disk.
        """
        ids = json.dumps([int(rowid) for rowid in rowids])
        with self._transaction(durable=False) as conn:
            count, size = conn.execute(
                "SELECT count(*), coalesce(sum(size), 0) FROM records WHERE id IN (SELECT value FROM json_each(?))", (ids,)
            ).fetchone()
            conn.execute(
                "INSERT INTO dead_letters (uuid, ts, context, payload, size, batch_id, status, reason) "
                "SELECT uuid, ts, context, payload, size, ?, ?, ? FROM records "
                "WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id",
                (batch_id, status, reason, ids),
            )
            conn.execute("DELETE FROM records WHERE id IN (SELECT value FROM json_each(?))", (ids,))
            self._add(conn, {"dead_lettered": count, "stored_bytes": -size})
            self._settle(conn, count)
            if keep_bytes is not None:
                conn.execute(
                    "DELETE FROM dead_letters WHERE id <= (SELECT coalesce(max(id), 0) FROM "
                    "(SELECT id, sum(size) OVER (ORDER BY id DESC) AS newer FROM dead_letters) WHERE newer > ?)",
                    (keep_bytes,),
                )
        return int(count)

    def counters(self, *, pending: bool = True) -> dict[str, int]:
        """Every persistent counter, plus ``pending`` (rows waiting to be sent) unless
        ``pending=False`` (counting rows scans the table: milliseconds for a big backlog)."""
        try:
            values = dict(self.db.execute("SELECT name, value FROM counters").fetchall())
            if pending:
                values["pending"] = self.db.execute("SELECT count(*) FROM records").fetchone()[0]
        except sqlite3.Error as exc:
            raise StorageError(f"reading telemetry buffer {self.path} failed: {exc}") from exc
        return {name: int(values.get(name, 0)) for name in (*COUNTERS, *(("pending",) if pending else ()))}

    def close(self) -> None:
        """Close the connection (under the write lock: closing may checkpoint the WAL)."""
        try:
            with self._write_lock():
                self.db.close()
        finally:
            os.close(self._lock_fd)
