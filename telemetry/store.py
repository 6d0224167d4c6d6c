"""What the buffer and the sync service do with the file: insert, read, hold, delete, dead-letter.

Only the buffer's writer thread touches a ``Store`` (one connection per buffer); the
sync service, in the same or another process, has its own. Records are stored in chunks
(``telemetry.chunks``): one row per commit group of one context. How the file is
opened, checked and salvaged is in ``telemetry.connection``; how writers in two
processes serialise in ``telemetry.lock``; the tables in ``telemetry.schema``.

Granularity. Everything the application and the collector see stays per record: ids,
row ids, counters, acknowledgements, dead letters. What works per chunk: ``drop_oldest``
gives up whole chunks (the oldest commit groups not in flight), and the bytes of a
partly delivered chunk are freed in proportion to the records gone from it.
"""

from __future__ import annotations

import bisect
import functools
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import chunks, crashpoint
from .connection import Connection, recovering
from .diagnosis import storage_error
from .encoding import PayloadError, unpack_names
from .errors import StorageError
from .rows import ROW_OVERHEAD, Context, PackedRecord, Run, StoredRecord
from .schema import APPLICATION_ID, COUNTERS, LEDGER_COUNTERS, SCHEMA_VERSION, SEQUENCE

__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "Store", "StoredRecord"]

_INSERT = "INSERT INTO chunks (id, context, count, ids, ts, payload, size) VALUES "
_STATE_NAMES = ("stored_bytes", "refusing", SEQUENCE, *LEDGER_COUNTERS)
_STATE_SELECT = (
    "SELECT " + ", ".join(f"max(CASE name WHEN '{name}' THEN value END)" for name in _STATE_NAMES)
    + " FROM counters WHERE name IN (" + ", ".join(f"'{name}'" for name in _STATE_NAMES) + ")"
)


@functools.lru_cache(maxsize=64)
def _insert_rows(count: int) -> str:
    """The INSERT of ``count`` chunk rows in one statement."""
    return _INSERT + ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * count)

_DECODED_KEPT = 8
"""Chunks kept decoded between reads: the sync service reads a chunk again for each
batch that ends inside it (and once more to read ahead)."""


