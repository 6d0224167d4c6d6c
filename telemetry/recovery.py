"""Salvaging a damaged buffer file: move it aside, copy what can be read, count the rest.

A damaged page (a failing SD card, a torn write on storage that lies about flushes)
makes SQLite answer "database disk image is malformed" for every statement that touches
it. Appending new records may keep working while reading the backlog never does again,
so the application would be told its records are safe when none can ever be sent.
When ``PRAGMA quick_check`` at open or any statement later reports damage, the store
calls ``salvage``: under the write lock, the file (with its -wal) is renamed to
``<db>.corrupt-<UTC time>`` and kept for inspection, a fresh file is created in its
place, and every chunk that can still be read is copied over with its row ids, UUIDs and
timestamps (so a sync that read them before keeps acknowledging the right rows, and the
collector still sees each record once). Rows are read in id ranges; a range that fails
is halved until the damaged rows are isolated, so one bad page costs only its own rows
(for chunks: the chunks on it, or the one whose overflow page it is). A file of an older
schema is salvaged into the current one (its records become chunks of one record).

What could not be read is counted as ``lost``: the records the counters (or, if those
are damaged too, the ledger) say were pending, minus the ones salvaged. The count is
logged as an error, shown by ``Buffer.stats()`` and sent home with every batch.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .feedback import salvage_labels
from .legacy import LegacyFormatError
from .migration import upgrade_names, upgrade_payload
from . import chunks
from .encoding import payload_ok
from .rows import ROW_OVERHEAD
from .schema import LEDGER_COUNTERS, SCHEMA_VERSION, SEQUENCE, create

log = logging.getLogger("telemetry.buffer")

_WINDOW = 4096
"""Row ids read per statement while salvaging."""


@dataclass(frozen=True, kw_only=True)
class Salvage:
    """What ``salvage`` did."""

    aside: Path
    """Where the damaged file now is."""
    records: int
    """Pending records copied into the fresh file."""
    lost: int
    """Pending records that could not be read (added to the ``lost`` counter)."""
    counters: dict[str, int]
    """The counters of the fresh file."""


def aside_path(path: Path) -> Path:
    """``<db>.corrupt-<UTC time>``, unique among the files already there."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    candidate = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    return candidate


def salvage(path: Path, ledger: dict[str, int] | None) -> Salvage:
    """Move the damaged ``path`` aside and build a fresh buffer from what it still holds.

    The caller holds the write lock and has closed its connection to ``path``."""
    aside = aside_path(path)
    os.replace(path, aside)
    for suffix in ("-wal", "-shm"):
        if os.path.exists(f"{path}{suffix}"):
            os.replace(f"{path}{suffix}", f"{aside}{suffix}")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    fresh = sqlite3.connect(str(path), isolation_level=None)
    try:
        fresh.execute("PRAGMA journal_mode = WAL")
        fresh.execute("PRAGMA synchronous = FULL")
        fresh.execute("BEGIN IMMEDIATE")
        create(fresh)
        old = _open_damaged(aside)
        try:
            copied, counters, top = _copy(old, fresh, ledger['recorded'] if ledger else 0) if old is not None else (0, None, 0)
            if old is not None:
                salvage_labels(old, fresh)  # queued ground truth (telemetry.feedback), best effort
        finally:
            if old is not None:
                old.close()
        if counters is None or (ledger is not None and ledger["recorded"] > counters.get("recorded", 0)):
            counters = dict(ledger) if ledger is not None else {}
        values = {name: int(counters.get(name, 0)) for name in LEDGER_COUNTERS}
        expected = values["recorded"] - sum(values[name] for name in LEDGER_COUNTERS if name != "recorded")
        lost = max(0, expected - copied)
        values["lost"] += lost
        fresh.executemany("UPDATE counters SET value = ? WHERE name = ?", [(v, k) for k, v in values.items()])
        fresh.execute("UPDATE counters SET value = (SELECT coalesce(sum(size), 0) FROM chunks) WHERE name = 'stored_bytes'")
        # Row ids are never reused, not even those of records lost with the damaged pages:
        # the sequence never falls below the count of records ever recorded.
        floor = max(top, values["recorded"]) + 1
        fresh.execute("UPDATE counters SET value = max(value, ?) WHERE name = ?", (floor, SEQUENCE))
        fresh.execute("COMMIT")
    except BaseException:
        fresh.close()
        raise
    fresh.close()
    log.error(
        "telemetry buffer %s was damaged: moved it to %s, salvaged %d pending record(s), %d lost "
        "(counted as 'lost' and reported to the collector)", path, aside, copied, lost,
    )
    return Salvage(aside=aside, records=copied, lost=lost, counters=values)


def _open_damaged(aside: Path) -> sqlite3.Connection | None:
    try:
        conn = sqlite3.connect(str(aside), isolation_level=None)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.DatabaseError as exc:
        log.error("the damaged buffer %s cannot be opened at all (%s); nothing salvaged", aside, exc)
        return None


def _scalar(conn: sqlite3.Connection, sql: str, default: Any) -> Any:
    try:
        row = conn.execute(sql).fetchone()
    except sqlite3.DatabaseError:
        return default
    return default if row is None or row[0] is None else row[0]


