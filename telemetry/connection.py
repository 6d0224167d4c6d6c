"""An open, checked buffer file: how it is opened, upgraded, salvaged, and written.

Opening a file checks, in this order: that it is a SQLite file and an edgepack buffer
(else ``BufferFormatError``, and the file is left alone), that the disk has room (a
full disk is ``DiskFullError``, never "not a database"), that its schema is not newer
than this code (older ones are upgraded, ``telemetry.migration``), that its pages are
sound (``PRAGMA quick_check``; a damaged file is salvaged, ``telemetry.recovery``), and
that no acknowledged commit went missing with the WAL (``telemetry.ledger``). Later, the
first statement that finds a damaged page triggers the same salvage, and the operation
is retried once on the fresh file (``recovering``).

Data files (the database, its -wal and -shm, which SQLite creates with the database's
mode, the -lock and the -ledger) are created owner-only (0600): they hold the
application's inputs.

SQLite errors are translated into ``telemetry.errors`` by ``telemetry.diagnosis``.
"""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from .diagnosis import damaged, disk_full, storage_error
from .errors import BufferDamagedError, BufferFormatError, StorageError
from .ledger import Ledger
from .lock import WriteLock
from .migration import migrate
from .recovery import Salvage, salvage
from .schema import APPLICATION_ID, IDENTITY, LEDGER_COUNTERS, SCHEMA_VERSION, SQLITE_HEADER, create, new_identity

log = logging.getLogger("telemetry.buffer")
T = TypeVar("T")


def _import_sqlite_utils() -> ModuleType:
    # sqlite-utils imports pandas and numpy at import time when they are installed, for
    # its optional support of their values, which the buffer never hands it. pandas costs
    # 0.45 s and 140 MB; numpy 40-90 ms, 13 MB and an OpenBLAS thread, which a process
    # that only syncs (``edgepack sync``) would otherwise pay. A None entry in sys.modules
    # makes such an import fail fast, and sqlite-utils runs without that support. Only
    # done for a module not loaded already (masking it then would gain nothing), and
    # undone right after, so the application (or the runtime) can still import it.
    if "sqlite_utils" in sys.modules:
        import sqlite_utils

        return sqlite_utils
    masked = [name for name in ("pandas", "numpy") if name not in sys.modules]
    for name in masked:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        import sqlite_utils
    finally:
        for name in masked:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]
    return sqlite_utils


sqlite_utils = _import_sqlite_utils()


_LEDGER_SELECT = f"SELECT name, value FROM counters WHERE name IN ({', '.join(repr(n) for n in LEDGER_COUNTERS)})"


def recovering(method: Callable[..., T]) -> Callable[..., T]:
    """Run ``method``; if it finds the file damaged (or replaced by another process's
    salvage), salvage or reopen, then run it once more on the fresh file."""

    @functools.wraps(method)
    def wrapper(self: Connection, *args: Any, **kwargs: Any) -> T:
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


