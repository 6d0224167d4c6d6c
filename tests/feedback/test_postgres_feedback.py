"""Labels on PostgreSQL with several collectors and pool threads writing at once, and a
real server failing under them. (What both stores share runs on both in the other modules.)

The races are made real, not hoped for: a trigger makes every insert into ``feedback``
sleep inside its transaction, so the two requests of a round are both in flight, and the
second reaches the key while the first still holds it uncommitted.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from home.feedback.labels import LabelIn
from home.feedback.postgres import PostgresFeedbackStore
from home.stores.postgres import PostgresStore
from tests.support.collector import RunningCollector
from tests.support.postgres import execute

from .helpers import feedback_rows, post_labels


def _slow_inserts(url: str, seconds: float) -> None:
    execute(url, f"""
        CREATE FUNCTION slow_label() RETURNS trigger AS $$ BEGIN PERFORM pg_sleep({seconds}); RETURN NEW; END $$
        LANGUAGE plpgsql;
        CREATE TRIGGER slow_label BEFORE INSERT ON feedback FOR EACH ROW EXECUTE FUNCTION slow_label();""")


def _at_once(calls: list[Callable[[], Any]]) -> list[tuple[Any, float, float]]:
    """Run ``calls`` on threads released together; each result with its start and end time."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(n: int) -> None:
        barrier.wait()
        start = time.monotonic()
        value = calls[n]()
        results[n] = (value, start, time.monotonic())

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_conflicting_labels_at_two_collectors_at_once_store_exactly_one(
    collector_pair: tuple[RunningCollector, RunningCollector], postgres_url: str
) -> None:
    first, second = collector_pair
    _slow_inserts(postgres_url, 0.05)
    overlapped = 0
    winners = set()
    for _ in range(12):
        record_id = str(uuid.uuid4())
        (a, a0, a1), (b, b0, b1) = _at_once([
            lambda: post_labels(first.url, first.token, [{"record_id": record_id, "label": 1}]),
            lambda: post_labels(second.url, first.token, [{"record_id": record_id, "label": 0}]),
        ])
        overlapped += a0 < b1 and b0 < a1
        assert sorted([a.status_code, b.status_code]) == [200, 409], (a.text, b.text)
        won, lost = (a, b) if a.status_code == 200 else (b, a)
        winner, loser = (1, 0) if won is a else (0, 1)
        winners.add(winner)
        assert won.json() == {"accepted": 1, "duplicates": 0, "conflicts": [], "invalid": []}
        assert lost.json()["conflicts"] == [{"device": "device-1", "record_id": record_id, "stored": winner, "sent": loser}]
        assert lost.json()["accepted"] == 0 and f"home holds {winner}" in lost.json()["error"]
        stored = [row for row in feedback_rows(first) if row["record_id"] == record_id]
        assert [row["label"] for row in stored] == [str(winner)]
    assert overlapped >= 6, f"only {overlapped} of 12 rounds had both requests in flight at once"
    assert len(feedback_rows(first)) == 12


def test_batches_sharing_keys_in_opposite_orders_never_deadlock(
    collector_pair: tuple[RunningCollector, RunningCollector], postgres_url: str
) -> None:
    first, second = collector_pair
    _slow_inserts(postgres_url, 0.005)
    for _ in range(3):
        ids = [str(uuid.uuid4()) for _ in range(40)]
        (a, _, _), (b, _, _) = _at_once([
            lambda: post_labels(first.url, first.token, [{"record_id": i, "label": 1} for i in ids]),
            lambda: post_labels(second.url, first.token, [{"record_id": i, "label": 0} for i in reversed(ids)]),
        ])
        # Never 503 (a deadlock PostgreSQL broke up): both insert in key order, whatever the batch's.
        assert sorted([a.status_code, b.status_code]) == [200, 409], (a.text[:300], b.text[:300])
        won, lost = (a, b) if a.status_code == 200 else (b, a)
        winner = "1" if won is a else "0"
        assert won.json()["accepted"] == 40 and len(lost.json()["conflicts"]) == 40
        labels = {row["record_id"]: row["label"] for row in feedback_rows(first) if row["record_id"] in set(ids)}
        assert labels == {i: winner for i in ids}


def test_pool_threads_of_two_stores_racing_on_overlapping_keys_keep_one_label_per_key(postgres_url: str) -> None:
    PostgresStore(postgres_url, pool_size=1).close()
    keys = [f"r{n}" for n in range(30)]
    outcomes: list[tuple[list[LabelIn], Any]] = []
    lock = threading.Lock()
    stores = [PostgresFeedbackStore(postgres_url), PostgresFeedbackStore(postgres_url)]

    def work(seed: int) -> None:
        rng = random.Random(seed)
        store = stores[seed % 2]
        for _ in range(25):
            batch = [LabelIn("dev", key, json.dumps(rng.randint(0, 1)), None) for key in rng.sample(keys, 6)]
            outcome = store.ingest(batch, received_at=time.time(), source="api")
            with lock:
                outcomes.append((batch, outcome))

    try:
        threads = [threading.Thread(target=work, args=(seed,)) for seed in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for store in stores:
            store.close()
    with psycopg.connect(postgres_url) as conn:
        table = {key: label for key, label in conn.execute("SELECT record_id, label FROM feedback")}
    assert len(outcomes) == 150
    accepted = 0
    for batch, outcome in outcomes:
        if outcome.stored:
            # Every label of a stored batch is what the table holds (stored by it, or the same).
            assert all(table[item.record_id] == item.label for item in batch)
            accepted += outcome.accepted
        else:
            assert outcome.conflicts and not outcome.invalid
            for conflict in outcome.conflicts:
                assert json.dumps(conflict.stored) == table[conflict.record_id] != json.dumps(conflict.sent)
    assert accepted == len(table)  # each stored label was counted as new exactly once


def test_a_failing_server_answers_503_and_keeps_nothing_of_the_labels(
    collector_factory: Callable[..., RunningCollector], postgres_url: str
) -> None:
    collector = collector_factory(db_url=postgres_url)
    ids = [str(uuid.uuid4()) for _ in range(3)]
    execute(postgres_url, f"""
        CREATE FUNCTION poison() RETURNS trigger AS $$ BEGIN
          IF NEW.record_id = '{ids[1]}' THEN RAISE EXCEPTION 'simulated disk failure'; END IF; RETURN NEW;
        END $$ LANGUAGE plpgsql;
        CREATE TRIGGER poison BEFORE INSERT ON feedback FOR EACH ROW EXECUTE FUNCTION poison();""")
    labels = [{"record_id": i, "label": 1} for i in ids]
    refused = post_labels(collector.url, collector.token, labels)
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
    assert "simulated disk failure" in refused.json()["error"] and "nothing was stored" in refused.json()["error"]
    assert feedback_rows(collector) == []
    execute(postgres_url, "DROP TRIGGER poison ON feedback")
    again = post_labels(collector.url, collector.token, labels)
    assert again.status_code == 200 and again.json()["accepted"] == 3
    assert len(feedback_rows(collector)) == 3