class Store(Connection):
    """A buffer file and the operations on it."""

    def __init__(self, path: Path, *, synchronous: str, busy_timeout: float, create: bool) -> None:
        self._decoded: dict[tuple[int, int, bool], Any] = {}
        """Recently decoded (or split, ``packed``) chunks by (chunk id, file generation,
        packed); chunks never change content once written, and ids are never reused."""
        super().__init__(path, synchronous=synchronous, busy_timeout=busy_timeout, create=create)

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
        runs: Sequence[Run],
        *,
        accepted: int,
        sampled_out: int,
        lost: int,
        max_bytes: int | None,
        drop_oldest: bool,
    ) -> None:
        """Store ``runs`` (one chunk each) in one transaction and account for everything else.

        ``accepted`` counts every ``record()`` call this group stands for, ``sampled_out``
        those skipped by sampling, ``lost`` those refused earlier because the in-memory
        queue was full. With ``max_bytes``, either the oldest chunks make room
        (``drop_oldest``) or records that do not fit are not stored; both are counted as
        dropped.
        """
        resolved: list[Context] = []
        totals: dict[str, int] = {}
        remembered = self._state
        after: dict[str, Any] = {}
        try:
            with self._transaction(totals=totals) as conn:
                dropped = lost
                changes: dict[str, int] = {}
                if remembered is not None and not self._lock.fresh:
                    # The lock was kept since the last insert and nothing else wrote in
                    # between (every other transaction forgets this): its totals are current.
                    state = dict(zip(_STATE_NAMES, remembered))
                else:
                    # Everything this commit reads, as one row (one statement: see ``_transaction``).
                    state = dict(zip(_STATE_NAMES, conn.execute(_STATE_SELECT).fetchone()))
                stored = before = state["stored_bytes"] or 0
                if max_bytes is not None and not drop_oldest:
                    # Once a record did not fit, newer ones are refused until a delivery makes
                    # room, so what is kept is always the oldest records, without holes.
                    was_refusing = refusing = state["refusing"] or 0
                    kept: list[Run] = []
                    for run in runs:
                        if not refusing and stored + run.size <= max_bytes:
                            kept.append(run)
                            stored += run.size
                            continue
                        fit = size = 0
                        if not refusing:
                            for payload in run.payloads:
                                if stored + size + len(payload) + ROW_OVERHEAD > max_bytes:
                                    break
                                size += len(payload) + ROW_OVERHEAD
                                fit += 1
                        if fit:
                            part = Run(run.context)
                            part.ids, part.ts, part.payloads, part.size = run.ids[:fit], run.ts[:fit], run.payloads[:fit], size
                            kept.append(part)
                            stored += size
                        dropped += len(run.ids) - fit
                        refusing = 1
                    runs = kept
                    changes["refusing"] = refusing - was_refusing  # with the counters, one statement
                generation = self.generation
                for context in {id(run.context): run.context for run in runs if run.context.generation != generation}.values():
                    self._resolve(conn, context)
                    resolved.append(context)
                sequence = state.get(SEQUENCE) or 1
                params: list[Any] = []
                for run in runs:
                    count = len(run.ids)
                    params += (
                        sequence, run.context.id, count, "".join(run.ids), chunks.encode_ts(run.ts),
                        chunks.encode_payload(run.payloads), run.size,
                    )
                    sequence += count
                if runs:
                    # All the chunks in one statement (a commit takes up to CHUNKS_PER_COMMIT).
                    conn.execute(_insert_rows(len(runs)), params)
                added = sum(run.size for run in runs)
                freed = 0
                if max_bytes is not None and drop_oldest and before + added > max_bytes:
                    count, freed = self._drop_oldest(conn, before + added - max_bytes)
                    dropped += count
                deltas = {
                    "recorded": accepted, "sampled_out": sampled_out, "dropped": dropped,
                    "stored_bytes": added - freed, SEQUENCE: sequence - (state.get(SEQUENCE) or 1), **changes,
                }
                self._add(conn, deltas)
                # The ledger's totals as they stand now: we hold the write lock, so nobody
                # else changed them since the read above. A counter the file lacks stays 0.
                after = {name: None if state[name] is None else state[name] + deltas.get(name, 0) for name in _STATE_NAMES}
                totals.update({name: after[name] or 0 for name in LEDGER_COUNTERS})
        except StorageError:
            # The transaction rolled back: context rows it created are gone again.
            for context in resolved:
                context.id = None
                context.generation = -1
            raise
        self._state = tuple(after[name] for name in _STATE_NAMES)  # committed: the next insert may start from it

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
        # Whole chunks, oldest first. Those of a batch in flight are skipped (a chunk
        # holding a held record is held whole): they are about to be delivered, and
        # dropping them would count them as lost although the collector gets them.
        held = dict(conn.execute("SELECT name, value FROM counters WHERE name IN ('held_upto', 'held_until_ms')").fetchall())
        after = held["held_upto"] if held["held_until_ms"] > time.time() * 1000 else 0
        count = freed = 0
        last = None
        for cid, records, gone, size in conn.execute("SELECT id, count, gone, size FROM chunks WHERE id > ? ORDER BY id", (after,)):
            count += records - gone
            freed += size
            last = cid
            if freed >= excess:
                break
        if last is not None:
            conn.execute("DELETE FROM chunks WHERE id > ? AND id <= ?", (after, last))
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
    def oldest(self, limit: int, after: int = 0, *, packed: bool = False) -> list[Any]:
        """The ``limit`` oldest pending records with a row id above ``after``, oldest first:
        ``StoredRecord``s, or with ``packed`` ``PackedRecord``s (payloads not decoded)."""
        out: list[Any] = []
        kind = PackedRecord if packed else StoredRecord
        if limit <= 0:
            return out
        try:
            start = self.db.execute("SELECT coalesce(max(id), 0) FROM chunks WHERE id <= ?", (after,)).fetchone()[0]
            cursor = self.db.execute(
                "SELECT c.id, c.count, c.gone, c.ids, c.ts, c.payload, x.model, x.version, x.bundle_sha256, x.input_names "
                "FROM chunks AS c LEFT JOIN contexts AS x ON x.id = c.context WHERE c.id >= ? ORDER BY c.id",
                (start,),
            )
            names: dict[bytes | None, tuple[str, ...] | None] = {}
            for cid, count, gone, ids, ts, payload, model, version, sha, blob in cursor:
                first = max(gone, after + 1 - cid)
                if first >= count:
                    continue
                if blob not in names:
                    try:
                        names[blob] = None if blob is None else unpack_names(blob)
                    except PayloadError:
                        names[blob] = None  # unreadable: its records are dead-lettered
                keys = names[blob]
                decoded = self._decode(cid, count, ids, ts, payload, packed)
                take = min(count, first + limit - len(out))
                if decoded is None or keys is None:
                    uuids = chunks.split_ids(ids)
                    for i in range(first, take):
                        out.append(kind(cid + i, uuids[i] if i < len(uuids) else f"unreadable-{cid + i}", 0.0,
                                        model or "", version or "", sha or "", (), None))
                elif packed:
                    # The values are not decoded: a record whose count of values disagrees
                    # with its names is found when the collector refuses it (telemetry.delivery).
                    uuids, stamps, records = decoded
                    model, version, sha = model or "", version or "", sha or ""
                    out.extend([PackedRecord(cid + i, uuids[i], stamps[i], model, version, sha, keys, records[i])
                                for i in range(first, take)])
                else:
                    uuids, stamps, records = decoded
                    model, version, sha = model or "", version or "", sha or ""
                    for i in range(first, take):
                        record = records[i]
                        out.append(StoredRecord(cid + i, uuids[i], stamps[i], model, version, sha, keys,
                                                record if len(record[0]) == len(keys) else None))
                if len(out) >= limit:
                    break
            cursor.close()
            return out
        except sqlite3.Error as exc:
            raise storage_error(exc, self.path, "reading") from exc

    def _decode(self, cid: int, count: int, ids: Any, ts: Any, payload: Any, packed: bool) -> tuple[list[str], tuple[float, ...], list[Any]] | None:
        # A batch may end inside a chunk: the next one reads the same chunk again.
        cache = self._decoded
        key = (cid, self.generation, packed)
        if key in cache:
            return cache[key]
        try:
            decoded = (chunks.split if packed else chunks.decode)(count, ids, ts, payload)
        except PayloadError:
            decoded = None
        if len(cache) >= _DECODED_KEPT:
            cache.pop(next(iter(cache)))
        cache[key] = decoded
        return decoded

    def _advance(self, conn: sqlite3.Connection, rowids: Sequence[int], *, content: bool) -> tuple[list[tuple[Any, ...]], int, int]:
        """Mark the records ``rowids`` gone from their chunks (deleting chunks left empty).

        Only records next in line in their chunk move (a record acknowledged out of
        order is sent again later); returns the ranges moved ``(chunk id, start, end,
        context, ids, ts, payload)`` (the last four only with ``content``), how many
        records moved, and the bytes freed."""
        wanted = sorted({int(rowid) for rowid in rowids})
        if not wanted:
            return [], 0, 0
        columns = "id, count, gone, size" + (", context, ids, ts, payload" if content else "")
        rows = conn.execute(
            f"SELECT {columns} FROM chunks WHERE id >= (SELECT coalesce(max(id), 0) FROM chunks WHERE id <= ?) "
            "AND id <= ? ORDER BY id", (wanted[0], wanted[-1]),
        ).fetchall()
        moved: list[tuple[Any, ...]] = []
        total = freed = 0
        deletes = []
        updates = []
        for row in rows:
            cid, count, gone, size = row[:4]
            at = bisect.bisect_left(wanted, cid + gone)
            end = gone
            while at < len(wanted) and wanted[at] == cid + end and end < count:
                end += 1
                at += 1
            if end == gone:
                continue
            total += end - gone
            if end == count:
                deletes.append((cid,))
                freed += size
            else:
                part = size * (end - gone) // (count - gone)
                updates.append((end, size - part, cid))
                freed += part
            moved.append((cid, gone, end, *row[4:]))
        conn.executemany("DELETE FROM chunks WHERE id = ?", deletes)
        conn.executemany("UPDATE chunks SET gone = ?, size = ? WHERE id = ?", updates)
        return moved, total, freed

    @recovering
    def delete(self, rowids: Sequence[int], *, keep_hold: bool = False) -> int:
        """Mark delivered records gone in one transaction; returns how many were still there.

        Records already gone (dropped by ``max_bytes`` while their batch was in flight, or
        acknowledged by a concurrent sync) are not counted again: every record is counted
        exactly once, by the way it left the table.
        """
        with self._transaction(durable=False) as conn:
            _, count, freed = self._advance(conn, rowids, content=False)
            self._add(conn, {"delivered": count, "stored_bytes": -freed})
            self._settle(conn, count, keep_hold=keep_hold)
            crashpoint.reach("during_delete")
        return int(count)

    @recovering
    def dead_letter(self, rowids: Sequence[int], *, batch_id: str, status: int, reason: str, keep_bytes: int | None) -> int:
        """Move records to ``dead_letters``, one row each (kept for inspection, never
        resent); returns how many moved.

        A record of an unreadable chunk keeps its id when it can be read; the chunk's raw
        payload goes with the first of its records. With ``keep_bytes``, the oldest dead
        letters beyond it are discarded (they stay counted in ``dead_lettered``): a
        collector refusing everything cannot fill the disk.
        """
        with self._transaction(durable=False) as conn:
            moved, count, freed = self._advance(conn, rowids, content=True)
            letters = []
            for cid, start, end, context, ids, ts, payload in moved:
                count_in_chunk = len(ids) // chunks.ID_LENGTH if isinstance(ids, str) else 0
                try:
                    uuids, stamps, records = chunks.decode(count_in_chunk, ids, ts, payload)
                    blobs = [chunks.repack(records[i]) for i in range(start, end)]
                except (PayloadError, IndexError):
                    uuids = chunks.split_ids(ids)
                    stamps = ()
                    raw = payload if isinstance(payload, bytes) else b""
                    blobs = [raw if i == start else b"" for i in range(start, end)]
                for i, blob in zip(range(start, end), blobs):
                    letters.append((
                        uuids[i] if i < len(uuids) else f"unreadable-{cid + i}", stamps[i] if i < len(stamps) else 0.0,
                        context, blob, len(blob) + ROW_OVERHEAD, batch_id, status, reason,
                    ))
            conn.executemany(
                "INSERT INTO dead_letters (uuid, ts, context, payload, size, batch_id, status, reason) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", letters,
            )
            self._add(conn, {"dead_lettered": count, "stored_bytes": -freed})
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
        """Every persistent counter, plus ``pending`` (records waiting to be sent) unless
        ``pending=False`` (summing the chunks reads the table: cheap, one row per chunk)."""
        try:
            values = dict(self.db.execute("SELECT name, value FROM counters").fetchall())
            if pending:
                values["pending"] = self.db.execute("SELECT coalesce(sum(count - gone), 0) FROM chunks").fetchone()[0]
        except sqlite3.Error as exc:
            raise storage_error(exc, self.path, "reading") from exc
        return {name: int(values.get(name, 0)) for name in (*COUNTERS, *(("pending",) if pending else ()))}
