"""Labels in a PostgreSQL database shared by several collectors (the rules are ``home.feedback.labels``'s).

Several collectors, each with several pool threads, may receive labels for the same
(device, record id) at the same moment, and exactly one label may win. Reading first and
inserting later would let two writers both find the key free; so a batch is written
first and judged after, in one READ COMMITTED transaction:

1. ``INSERT ... ON CONFLICT (device, record_id) DO NOTHING RETURNING`` the batch's keys
   (the first label of each). A key another transaction inserted and has not committed
   makes this statement WAIT for that transaction: if it commits, the key is skipped; if
   it rolls back, the key is inserted here. So when the statement returns, every key of
   the batch is either ours (returned) or held by a committed label.
2. A second statement reads, for every key, the label the table holds and the record
   (model, outputs). It must be a second statement: under READ COMMITTED each statement
   sees what was committed before IT began, so it sees the label that made step 1 skip a
   key, which step 1's own snapshot (taken before that commit) does not.
3. ``home.feedback.labels.judge`` applies the rules to what step 2 read (our own inserts count as
   free keys). A conflict or a label that does not fit rolls the transaction back, so
   nothing of the batch stays; otherwise it commits.

Two collectors with conflicting labels for one key therefore end with exactly one stored:
the second waits in step 1, skips the key, reads the first's label in step 2 and answers
409 naming it. Keys are inserted in one fixed order (sorted), so two batches that share
keys wait for one another in the same order and never deadlock. The isolation level is
set explicitly: under REPEATABLE READ a skip caused by a label committed after the
snapshot would be a serialization failure instead. Every psycopg and pool error becomes
``StoreError`` (503 and ``Retry-After`` for a request) through ``home.stores.postgres.translated``.
"""

from __future__ import annotations

from typing import Any

import orjson

from .labels import FeedbackOutcome, Key, LabelIn, check_source, judge
from ..stores.postgres import PostgresStore, translated

_INSERT = """
    INSERT INTO feedback (device, record_id, label, ts, received_at, source)
    SELECT l.device, l.record_id, l.label, l.ts::float8, %(received_at)s, %(source)s
    FROM ROWS FROM (
        json_array_elements_text(%(labels)s::json->0), json_array_elements_text(%(labels)s::json->1),
        json_array_elements_text(%(labels)s::json->2), json_array_elements_text(%(labels)s::json->3)
    ) WITH ORDINALITY AS l(device, record_id, label, ts, n)
    ORDER BY l.n
    ON CONFLICT (device, record_id) DO NOTHING
    RETURNING device, record_id
"""
"""The batch's first label per key, in key order, as one JSON array of columns (one round
trip, no per-element adaptation; see ``home.stores.postgres``)."""

_LOOKUP = """
    SELECT k.device, k.record_id, f.label, r.model, r.outputs
    FROM ROWS FROM (
        json_array_elements_text(%(keys)s::json->0), json_array_elements_text(%(keys)s::json->1)
    ) AS k(device, record_id)
    LEFT JOIN feedback AS f ON f.device = k.device AND f.record_id = k.record_id
    LEFT JOIN records AS r ON r.device = k.device AND r.id = k.record_id
"""


class _Refused(Exception):
    """Leaves the transaction block, rolling it back (the batch is refused)."""


class PostgresFeedbackStore:
    """The ``feedback`` table of a PostgreSQL database; safe to use from several threads.

    With ``pool`` (a ``psycopg_pool.ConnectionPool``, e.g. the collector's store's) it
    borrows connections from it and ``close`` leaves it open; without, it opens a store
    of its own (which applies pending migrations) and closes it with itself.
    """

    def __init__(self, url: str, *, pool: Any = None) -> None:
        self.url = url
        self._own: PostgresStore | None = None
        if pool is None:
            self._own = PostgresStore(url, pool_size=1, name="feedback-store")
            pool = self._own.pool
        self.pool = pool

    def ingest(self, labels: list[LabelIn], *, received_at: float, source: str) -> FeedbackOutcome:
        """Store ``labels`` in one transaction, or nothing if any conflicts or does not fit."""
        check_source(source)
        first: dict[Key, LabelIn] = {}
        for item in labels:
            first.setdefault((item.device, item.record_id), item)
        if not first:
            return FeedbackOutcome()
        keys = sorted(first)
        ordered = [first[key] for key in keys]
        rows = orjson.dumps([
            [i.device for i in ordered], [i.record_id for i in ordered], [i.label for i in ordered], [i.ts for i in ordered],
        ]).decode()
        key_columns = orjson.dumps([[d for d, _ in keys], [r for _, r in keys]]).decode()
        outcome = FeedbackOutcome()
        with translated("storing feedback", self.url):
            with self.pool.connection() as conn:
                try:
                    with conn.transaction():
                        conn.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
                        ours = {tuple(row) for row in conn.execute(
                            _INSERT, {"labels": rows, "received_at": received_at, "source": source})}
                        held: dict[Key, str] = {}
                        records: dict[Key, tuple[str, Any]] = {}
                        for device, record_id, label, model, outputs in conn.execute(_LOOKUP, {"keys": key_columns}):
                            key = (device, record_id)
                            if label is not None and key not in ours:
                                held[key] = label
                            if model is not None:
                                records[key] = (model, outputs)
                        new, outcome = judge(labels, stored=held.get, record=records.get)
                        # Stored: ``new`` is exactly what step 1 inserted (every key no
                        # other label holds). Refused: roll back what step 1 inserted.
                        if not outcome.stored:
                            raise _Refused
                except _Refused:
                    pass
        return outcome

    def close(self) -> None:
        if self._own is not None:
            self._own.close()
            self._own = None

    def __enter__(self) -> PostgresFeedbackStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
