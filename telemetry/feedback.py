"""Ground truth for recorded predictions, queued in the buffer's file until it is home.

``Buffer.feedback(record_id, label)`` stores a label for a record (by the id ``record()``
returned, which ``EdgeModel.predict`` puts into its results as ``"record_id"``) in the
``feedback`` table of the buffer's own SQLite file. The buffer's writer thread writes it
as a job, in a durable transaction (the buffer's ``durability``), so when ``feedback``
returns the label survives a crash, and it reaches home exactly once: the sync service
sends it after the records (``telemetry.feedback_sync``), deletes it only after the
collector stored it, and the collector stores each (device, record id) once, so a resend
after a crash counts as a duplicate.

Labels are JSON scalars: the class label in its original type (int, str, bool) for a
classifier, a number for a regressor. They are stored as canonical JSON text, the form
the collector keeps. A second, different label for a record still queued here is
refused (``FeedbackError``); the same label again is a no-op. A label the collector
refuses (it conflicts with the one home already has, or does not fit the model) moves to
the ``feedback_refused`` table, kept for inspection and never resent.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import time
from typing import TYPE_CHECKING, Any, NamedTuple

from .diagnosis import storage_error
from .errors import FeedbackError

if TYPE_CHECKING:
    from .buffer import Buffer
    from .store import Store

log = logging.getLogger("telemetry.buffer")

MAX_RECORD_ID = 128
"""Longest record id accepted (edgepack's UUIDs have 36 characters)."""
MAX_LABEL_TEXT = 1000
"""Longest label, in characters of canonical JSON."""

_TABLES = (
    """CREATE TABLE IF NOT EXISTS feedback (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        record_id TEXT NOT NULL UNIQUE,
        label TEXT NOT NULL,
        ts REAL,
        queued_at REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS feedback_refused (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        record_id TEXT NOT NULL,
        label TEXT NOT NULL,
        ts REAL,
        queued_at REAL NOT NULL,
        status INTEGER NOT NULL,
        reason TEXT NOT NULL,
        refused_at REAL NOT NULL
    )""",
)


class Label(NamedTuple):
    """One queued label as read back for sending."""

    rowid: int
    """Local row id (AUTOINCREMENT: never reused)."""
    record_id: str
    """The id of the record it labels."""
    label: str
    """The label as canonical JSON text."""
    ts: float | None
    """When the truth was observed (device clock), if the application said."""


def canonical_label(label: Any) -> str:
    """``label`` as canonical JSON text, or ``FeedbackError`` naming what is accepted.

    numpy scalars are taken by duck typing (``.item()``), so a label read from an array works.
    """
    if hasattr(label, "item") and not isinstance(label, (str, bytes, bool, int, float)):
        try:
            label = label.item()
        except (TypeError, ValueError) as exc:
            raise FeedbackError(f"label {label!r} is not a scalar: {exc}") from exc
    if isinstance(label, float) and not math.isfinite(label):
        raise FeedbackError(f"label {label!r} is not a finite number; expected a class label or a finite number")
    if label is None or not isinstance(label, (str, bool, int, float)):
        raise FeedbackError(
            f"label {label!r} ({type(label).__name__}) is not accepted; expected a class label in its original type "
            "(int, str or bool) for a classifier, or a number for a regressor"
        )
    text = json.dumps(label, ensure_ascii=False, allow_nan=False)
    if len(text) > MAX_LABEL_TEXT:
        raise FeedbackError(f"label is {len(text)} characters of JSON; at most {MAX_LABEL_TEXT} are accepted")
    return text


def check_record_id(record_id: Any) -> str:
    """``record_id`` if it looks like one, else ``FeedbackError`` saying what is expected."""
    if type(record_id) is not str or not record_id or len(record_id) > MAX_RECORD_ID or not record_id.isprintable():
        raise FeedbackError(
            f"record_id {record_id!r} is not a record id; expected the str in a prediction's 'record_id' "
            f"(what Buffer.record() returned), at most {MAX_RECORD_ID} printable characters"
        )
    return record_id


def check_ts(ts: Any) -> float | None:
    """``ts`` as float seconds, or None; ``FeedbackError`` for anything else."""
    if ts is None:
        return None
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts):
        raise FeedbackError(f"ts {ts!r} is not a time; expected Unix seconds (a finite number) or None")
    return float(ts)


def _ensure(conn: sqlite3.Connection) -> None:
    for statement in _TABLES:
        conn.execute(statement)


def _exists(store: Store) -> bool:
    return store.db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'feedback'").fetchone() is not None


# -- jobs: each runs on the buffer's writer thread ---------------------------------------------