class Connection:
    """One SQLite connection to a buffer file, opened with every check above."""

    def __init__(self, path: Path, *, synchronous: str, busy_timeout: float, create: bool) -> None:
        self.path = path
        self._synchronous = synchronous
        self._busy_timeout = busy_timeout
        self.salvages: list[Salvage] = []
        """Damaged files this store moved aside and salvaged (for logs and tests)."""
        self.lost_at_open = 0
        """Records found missing at open (a lost WAL), added to ``lost``."""
        self.generation = 0
        self._state: tuple[int, ...] | None = None
        """The counters as the last ``Store.insert`` left them (None: read them)."""
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
        self._state = None

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
        """Compare the file's totals with the ledger's; count what a lost WAL took.

        The ledger is compared only if it belongs to this file: same identity, or one not
        known (a version-1 ledger, or a file from before identities, or one whose
        identity did not reach the main file yet). A ledger of another file (the buffer
        was deleted to start afresh, the ledger left behind) is rewritten, nothing lost.
        That cannot hide a lost WAL: a file's identity is in the main file (checkpointed)
        before any ledger records it, so losing the WAL never changes it."""
        kept = self.ledger.read()
        row = conn.execute("SELECT value FROM counters WHERE name = ?", (IDENTITY,)).fetchone()
        identity = None if row is None else int(row[0])
        if kept is not None and kept[0] != 0 and identity is not None and kept[0] != identity:
            log.warning(
                "ledger %s belongs to another buffer file (identity %x, this file %s has %x): the buffer was "
                "replaced or deleted on purpose; the ledger is rewritten for it and nothing is counted as lost",
                self.ledger.path, kept[0], self.path, identity,
            )
            kept = None
        with self.db.atomic():
            if identity is None:
                # A file from before identities (or whose first one went with a lost WAL).
                identity = new_identity()
                conn.execute("INSERT INTO counters (name, value) VALUES (?, ?)", (IDENTITY, identity))
            values = dict(conn.execute(_LEDGER_SELECT).fetchall())
            if kept is not None and any(kept[1][name] > values.get(name, 0) for name in LEDGER_COUNTERS):
                pending = conn.execute("SELECT coalesce(sum(count - gone), 0) FROM chunks").fetchone()[0]
                expected = kept[1]["recorded"] - sum(kept[1][name] for name in LEDGER_COUNTERS if name != "recorded")
                lost = max(0, expected - pending)
                behind = kept[1]["recorded"] - values.get("recorded", 0)
                values = dict(kept[1])
                values["lost"] += lost
                conn.executemany("UPDATE counters SET value = ? WHERE name = ?", [(v, k) for k, v in values.items()])
                self.lost_at_open = lost
                # At least this many: a record inserted and delivered after the last
                # checkpoint is not lost, and cannot be told from one only inserted.
                log.log(
                    logging.ERROR if lost else logging.WARNING,
                    "telemetry buffer %s is behind its ledger %s: %d recorded record(s) and their commits are "
                    "missing (a lost or damaged -wal file?); %d pending record(s) lost, counted as 'lost' and "
                    "reported to the collector", self.path, self.ledger.path, behind, lost,
                )
        if kept is None or kept[0] != identity:
            # The ledger may name this file only once the identity is in the main file:
            # a new file's schema and identity live in the -wal until a checkpoint, and a
            # ledger naming an identity the WAL took would make a lost WAL look like a
            # deleted buffer. A checkpoint a reader blocks leaves it unknown (0, which is
            # compared with any file) until a later open.
            busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            self.ledger.identity = 0 if busy else identity
        else:
            self.ledger.identity = identity
        self.ledger.write(values, sync=True, force=True)

    def _salvage(self, why: str) -> None:
        log.error("telemetry buffer %s is damaged (%s); salvaging it", self.path, why)
        kept = self.ledger.read()
        self.salvages.append(salvage(self.path, None if kept is None else kept[1]))
        self.ledger.identity = 0  # the fresh file's identity is set at the check that follows
        self.ledger.write(self.salvages[-1].counters, sync=True, force=True)

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
    def _transaction(self, *, durable: bool = True, totals: dict[str, int] | None = None) -> Iterator[sqlite3.Connection]:
        """A write transaction under the cross-process lock, mirrored to the ledger.

        ``durable=False`` commits without waiting for the disk (``synchronous=NORMAL`` for
        that commit: still atomic and never corrupt, but the last such commits may be
        undone by a power cut). Used for what the sync service writes: losing a hold, a
        delete or a dead-letter move only means a batch is sent again, and the collector
        stores each record once. The next durable commit makes them durable as well.

        ``totals``: a dict the block fills with the ledger counters as they stand at its
        end (``insert`` knows them: it read them and added its deltas), which spares the
        ledger its SELECT. Each statement gives the GIL up, and getting it back can take
        the interpreter's switch interval (5 ms) while an application thread records.
        """
        conn = self.db.conn
        self._state = None  # what ``Store.insert`` remembers is stale once anything else writes
        try:
            with self._lock.held():
                # A lock kept since the last transaction (``WriteLock.keep``) means no other
                # process can have salvaged the file since: the check then needs no stat.
                if self._lock.fresh and os.stat(self.path).st_ino != self._inode:
                    raise _Replaced(f"{self.path} was salvaged by another process")
                relax = not durable and self._synchronous != "NORMAL"
                if relax:
                    conn.execute("PRAGMA synchronous = NORMAL")
                try:
                    with self.db.atomic():
                        yield conn
                        values = totals if totals else dict(conn.execute(_LEDGER_SELECT).fetchall())
                finally:
                    if relax:
                        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
                # After the commit, never before: the ledger must not run ahead of the file.
                self.ledger.write(values, sync=durable and self._synchronous == "FULL")
        except BufferDamagedError:
            raise
        except (sqlite3.Error, OSError) as exc:
            raise storage_error(exc, self.path, "writing") from exc

    def keep_lock(self) -> None:
        """Keep the cross-process lock after the next transaction (the writer commits
        again at once): the next one then starts without the lock's system calls, the
        replacement check's ``stat`` and (``Store.insert``) reading the counters."""
        self._lock.keep()

    def release_lock(self) -> None:
        """Give a kept lock up (``keep_lock``)."""
        self._lock.release()

    def close(self) -> None:
        """Close the connection (under the write lock: closing may checkpoint the WAL)."""
        try:
            with self._lock.held():
                self.db.close()
        finally:
            self.ledger.close()
            self._lock.close()
