"""Upgrading older buffer files in place, at open, keeping every pending record.

Schema 1 -> 2: payloads and input names move from ``marshal`` to MessagePack. Each old
blob is read by ``telemetry.legacy.read_marshal`` (bounded: it never allocates more than
the blob holds, unlike ``marshal.loads``), checked for the shape edgepack wrote, and
re-encoded by ``telemetry.encoding``. A record whose blob (or whose context's names)
cannot be read is moved to ``dead_letters`` with its old bytes and the reason, and
counted as ``dead_lettered``; every other record stays pending with its UUID, timestamp
and row id. The whole upgrade is one transaction: a crash or a full disk midway leaves
the file at schema 1, to be upgraded at the next open.

Schema 2 -> 3: the per-record rows become chunks (``telemetry.chunks``): runs of
consecutive row ids of one context, up to 1,000 records each, with every record's
UUID, timestamp and row id kept. Payloads are already MessagePack and are copied as
they are; each is checked first, and one that does not decode is moved to
``dead_letters`` on its own (inside a chunk it would make the whole chunk unreadable).
Upgrading a file of 100,000 pending records takes about a second, once. Same single
transaction: an interrupted upgrade leaves schema 2, upgraded at the next open.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

from . import chunks
from .encoding import pack, pack_names, payload_ok
from .legacy import LegacyFormatError, read_marshal
from .rows import ROW_OVERHEAD
from .schema import CHUNKS_TABLE, SEQUENCE

CHUNK_RECORDS = 1000
"""Most records per chunk made by the upgrade (the default ``group_size``)."""

log = logging.getLogger("telemetry.buffer")

_STEP = 2000
"""Rows read per statement while upgrading (bounds memory for a large backlog)."""


def upgrade_names(blob: bytes) -> bytes:
    """A schema 1 input-names blob as schema 2 stores it; ``LegacyFormatError`` if unreadable."""
    names = read_marshal(blob)
    if type(names) is not tuple or not all(type(name) is str for name in names):
        raise LegacyFormatError(f"input names are a {type(names).__name__}, expected a tuple of str")
    return pack_names(names)


def upgrade_payload(blob: bytes) -> bytes:
    """A schema 1 record payload as schema 2 stores it; ``LegacyFormatError`` if unreadable."""
    value: Any = read_marshal(blob)
    if type(value) is not tuple or len(value) != 3:
        raise LegacyFormatError(f"payload is a {type(value).__name__}, expected (values, outputs, flags)")
    values, outputs, flags = value
    if type(values) is not tuple or type(outputs) is not dict or type(flags) is not tuple:
        raise LegacyFormatError("payload is not (tuple of values, dict of outputs, tuple of flags)")
    return pack(values, outputs, flags)


def migrate(conn: sqlite3.Connection, version: int) -> dict[str, int]:
    """Upgrade a file at ``version`` to the current schema, inside the caller's transaction.

    Returns what was done: ``records`` upgraded, ``dead_lettered`` (unreadable)."""
    done = {"records": 0, "dead_lettered": 0}
    if version == 1:
        _from_marshal(conn, done)
    if version <= 2:
        _to_chunks(conn, done, count=version == 2)
    return done


def _to_chunks(conn: sqlite3.Connection, done: dict[str, int], *, count: bool) -> None:
    """Schema 2 to 3: the per-record rows become chunks of consecutive records of one
    context (up to ``CHUNK_RECORDS`` each), keeping every record's UUID, timestamp and row
    id; the payloads are already MessagePack, so they are copied, not re-encoded."""
    conn.execute(CHUNKS_TABLE)
    top = conn.execute(
        "SELECT max(coalesce((SELECT max(id) FROM records), 0), coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'records'), 0))"
    ).fetchone()[0]
    after = 0
    run: list[tuple[Any, ...]] = []

    def store(run: list[tuple[Any, ...]]) -> None:
        # Row ids stay what they were: a chunk's id is its first record's, so a chunk
        # holds only consecutive row ids (a gap, left by a delivered record, ends it).
        conn.execute(
            "INSERT INTO chunks (id, context, count, ids, ts, payload, size) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (run[0][0], run[0][3], len(run), "".join(r[1] for r in run), chunks.encode_ts([r[2] for r in run]),
             chunks.encode_payload([r[4] for r in run]), sum(len(r[4]) + ROW_OVERHEAD for r in run)),
        )

    while True:
        rows = conn.execute(
            "SELECT id, uuid, ts, context, payload FROM records WHERE id > ? ORDER BY id LIMIT ?", (after, _STEP)
        ).fetchall()
        if not rows:
            break
        after = rows[-1][0]
        for row in rows:
            if not payload_ok(row[4]):
                conn.execute(
                    "INSERT INTO dead_letters (uuid, ts, context, payload, size, batch_id, status, reason) "
                    "SELECT uuid, ts, context, payload, size, '', 0, 'payload unreadable in the upgrade from schema 2' "
                    "FROM records WHERE id = ?", (row[0],),
                )
                conn.execute("UPDATE counters SET value = value + 1 WHERE name = 'dead_lettered'")
                done["dead_lettered"] += 1
                log.error("record row %d of the schema 2 buffer is unreadable; moved to the dead-letter table", row[0])
                continue
            if run and (row[3] != run[0][3] or row[0] != run[-1][0] + 1 or len(run) >= CHUNK_RECORDS
                        or len(row[1]) != chunks.ID_LENGTH):
                store(run)
                run = []
            if len(row[1]) != chunks.ID_LENGTH:
                store([row])  # an id of another length cannot share the fixed-width ids column
                continue
            run.append(row)
        if count:
            done["records"] += sum(1 for row in rows if payload_ok(row[4]))
    if run:
        store(run)
    conn.execute("DROP TABLE records")
    conn.execute("INSERT OR IGNORE INTO counters (name, value) VALUES (?, 0)", (SEQUENCE,))
    conn.execute("UPDATE counters SET value = max(value, ?) WHERE name = ?", (int(top or 0) + 1, SEQUENCE))
    conn.execute("UPDATE counters SET value = (SELECT coalesce(sum(size), 0) FROM chunks) WHERE name = 'stored_bytes'")


def _from_marshal(conn: sqlite3.Connection, done: dict[str, int]) -> None:
    unreadable: dict[int, str] = {}
    contexts = conn.execute("SELECT id, model, version, bundle_sha256, input_names FROM contexts ORDER BY id").fetchall()
    seen: dict[tuple[Any, ...], int] = {}
    for cid, model, version, sha, blob in contexts:
        try:
            new = upgrade_names(blob)
        except LegacyFormatError as exc:
            unreadable[cid] = f"input names unreadable in the upgrade from schema 1: {exc}"
            continue
        key = (model, version, sha, new)
        if key in seen:
            # Two old blobs for the same names (marshal may or may not share strings):
            # one context now, as UNIQUE requires.
            conn.execute("UPDATE records SET context = ? WHERE context = ?", (seen[key], cid))
            conn.execute("UPDATE dead_letters SET context = ? WHERE context = ?", (seen[key], cid))
            conn.execute("DELETE FROM contexts WHERE id = ?", (cid,))
            continue
        seen[key] = cid
        conn.execute("UPDATE contexts SET input_names = ? WHERE id = ?", (new, cid))
    for table in ("records", "dead_letters"):
        after = 0
        while True:
            rows = conn.execute(f"SELECT id, context, payload FROM {table} WHERE id > ? ORDER BY id LIMIT ?", (after, _STEP)).fetchall()
            if not rows:
                break
            after = rows[-1][0]
            updates = []
            failed = []
            for rowid, cid, blob in rows:
                reason = unreadable.get(cid)
                if reason is None:
                    try:
                        new = upgrade_payload(blob)
                    except LegacyFormatError as exc:
                        reason = f"payload unreadable in the upgrade from schema 1: {exc}"
                    else:
                        updates.append((new, len(new) + ROW_OVERHEAD, rowid))
                        continue
                if table == "records":
                    failed.append((rowid, reason))
                    log.error("record row %d of the schema 1 buffer is unreadable (%s); moved to the dead-letter table", rowid, reason)
            conn.executemany(f"UPDATE {table} SET payload = ?, size = ? WHERE id = ?", updates)
            if table == "records":
                done["records"] += len(updates)
            for rowid, reason in failed:
                conn.execute(
                    "INSERT INTO dead_letters (uuid, ts, context, payload, size, batch_id, status, reason) "
                    "SELECT uuid, ts, context, payload, size, '', 0, ? FROM records WHERE id = ?",
                    (reason, rowid),
                )
                conn.execute("DELETE FROM records WHERE id = ?", (rowid,))
            done["dead_lettered"] += len(failed)
    conn.execute("INSERT OR IGNORE INTO counters (name, value) VALUES ('lost', 0)")
    conn.execute(
        "UPDATE counters SET value = value + ? WHERE name = 'dead_lettered'", (done["dead_lettered"],)
    )
    conn.execute("UPDATE counters SET value = (SELECT coalesce(sum(size), 0) FROM records) WHERE name = 'stored_bytes'")
