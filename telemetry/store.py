"""What the buffer and the sync service do with the file: insert, read, hold, delete, dead-letter.

Only the buffer's writer thread touches a ``Store`` (one connection per buffer); the
sync service, in the same or another process, has its own. How the file is opened,
checked and salvaged is in ``telemetry.connection``; how writers in two processes
serialise in ``telemetry.lock``; the tables in ``telemetry.schema``.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import time
from collections.abc import Sequence

from . import crashpoint
from .connection import Connection, recovering
from .diagnosis import storage_error
from .encoding import PayloadError, unpack_names
from .errors import StorageError
from .rows import Context, Row, StoredRecord
from .schema import APPLICATION_ID, COUNTERS, SCHEMA_VERSION

__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "Store", "StoredRecord"]


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


class Store(Connection):
    """A buffer file and the operations on it."""

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

    @recovering
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

    @recovering
    def hold(self, upto: int, seconds: float) -> None:
        """Keep rows up to ``upto`` from ``drop_oldest`` for ``seconds`` (a batch in flight).

        Stored in the file, so a sync in another process protects its batch from the
        recording app too; a crash leaves a hold that simply expires.
        """
        until = int((time.time() + seconds) * 1000) if upto else 0
        with self._transaction(durable=False) as conn:
            conn.executemany("UPDATE counters SET value = ? WHERE name = ?", [(upto, "held_upto"), (until, "held_until_ms")])

    @recovering
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

    @recovering
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

    @recovering
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

    @recovering
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
