"""Building batches and requests for the collector tests."""

from __future__ import annotations

import gzip
import hashlib
import json
import uuid
from typing import Any

import httpx

SHA = hashlib.sha256(b"fire-risk bundle").hexdigest()


def record(**overrides: Any) -> dict[str, Any]:
    """A valid record with a fresh id; ``overrides`` replace fields."""
    body: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "ts": 1_790_000_000.25,
        "model": "fire-risk",
        "version": "3",
        "bundle_sha256": SHA,
        "inputs": {"temp_c": 31.5, "region": "north"},
        "outputs": {"prediction": 1, "probabilities": {"0": 0.2, "1": 0.8}},
        "flags": [],
    }
    body.update(overrides)
    return body


def batch(n: int = 3, *, counters: dict[str, int] | None = None, **record_overrides: Any) -> dict[str, Any]:
    """A valid batch of ``n`` fresh records."""
    body: dict[str, Any] = {"batch_id": str(uuid.uuid4()), "records": [record(**record_overrides) for _ in range(n)]}
    if counters is not None:
        body["counters"] = counters
    return body


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def post(
    url: str, token: str | None, body: Any, *, gzipped: bool = False, headers: dict[str, str] | None = None
) -> httpx.Response:
    """POST a batch the way the sync service does (JSON, optionally gzip)."""
    data = json.dumps(body).encode()
    sent = {"Content-Type": "application/json", **(auth(token) if token else {})}
    if gzipped:
        data = gzip.compress(data)
        sent["Content-Encoding"] = "gzip"
    sent.update(headers or {})
    return httpx.post(f"{url}/v1/batches", content=data, headers=sent, timeout=30.0)
