"""The label storage's contract, the same on both stores (``open_feedback`` on a SQLite
file and on a PostgreSQL database): stored once, duplicates, conflicts and labels that do
not fit refuse the whole batch, and nothing of a refused batch stays."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import psycopg

from home.feedback.labels import LabelIn
from home.feedback.storage import open_feedback

from .helpers import insert_records


def _table(db: str) -> dict[str, tuple[Any, ...]]:
    sql = "SELECT record_id, label, ts, received_at, source FROM feedback"
    if db.startswith("postgresql://"):
        with psycopg.connect(db) as conn:
            rows = conn.execute(sql).fetchall()
    else:
        conn = sqlite3.connect(db)
        rows = conn.execute(sql).fetchall()
        conn.close()
    return {row[0]: tuple(row[1:]) for row in rows}


def _label(record_id: str, value: Any, ts: float | None = None) -> LabelIn:
    return LabelIn("dev", record_id, json.dumps(value), ts)


def test_labels_are_stored_once_and_a_refused_batch_leaves_nothing(home_db: str) -> None:
    insert_records(home_db, [
        ("dev", "known", "b", 0.0, 10.0, "fire-risk", "1", "a" * 64, "{}",
         json.dumps({"prediction": 1, "probabilities": {"0": 0.3, "1": 0.7}}), "[]"),
    ])
    with open_feedback(home_db) as store:
        first = store.ingest([_label("known", 1, 5.5), _label("later", "x"), _label("later", "x")], received_at=1.0, source="api")
        assert (first.status, first.accepted, first.duplicates) == (200, 2, 1)  # the repeat in the batch is a duplicate

        # A conflict refuses the batch, new labels in it included.
        refused = store.ingest([_label("new-1", 0), _label("known", 0)], received_at=2.0, source="api")
        assert refused.status == 409 and refused.accepted == 0
        assert [(c.record_id, c.stored, c.sent) for c in refused.conflicts] == [("known", 1, 0)]
        # Two different labels for one key inside one batch: the second conflicts with the first.
        inner = store.ingest([_label("new-2", 1), _label("new-2", 0)], received_at=2.0, source="api")
        assert inner.status == 409 and [(c.stored, c.sent) for c in inner.conflicts] == [(1, 0)]
        # New labels beside a duplicate are stored; a label for a record home lacks is too.
        mixed = store.ingest([_label("new-3", 1), _label("known", 1), _label("no-record", 1)], received_at=2.0, source="api")
        assert (mixed.status, mixed.accepted, mixed.duplicates) == (200, 2, 1)
        # A label that does not fit the known record's classifier refuses the batch too.
        insert_records(home_db, [
            ("dev", "typed", "b", 0.0, 11.0, "fire-risk", "1", "a" * 64, "{}",
             json.dumps({"prediction": 0, "probabilities": {"0": 0.6, "1": 0.4}}), "[]"),
        ])
        wrong = store.ingest([_label("new-5", 1), _label("typed", 2)], received_at=3.0, source="import")
        assert wrong.status == 422 and [i.record_id for i in wrong.invalid] == ["typed"]
        assert "not a class of classifier 'fire-risk'" in wrong.invalid[0].error

        # Resending a stored batch: all duplicates, nothing changes.
        again = store.ingest([_label("known", 1, 5.5), _label("later", "x")], received_at=9.0, source="device")
        assert (again.status, again.accepted, again.duplicates) == (200, 0, 2)

    table = _table(home_db)
    assert set(table) == {"known", "later", "new-3", "no-record"}  # nothing of a refused batch
    assert table["known"] == ("1", 5.5, 1.0, "api") and table["later"] == ('"x"', None, 1.0, "api")
