"""Helpers for the feedback tests: a device that predicts with a real bundle into a real
buffer, labels later, and syncs to a real collector."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx


def feedback_rows(db: Path) -> list[dict[str, Any]]:
    """The collector's ``feedback`` table, read straight from SQLite."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM feedback ORDER BY device, record_id")]
    finally:
        conn.close()


def post_labels(url: str, token: str, labels: list[dict[str, Any]], batch_id: str = "test-batch") -> httpx.Response:
    return httpx.post(
        f"{url}/v1/feedback", headers={"Authorization": f"Bearer {token}"},
        content=json.dumps({"batch_id": batch_id, "labels": labels}), timeout=30,
    )


def truth_for(i: int) -> int:
    """A made-up ground truth for row ``i`` (not the model's prediction, so accuracy is not 1)."""
    return (i * 7 + 3) % 5 % 2
