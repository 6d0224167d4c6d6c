"""Records written into a real collector store (home.stores.sqlite.Store, through the batch
schema), for tests that need many records without devices."""

from __future__ import annotations

import json
import uuid
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from home.schema import parse_batch
from home.stores.sqlite import Store


def manifest_of(bundle: Path) -> bytes:
    return zipfile.ZipFile(bundle).read("manifest.json")


def store_records(
    store: Store, device: str, sha: str, inputs: Sequence[dict[str, Any]], *, ts: float, outputs: Sequence[dict[str, Any]] | None = None,
    flags: Sequence[list[str]] | None = None, model: str = "fire-risk", version: str = "1",
) -> None:
    records = [
        {
            "id": str(uuid.uuid4()), "ts": ts, "model": model, "version": version, "bundle_sha256": sha,
            "inputs": row, "outputs": outputs[i] if outputs else {"prediction": 0, "probabilities": {"0": 0.9, "1": 0.1}},
            "flags": flags[i] if flags else [],
        }
        for i, row in enumerate(inputs)
    ]
    for start in range(0, len(records), 5000):
        document = {"batch_id": str(uuid.uuid4()), "records": records[start : start + 5000]}
        store.ingest(device, parse_batch(json.loads(json.dumps(document)), max_records=10_000), received_at=ts)
