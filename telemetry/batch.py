"""A batch as the sync service sends it: records decoded from the buffer, encoded as JSON once."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .encoding import to_json_bytes
from .rows import StoredRecord

log = logging.getLogger("telemetry.sync")


@dataclass(frozen=True)
class Item:
    rowid: int
    id: str
    record: dict[str, Any]  # as sent


@dataclass(frozen=True)
class Batch:
    items: list[Item]
    json: bytes  # the items' records as one JSON array


@dataclass
class Prefetch:
    """The next batch, read and encoded while the current one is in flight."""

    records: int  # records read (items plus any dead-lettered as unreadable)
    batch: Batch
    body: tuple[bytes, bool, bool] | None = None  # the request body, gzipped?, carries 'lost'?


def encode(records: Sequence[StoredRecord], max_batch_bytes: int) -> tuple[Batch, list[int]]:
    """The records as sent, cut at ``max_batch_bytes``, and the row ids of those that
    cannot be decoded (damaged or hostile payloads: the caller dead-letters them)."""
    items: list[Item] = []
    unreadable: list[int] = []
    for record in records:
        payload = record.payload
        if payload is None:
            log.error("record %s is unreadable (its stored chunk or context is damaged); moving it to the dead-letter table", record.id)
            unreadable.append(record.rowid)
            continue
        values, outputs, flags = payload
        items.append(Item(record.rowid, record.id, {
            "id": record.id, "ts": record.ts, "model": record.model, "version": record.version,
            "bundle_sha256": record.bundle_sha256, "inputs": dict(zip(record.input_names, values)),
            "outputs": outputs, "flags": flags,
        }))
    # One encoder call for the whole batch; only a batch over the byte cap is measured
    # record by record to find where to cut it.
    text = to_json_bytes([item.record for item in items])
    if len(text) > max_batch_bytes + 2 and len(items) > 1:
        size = 0
        for count, item in enumerate(items):
            size += len(to_json_bytes(item.record)) + 1
            if count and size > max_batch_bytes:
                items = items[:count]
                text = to_json_bytes([item.record for item in items])
                break
    return Batch(items, text), unreadable


def batch_id_of(items: Sequence[Item]) -> str:
    """SHA-256 of the sorted record ids: the same records always make the same batch id."""
    return hashlib.sha256("\n".join(sorted(item.id for item in items)).encode()).hexdigest()
