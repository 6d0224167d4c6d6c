"""The export's bookkeeping in the home database, on SQLite or PostgreSQL alike.

A record belongs to at most one export run: ``records.export_run`` is NULL until a run
claims it, and the claim commits in the same transaction that writes the run into
``export_runs``. The run's files are then written (each under a name fixed by the run and
the partition, through a temporary file and a rename), and only then is the run marked
finished. A run found unfinished (the export was killed) is written again from the same
claimed records under the same names, which replaces whatever it had written: so every
record ends up in exactly one file, however often the export dies.

Claiming by marking, rather than by a timestamp or sequence watermark, is what makes this
exact on PostgreSQL with several collectors: their transactions commit in any order, so a
record with an older ``received_at`` (or a lower sequence number) may become visible after
a watermark has passed it; a NULL mark is there until someone claims it. The runs table
is the watermark: its finished runs are what has been exported.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ExportError, StoreError
from ..stores.sqlite import write_transaction
from ..stores.write_lock import close

COLUMNS = ("device", "id", "batch_id", "received_at", "ts", "model", "version", "bundle_sha256", "inputs", "outputs", "flags")


@dataclass(frozen=True, kw_only=True)
class Run:
    """One claimed set of records."""

    run: int
    """Its number, part of every file name it writes."""

    records: int
    """How many records it claimed."""


class ExportDatabase:
    """A connection to the home database for exporting and retention (not the collector's)."""

    def __init__(self, db: str) -> None:
        from ..stores.postgres import is_postgres_url

        self.db = db
        self.postgres = is_postgres_url(db)
        self._lock_file: int | None = None
        try:
            # Opening the store applies pending migrations, export_runs among them.
            if self.postgres:
                import psycopg

                from ..stores.postgres import PostgresStore, translated

                PostgresStore(db, pool_size=1).close()
                with translated("opening the database for export", db):
                    self.conn: Any = psycopg.connect(db)
                    # One export at a time per database: a second would claim nothing new
                    # but could finish a run the first is still writing.
                    if not self.conn.execute("SELECT pg_try_advisory_lock(%s)", (_EXPORT_LOCK,)).fetchone()[0]:
                        self.conn.close()
                        raise ExportError(f"another export is running on {self.where}; wait for it to finish")
                    self.conn.commit()
            else:
                from ..stores.sqlite import Store

                path = Path(db)
                if not path.exists():
                    raise ExportError(f"--db {db}: no such SQLite file; expected the collector's database")
                Store(path).close()
                self._lock_file = os.open(f"{path}-export-lock", os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(self._lock_file)
                    raise ExportError(f"another export is running on {db}; wait for it to finish") from None
                self.conn = sqlite3.connect(path, isolation_level=None, timeout=30.0)
                self.conn.execute("PRAGMA busy_timeout=30000")
        except StoreError as exc:
            raise ExportError(str(exc)) from exc

    @property
    def where(self) -> str:
        from ..stores.postgres import redacted

        return redacted(self.db) if self.postgres else self.db

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.postgres else sql

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        return self.conn.execute(self._sql(sql), params)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction (on SQLite it takes the write lock up front, as the collector does)."""
        try:
            if self.postgres:
                with self.conn.transaction():
                    yield
            else:
                with write_transaction(self.conn):
                    yield
        except ExportError:
            raise
        except Exception as exc:
            if _is_database_error(exc):
                raise ExportError(f"the database {self.where} failed: {exc}") from exc
            raise

    def unfinished(self) -> list[Run]:
        """Runs that claimed records but did not finish (the export was killed)."""
        with self.transaction():
            rows = self.execute("SELECT run, records FROM export_runs WHERE finished_at IS NULL ORDER BY run").fetchall()
        return [Run(run=run, records=records) for run, records in rows]

    def last_destination(self) -> str | None:
        with self.transaction():
            row = self.execute("SELECT destination FROM export_runs ORDER BY run DESC LIMIT 1").fetchone()
        return row[0] if row else None

    def claim(self, destination: str, limit: int) -> Run | None:
        """Mark up to ``limit`` records not yet exported as the next run's; None when there are none."""
        with self.transaction():
            run = self.execute("SELECT COALESCE(MAX(run), 0) + 1 FROM export_runs").fetchone()[0]
            claimed = self.execute(
                "UPDATE records SET export_run = ? WHERE (device, id) IN "
                "(SELECT device, id FROM records WHERE export_run IS NULL LIMIT ?)",
                (run, limit),
            ).rowcount
            if not claimed:
                return None
            self.execute(
                "INSERT INTO export_runs (run, destination, started_at, finished_at, records) VALUES (?, ?, ?, NULL, ?)",
                (run, destination, time.time(), claimed),
            )
        return Run(run=run, records=claimed)

    def rows(self, run: int) -> list[tuple[Any, ...]]:
        """The records of ``run``, in partition order."""
        with self.transaction():
            return self.execute(
                f"SELECT {', '.join(COLUMNS)} FROM records WHERE export_run = ? ORDER BY model, version, ts, device, id",
                (run,),
            ).fetchall()

    def finish(self, run: int) -> None:
        with self.transaction():
            self.execute("UPDATE export_runs SET finished_at = ? WHERE run = ?", (time.time(), run))

    def manifests(self) -> dict[tuple[str, str], dict[str, Any]]:
        """The newest bundle manifest per (model, version), when the ``bundles`` table exists."""
        import json

        with self.transaction():
            if self.postgres:
                present = self.execute("SELECT to_regclass('bundles')").fetchone()[0] is not None
            else:
                present = self.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'bundles'").fetchone()
            if not present:
                return {}
            rows = self.execute("SELECT model, version, manifest FROM bundles ORDER BY received_at").fetchall()
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for model, version, manifest in rows:
            try:
                found[(str(model), str(version))] = json.loads(manifest)
            except (TypeError, ValueError):
                continue  # a manifest that is not JSON types nothing; the export keeps JSON text
        return found

    def delete_exported(self, older_than: float, *, chunk: int = 10_000) -> int:
        """Delete records received before ``older_than`` (unix seconds) that a finished run
        exported; records not exported yet are kept whatever their age."""
        deleted = 0
        while True:
            with self.transaction():
                count = self.execute(
                    "DELETE FROM records WHERE (device, id) IN (SELECT device, id FROM records WHERE received_at < ? "
                    "AND export_run IN (SELECT run FROM export_runs WHERE finished_at IS NOT NULL) LIMIT ?)",
                    (older_than, chunk),
                ).rowcount
            deleted += count
            if count < chunk:
                return deleted

    def close(self) -> None:
        try:
            if self.postgres:
                self.conn.close()  # also releases the session's advisory lock
            else:
                close(self.conn)
        finally:
            if self._lock_file is not None:
                os.close(self._lock_file)
                self._lock_file = None

    def __enter__(self) -> ExportDatabase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_EXPORT_LOCK = 0x65646765_6578706F
"""Advisory lock key held by a running export on PostgreSQL ("edgeexpo")."""


def _is_database_error(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.Error):
        return True
    try:
        import psycopg
    except ImportError:
        return False
    return isinstance(exc, psycopg.Error)
