"""Helpers for the feedback tests: a device that predicts with a real bundle into a real
buffer, labels later, and syncs to a real collector."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

import httpx

from tests.support.collector import RunningCollector


def feedback_rows(collector: RunningCollector) -> list[dict[str, Any]]:
    """The collector's ``feedback`` table, read straight from its store (SQLite or PostgreSQL)."""
    order = 'ORDER BY device COLLATE "C", record_id COLLATE "C"' if collector.db_url else "ORDER BY device, record_id"
    return collector.rows("feedback", order=order)


def database(collector: RunningCollector) -> str:
    """The collector's database as home's functions and ``--db`` options take it."""
    return collector.db_url or str(collector.db_path)


RECORD_COLUMNS = ("device", "id", "batch_id", "received_at", "ts", "model", "version", "bundle_sha256", "inputs", "outputs", "flags")


def insert_records(db: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """Write ``records`` rows (in ``RECORD_COLUMNS`` order) straight into a home database."""
    columns = ", ".join(RECORD_COLUMNS)
    if db.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(db) as conn, conn.cursor() as cursor:
            cursor.executemany(f"INSERT INTO records ({columns}) VALUES ({', '.join(['%s'] * len(RECORD_COLUMNS))})", rows)
        return
    conn = sqlite3.connect(db)
    with conn:
        conn.executemany(f"INSERT INTO records ({columns}) VALUES ({', '.join('?' * len(RECORD_COLUMNS))})", rows)
    conn.close()


def post_labels(url: str, token: str, labels: list[dict[str, Any]], batch_id: str = "test-batch") -> httpx.Response:
    return httpx.post(
        f"{url}/v1/feedback", headers={"Authorization": f"Bearer {token}"},
        content=json.dumps({"batch_id": batch_id, "labels": labels}), timeout=30,
    )


def truth_for(i: int) -> int:
    """A made-up ground truth for row ``i`` (not the model's prediction, so accuracy is not 1)."""
    return (i * 7 + 3) % 5 % 2
