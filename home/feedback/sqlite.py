"""Labels in the collector's SQLite file (the rules are ``home.feedback.labels``'s).

A batch is judged and written inside one ``BEGIN IMMEDIATE`` transaction: the write lock
is held from the first read of ``feedback`` to the commit, so no other writer (another
process on the same file) can store a label for the same key in between, and the label
read is the label that stays.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import sqlite_utils

from ..errors import StoreError
from .labels import FeedbackOutcome, Key, LabelIn, check_source, judge
from ..stores.migrations import migrate_sqlite
from ..stores.sqlite import _owner_only, _translated, write_transaction
from ..stores.write_lock import close


class FeedbackStore:
    """The ``feedback`` table of a collector's SQLite file, on one write connection (use it
    from one thread; the collector runs it on its store's writer thread)."""

    def __init__(self, path: str | Path, *, lock_timeout_seconds: float = 5.0, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.exists():
            raise StoreError(f"no collector database at {self.path} (expected the --db of 'edgepack collector')")
        with _translated(f"opening the store {self.path}", self.path):
            _owner_only(self.path)
            self.conn = sqlite3.connect(self.path, isolation_level=None)
            try:
                self.conn.execute(f"PRAGMA busy_timeout={int(lock_timeout_seconds * 1000)}")
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=FULL")
                # The versioned schema, feedback among it: a file made by an older
                # collector (or before the table was a migration) is brought up to date.
                with self._write_transaction():
                    migrate_sqlite(sqlite_utils.Database(self.conn), str(self.path))
            except BaseException:
                self.conn.close()
                raise

    def _write_transaction(self) -> Any:
        return write_transaction(self.conn)

    def ingest(self, labels: list[LabelIn], *, received_at: float, source: str) -> FeedbackOutcome:
        """Store ``labels`` in one transaction, or nothing if any conflicts or does not fit."""
        check_source(source)
        with _translated("storing feedback", self.path):
            with self._write_transaction():
                new, outcome = judge(labels, stored=self._stored, record=self._record)
                # A refused batch ends its transaction having only read.
                if new:
                    self.conn.executemany(
                        "INSERT INTO feedback (device, record_id, label, ts, received_at, source) VALUES (?, ?, ?, ?, ?, ?)",
                        [(i.device, i.record_id, i.label, i.ts, received_at, source) for i in new],
                    )
        return outcome

    def _stored(self, key: Key) -> str | None:
        row = self.conn.execute("SELECT label FROM feedback WHERE device = ? AND record_id = ?", key).fetchone()
        return None if row is None else row[0]

    def _record(self, key: Key) -> tuple[str, Any] | None:
        row = self.conn.execute("SELECT model, outputs FROM records WHERE device = ? AND id = ?", key).fetchone()
        return None if row is None else (row[0], row[1])

    def close(self) -> None:
        with _translated(f"closing the store {self.path}", self.path):
            close(self.conn)

    def __enter__(self) -> FeedbackStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