def _queue(store: Store, record_id: str, label: str, ts: float | None) -> bool:
    with store._transaction() as conn:
        _ensure(conn)
        row = conn.execute("SELECT label FROM feedback WHERE record_id = ?", (record_id,)).fetchone()
        if row is not None:
            if row[0] == label:
                return False
            raise FeedbackError(
                f"record {record_id} already has label {row[0]} waiting to be sent; refusing the different label "
                f"{label} (a record has one truth: fix it at home, where a conflicting label is answered 409)"
            )
        conn.execute(
            "INSERT INTO feedback (record_id, label, ts, queued_at) VALUES (?, ?, ?, ?)", (record_id, label, ts, time.time())
        )
    return True


def _oldest(store: Store, limit: int) -> list[Label]:
    try:
        if not _exists(store):
            return []
        rows = store.db.execute("SELECT id, record_id, label, ts FROM feedback ORDER BY id LIMIT ?", (limit,)).fetchall()
    except sqlite3.Error as exc:
        raise storage_error(exc, store.path, "reading") from exc
    return [Label(*row) for row in rows]


def _delete(store: Store, rowids: list[int]) -> int:
    ids = json.dumps([int(r) for r in rowids])
    # Not durable: losing a delete only means the labels are sent again (duplicates at home).
    with store._transaction(durable=False) as conn:
        _ensure(conn)
        return conn.execute("DELETE FROM feedback WHERE id IN (SELECT value FROM json_each(?))", (ids,)).rowcount


def _refuse(store: Store, rowids: list[int], status: int, reasons: dict[int, str]) -> int:
    ids = json.dumps([int(r) for r in rowids])
    now = time.time()
    with store._transaction() as conn:
        _ensure(conn)
        rows = conn.execute(
            "SELECT id, record_id, label, ts, queued_at FROM feedback WHERE id IN (SELECT value FROM json_each(?))", (ids,)
        ).fetchall()
        conn.executemany(
            "INSERT INTO feedback_refused (record_id, label, ts, queued_at, status, reason, refused_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(r[1], r[2], r[3], r[4], status, reasons.get(r[0], ""), now) for r in rows],
        )
        conn.execute("DELETE FROM feedback WHERE id IN (SELECT value FROM json_each(?))", (ids,))
    return len(rows)


def _counts(store: Store) -> dict[str, int]:
    try:
        if not _exists(store):
            return {"pending": 0, "refused": 0}
        pending = store.db.execute("SELECT count(*) FROM feedback").fetchone()[0]
        refused = store.db.execute("SELECT count(*) FROM feedback_refused").fetchone()[0]
    except sqlite3.Error as exc:
        raise storage_error(exc, store.path, "reading") from exc
    return {"pending": int(pending), "refused": int(refused)}


# -- what Buffer and the sync service call -----------------------------------------------------


def queue_label(buffer: Buffer, record_id: Any, label: Any, *, ts: Any = None) -> bool:
    """Validate and durably queue one label; True if queued, False if already queued as is."""
    record_id = check_record_id(record_id)
    text = canonical_label(label)
    when = check_ts(ts)
    return buffer._call(lambda store: _queue(store, record_id, text, when))


def oldest_labels(buffer: Buffer, limit: int) -> list[Label]:
    """The ``limit`` oldest queued labels (not removed: see ``delete_labels``)."""
    return buffer._call(lambda store: _oldest(store, limit))


def delete_labels(buffer: Buffer, rowids: list[int]) -> int:
    """Delete labels the collector stored; returns how many were still there."""
    return buffer._call(lambda store: _delete(store, rowids))


def refuse_labels(buffer: Buffer, rowids: list[int], *, status: int, reasons: dict[int, str]) -> int:
    """Move labels the collector refused for good to ``feedback_refused``; returns how many."""
    return buffer._call(lambda store: _refuse(store, rowids, status, reasons))


def label_counts(buffer: Buffer) -> dict[str, int]:
    """``pending`` (waiting to be sent) and ``refused`` (kept in ``feedback_refused``) labels."""
    return buffer._call(_counts)


def salvage_labels(old: sqlite3.Connection, fresh: sqlite3.Connection) -> int:
    """Copy the queued labels of a damaged buffer file into the fresh one (inside its
    transaction); returns how many. Best effort: labels on damaged pages are logged as lost."""
    try:
        if old.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'feedback'").fetchone() is None:
            return 0
        rows = old.execute("SELECT id, record_id, label, ts, queued_at FROM feedback ORDER BY id").fetchall()
    except sqlite3.Error as exc:
        log.error("the queued labels of the damaged buffer could not be read (%s); they are lost", exc)
        return 0
    _ensure(fresh)
    fresh.executemany("INSERT OR IGNORE INTO feedback (id, record_id, label, ts, queued_at) VALUES (?, ?, ?, ?, ?)", rows)
    return len(rows)