def _rows(conn: sqlite3.Connection, table: str, columns: str, top: int) -> Iterator[tuple[Any, ...]]:
    """Every readable row of ``table`` with an id up to ``top``, damaged ranges skipped."""
    stack = [(start, min(start + _WINDOW - 1, top)) for start in range(((top - 1) // _WINDOW) * _WINDOW + 1, 0, -_WINDOW)]
    while stack:
        low, high = stack.pop()
        try:
            if low == high:
                # An exact lookup: a range scan would step on to the next (damaged) page
                # after its last row and fail for a row that is perfectly readable.
                rows = conn.execute(f"SELECT {columns} FROM {table} WHERE id = ?", (low,)).fetchall()
            else:
                rows = conn.execute(f"SELECT {columns} FROM {table} WHERE id BETWEEN ? AND ? ORDER BY id", (low, high)).fetchall()
        except sqlite3.DatabaseError:
            if low < high:
                mid = (low + high) // 2
                stack.append((mid + 1, high))
                stack.append((low, mid))
            continue
        yield from rows


def _top(conn: sqlite3.Connection, table: str) -> int:
    return max(int(_scalar(conn, f"SELECT max(id) FROM {table}", 0)),
               int(_scalar(conn, f"SELECT seq FROM sqlite_sequence WHERE name = '{table}'", 0)))


def _copy(old: sqlite3.Connection, fresh: sqlite3.Connection, hint: int) -> tuple[int, dict[str, int] | None, int]:
    version = int(_scalar(old, "PRAGMA user_version", SCHEMA_VERSION))
    convert_names: Callable[[bytes], bytes] = upgrade_names if version == 1 else (lambda blob: blob)
    convert_payload: Callable[[bytes], bytes] = upgrade_payload if version == 1 else (lambda blob: blob)
    contexts: set[int] = set()
    for cid, model, ver, sha, names in _rows(old, "contexts", "id, model, version, bundle_sha256, input_names", _top(old, "contexts")):
        try:
            names = convert_names(names)
        except LegacyFormatError:
            pass  # kept as it was: its records fail to decode and are dead-lettered at sync
        try:
            fresh.execute("INSERT INTO contexts (id, model, version, bundle_sha256, input_names) VALUES (?, ?, ?, ?, ?)",
                          (cid, model, ver, sha, names))
            contexts.add(cid)
        except sqlite3.IntegrityError:
            continue  # a damaged duplicate of a context already copied
    def placeholder() -> int:
        # Records whose context was on a damaged page keep a placeholder context (its
        # names blob is invalid MessagePack): they are dead-lettered as unreadable at
        # sync time rather than dropped unseen.
        if 0 not in contexts:
            fresh.execute("INSERT INTO contexts (id, model, version, bundle_sha256, input_names) VALUES (0, '', '', '', x'c1')")
            contexts.add(0)
        return 0

    copied = 0
    if version >= 3:
        top = max(_top(old, "chunks"), hint)
        old_sequence = int(_scalar(old, f"SELECT value FROM counters WHERE name = '{SEQUENCE}'", 0))
        for cid, cid_context, count, gone, ids, ts, payload, size in _rows(
            old, "chunks", "id, context, count, gone, ids, ts, payload, size", top
        ):
            fresh.execute("INSERT INTO chunks (id, context, count, gone, ids, ts, payload, size) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                          (cid, cid_context if cid_context in contexts else placeholder(), count, gone, ids, ts, payload, size))
            copied += max(0, int(count) - int(gone))
            top = max(top, int(cid) + int(count) - 1)
        top = max(top, old_sequence - 1)
    else:
        top = max(_top(old, "records"), hint)
        for rowid, uid, ts, cid, payload, _size in _rows(old, "records", "id, uuid, ts, context, payload, size", top):
            try:
                payload = convert_payload(payload)
            except LegacyFormatError:
                pass  # copied as it is: dead-lettered as unreadable at sync time
            if len(uid) != chunks.ID_LENGTH or not payload_ok(payload):
                payload = b"\xc1"  # one record that cannot be decoded: dead-lettered at sync
            fresh.execute(
                "INSERT INTO chunks (id, context, count, ids, ts, payload, size) VALUES (?, ?, 1, ?, ?, ?, ?)",
                (rowid, cid if cid in contexts else placeholder(), uid if len(uid) == chunks.ID_LENGTH else "?" * chunks.ID_LENGTH,
                 chunks.encode_ts([ts]), chunks.encode_payload([payload]) if payload != b"\xc1" else payload,
                 len(payload) + ROW_OVERHEAD),
            )
            copied += 1
    for row in _rows(old, "dead_letters", "id, uuid, ts, context, payload, size, batch_id, status, reason", _top(old, "dead_letters")):
        fresh.execute("INSERT INTO dead_letters (id, uuid, ts, context, payload, size, batch_id, status, reason) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (*row[:3], row[3] if row[3] in contexts else placeholder(), *row[4:]))
    try:
        counters: dict[str, int] | None = dict(old.execute("SELECT name, value FROM counters").fetchall())
    except sqlite3.DatabaseError:
        counters = None
    return copied, counters, top
