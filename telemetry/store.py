"""The SQLite file behind a buffer: opening it safely, transactions, and the operations.

Only the buffer's writer thread touches a ``Store`` (one connection per buffer); the
sync service, in the same or another process, has its own. How the two serialise their
writes is in ``telemetry.lock``; the tables are in ``telemetry.schema``.

Opening a file checks, in this order: that it is a SQLite file and an edgepack buffer
(else ``BufferFormatError``, and the file is left alone), that the disk has room (a
full disk is ``DiskFullError``, never "not a database"), that its schema is not newer
than this code (older ones are upgraded, ``telemetry.migration``), that its pages are
sound (``PRAGMA quick_check``; a damaged file is salvaged, ``telemetry.recovery``), and
that no acknowledged commit went missing with the WAL (``telemetry.ledger``). Later, the
first statement that finds a damaged page triggers the same salvage, and the operation
is retried once on the fresh file.

Data files (the database, its -wal and -shm, which SQLite creates with the database's
mode, the -lock and the -ledger) are created owner-only (0600): they hold the
application's inputs.

SQLite errors are translated into ``telemetry.errors`` by ``telemetry.diagnosis``.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from . import crashpoint
from .diagnosis import damaged, disk_full, storage_error
from .encoding import PayloadError, unpack_names
from .errors import BufferDamagedError, BufferFormatError, StorageError
from .ledger import Ledger
from .lock import WriteLock
from .migration import migrate
from .recovery import Salvage, salvage
from .rows import Context, Row, StoredRecord
from .schema import APPLICATION_ID, COUNTERS, LEDGER_COUNTERS, SCHEMA_VERSION, SQLITE_HEADER, create

log = logging.getLogger("telemetry.buffer")
T = TypeVar("T")


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


sqlite_utils = _import_sqlite_utils()

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


_LEDGER_SELECT = f"SELECT name, value FROM counters WHERE name IN ({', '.join(repr(n) for n in LEDGER_COUNTERS)})"


def _recovering(method: Callable[..., T]) -> Callable[..., T]:
    """Run ``method``; if it finds the file damaged (or replaced by another process's
    salvage), salvage or reopen, then run it once more on the fresh file."""

    @functools.wraps(method)
    def wrapper(self: Store, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except BufferDamagedError:
            self._recover()
            return method(self, *args, **kwargs)

    return wrapper


class _Damaged(Exception):
    """``PRAGMA quick_check`` found damage at open."""


class _Replaced(BufferDamagedError):
    """Another process salvaged the file: this connection points at the moved-aside copy."""


class Store:
    """One SQLite connection to a buffer file, with its schema checked or created."""

    def __init__(self, path: Path, *, synchronous: str, busy_timeout: float, create: bool) -> None:
        self.path = path
        self._synchronous = synchronous
        self._busy_timeout = busy_timeout
        self.salvages: list[Salvage] = []
        """Damaged files this store moved aside and salvaged (for logs and tests)."""
        self.lost_at_open = 0
        """Records found missing at open (a lost WAL), added to ``lost``."""
        self.generation = 0
        if not create and not path.exists():
            raise BufferFormatError(f"no telemetry buffer at {path}: the file does not exist (expected the --db of the recording app)")
        try:
            self._lock = WriteLock(path)
        except OSError as exc:
            raise self._open_error(exc) from exc
        try:
            if create:
                # Owner-only from the first byte: SQLite gives -wal and -shm the same mode.
                os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
            self.ledger = Ledger(path)
        except OSError as exc:
            self._lock.close()
            raise self._open_error(exc) from exc
        try:
            with self._lock.held():
                self._open()
        except BaseException:
            self.ledger.close()
            self._lock.close()
            raise

    def _open_error(self, exc: OSError) -> StorageError:
        if disk_full(exc, self.path):
            return storage_error(exc, self.path, "opening")
        return StorageError(
            f"cannot open telemetry buffer {self.path}: {exc.strerror} ({exc.filename}); "
            "expected a writable directory for the buffer and its -wal, -shm, -lock and -ledger files"
        )

    # -- opening ----------------------------------------------------------------------------

    def _connect(self) -> None:
        try:
            # isolation_level=None: transactions are explicit (db.atomic), never implicit.
            conn = sqlite3.connect(str(self.path), timeout=self._busy_timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise storage_error(exc, self.path, "opening") from exc
        self.db = sqlite_utils.Database(conn, execute_plugins=False, recursive_triggers=False)
        self._inode = os.stat(self.path).st_ino  # to notice another process's salvage
        self.generation += 1  # cached context ids of an earlier file are stale now

    def _open(self) -> None:
        """Connect and prepare (the write lock is held), salvaging a damaged file once."""
        for attempt in (1, 2):
            self._connect()
            try:
                self._prepare()
                return
            except sqlite3.Error as exc:
                self.db.close()
                if damaged(exc) and self._looks_like_sqlite() and attempt == 1:
                    self._salvage(str(exc))
                    continue
                if damaged(exc):
                    raise BufferFormatError(
                        f"{self.path} is not a usable SQLite database ({exc}); expected an edgepack telemetry buffer"
                    ) from exc
                raise storage_error(exc, self.path, "opening") from exc
            except _Damaged as exc:
                self.db.close()
                if attempt == 2:
                    raise BufferDamagedError(f"telemetry buffer {self.path} is still damaged after salvage: {exc}") from exc
                self._salvage(str(exc))
            except BaseException:
                self.db.close()
                raise

    def _looks_like_sqlite(self) -> bool:
        try:
            with open(self.path, "rb") as file:
                return file.read(len(SQLITE_HEADER)) == SQLITE_HEADER
        except OSError:
            return False

    def _prepare(self) -> None:
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
        db.execute(f"PRAGMA synchronous = {self._synchronous}")
        db.execute("PRAGMA foreign_keys = ON")  # a record never points at a missing context
        # Truncate the WAL after checkpoints so a burst does not leave a large file behind.
        db.execute("PRAGMA journal_size_limit = 4194304")
        if tables:
            check = [row[0] for row in db.execute("PRAGMA quick_check(5)").fetchall()]
            if check != ["ok"]:
                raise _Damaged("; ".join(check))
        conn = db.conn
        if not tables:
            with db.atomic():
                create(conn)
        elif version < SCHEMA_VERSION:
            with db.atomic():
                done = migrate(conn, version)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            log.warning(
                "upgraded telemetry buffer %s from schema %d to %d: %d pending record(s) kept, %d unreadable "
                "moved to the dead-letter table", self.path, version, SCHEMA_VERSION, done["records"], done["dead_lettered"],
            )
        self._check_ledger(conn)

    def _check_ledger(self, conn: sqlite3.Connection) -> None:
        """Compare the file's totals with the ledger's; count what a lost WAL took."""
        kept = self.ledger.read()
        with self.db.atomic():
            values = dict(conn.execute(_LEDGER_SELECT).fetchall())
            if kept is not None and any(kept[name] > values.get(name, 0) for name in LEDGER_COUNTERS):
                pending = conn.execute("SELECT count(*) FROM records").fetchone()[0]
                expected = kept["recorded"] - sum(kept[name] for name in LEDGER_COUNTERS if name != "recorded")
                lost = max(0, expected - pending)
                behind = kept["recorded"] - values.get("recorded", 0)
                values = dict(kept)
                values["lost"] += lost
                conn.executemany("UPDATE counters SET value = ? WHERE name = ?", [(v, k) for k, v in values.items()])
                self.lost_at_open = lost
                log.error(
                    "telemetry buffer %s is behind its ledger %s: %d recorded record(s) and their commits are "
                    "missing (a lost or damaged -wal file?); %d pending record(s) lost, counted as 'lost' and "
                    "reported to the collector", self.path, self.ledger.path, behind, lost,
                )
        self.ledger.write(values, sync=True)

    def _salvage(self, why: str) -> None:
        log.error("telemetry buffer %s is damaged (%s); salvaging it", self.path, why)
        self.salvages.append(salvage(self.path, self.ledger.read()))
        self.ledger.write(self.salvages[-1].counters, sync=True)

    def _recover(self) -> None:
        """After a damage error: salvage the file (unless another process already did), reopen."""
        with self._lock.held():
            try:
                self.db.close()
            except sqlite3.Error:
                pass
            try:
                current = os.stat(self.path).st_ino
            except FileNotFoundError:
                current = None
            if current == self._inode:
                self._salvage("a statement found it malformed")
            self._open()

    # -- transactions -----------------------------------------------------------------------

    @contextmanager
    def _transaction(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """A write transaction under the cross-process lock, mirrored to the ledger.

        ``durable=False`` commits without waiting for the disk (``synchronous=NORMAL`` for
        that commit: still atomic and never corrupt, but the last such commits may be
        undone by a power cut). Used for what the sync service writes: losing a hold, a
        delete or a dead-letter move only means a batch is sent again, and the collector
        stores each record once. The next durable commit makes them durable as well.
        """
        conn = self.db.conn
        try:
            with self._lock.held():
                if os.stat(self.path).st_ino != self._inode:
                    raise _Replaced(f"{self.path} was salvaged by another process")
                relax = not durable and self._synchronous != "NORMAL"
                if relax:
                    conn.execute("PRAGMA synchronous = NORMAL")
                try:
                    with self.db.atomic():
                        yield conn
                        values = dict(conn.execute(_LEDGER_SELECT).fetchall())
                finally:
                    if relax:
                        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
                # After the commit, never before: the ledger must not run ahead of the file.
                self.ledger.write(values, sync=durable and self._synchronous == "FULL")
        except BufferDamagedError:
            raise
        except (sqlite3.Error, OSError) as exc:
            raise storage_error(exc, self.path, "writing") from exc

    def _read(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except sqlite3.Error as exc:
            raise storage_error(exc, self.path, "reading") from exc

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

    @_recovering
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
                generation = self.generation
                for context in {id(row[2]): row[2] for row in rows if row[2].generation != generation}.values():
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
                context.generation = -1
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
        context.generation = self.generation

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

    @_recovering
    def hold(self, upto: int, seconds: float) -> None:
        """Keep rows up to ``upto`` from ``drop_oldest`` for ``seconds`` (a batch in flight).

        Stored in the file, so a sync in another process protects its batch from the
        recording app too; a crash leaves a hold that simply expires.
        """
        until = int((time.time() + seconds) * 1000) if upto else 0
        with self._transaction(durable=False) as conn:
            conn.executemany("UPDATE counters SET value = ? WHERE name = ?", [(upto, "held_upto"), (until, "held_until_ms")])

    @_recovering
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
                        names[r[6]] = unpack_names(r[6])
                    except PayloadError:
                        names[r[6]] = ()  # unreadable: its records fail to unpack and are dead-lettered
                out.append(StoredRecord(r[0], r[1], r[2], r[3] or "", r[4] or "", r[5] or "", names[r[6]], r[7]))
            return out
        except sqlite3.Error as exc:
            raise storage_error(exc, self.path, "reading") from exc

    @_recovering
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

    @_recovering
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

    @_recovering
    def counters(self, *, pending: bool = True) -> dict[str, int]:
        """Every persistent counter, plus ``pending`` (rows waiting to be sent) unless
        ``pending=False`` (counting rows scans the table: milliseconds for a big backlog)."""
        try:
            values = dict(self.db.execute("SELECT name, value FROM counters").fetchall())
            if pending:
                values["pending"] = self.db.execute("SELECT count(*) FROM records").fetchone()[0]
        except sqlite3.Error as exc:
            raise storage_error(exc, self.path, "reading") from exc
        return {name: int(values.get(name, 0)) for name in (*COUNTERS, *(("pending",) if pending else ()))}

    def close(self) -> None:
        """Close the connection (under the write lock: closing may checkpoint the WAL)."""
        try:
            with self._lock.held():
                self.db.close()
        finally:
            self.ledger.close()
            self._lock.close()
