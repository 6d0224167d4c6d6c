"""A batch as the sync service sends it: records read from the buffer, encoded once.

Two encodings of the same records (``telemetry.wire`` says which goes out):

* ``packed``: the records' stored MessagePack ``[values, outputs, flags]`` arrays, in
  groups of consecutive records of one context (model, version, bundle, input names),
  the group's ids concatenated and its timestamps as little-endian float64, exactly as
  a chunk holds them (``telemetry.chunks``). The sync service reads ``PackedRecord``s,
  whose bytes go into the group as they are stored: nothing is decoded or encoded again
  per record, one msgspec call per batch writes the envelope. No JSON on the device.
* ``json``: one object per record (``{"id", "ts", "model", ..., "inputs": {name: value}}``),
  encoded with orjson, for collectors that do not take the packed format.
"""

from __future__ import annotations

import hashlib
import logging
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Union

import msgspec

from .chunks import encode_payload
from .encoding import _msgpack_encode as _pack, to_json_bytes
from .rows import PackedRecord, StoredRecord

log = logging.getLogger("telemetry.sync")


Item = Union[PackedRecord, StoredRecord]
"""One record of a batch: the record as read (its ``rowid`` and ``id`` are what the
service acknowledges), so a batch of a thousand costs no extra object per record."""


@dataclass(frozen=True)
class Batch:
    items: list[Item]
    records: bytes  # the items' records as one JSON array, or as the packed groups
    packed: bool


def _record(stored: StoredRecord) -> dict[str, Any]:
    values, outputs, flags = stored.payload  # type: ignore[misc]
    return {
        "id": stored.id, "ts": stored.ts, "model": stored.model, "version": stored.version,
        "bundle_sha256": stored.bundle_sha256, "inputs": dict(zip(stored.input_names, values)),
        "outputs": outputs, "flags": flags,
    }


def json_records(items: Sequence[Item]) -> bytes:
    """The items as the JSON array of record objects."""
    return to_json_bytes([_record(item) for item in items])


def _records(run: Sequence[Item]) -> Any:
    """A group's records: the stored bytes after one array header, or the decoded payloads."""
    if type(run[0]) is PackedRecord:
        return msgspec.Raw(encode_payload([r.packed for r in run]))
    return [r.payload for r in run]


def _groups(items: Sequence[Item]) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = []
    key = None
    run: list[Item] = []

    def close() -> None:
        if run:
            first = run[0]
            groups.append({
                "model": first.model, "version": first.version, "bundle_sha256": first.bundle_sha256,
                "inputs": first.input_names, "ids": "".join([r.id for r in run]),
                "ts": struct.pack(f"<{len(run)}d", *[r.ts for r in run]), "records": _records(run),
            })

    for item in items:
        here = (item.model, item.version, item.bundle_sha256, item.input_names)
        if here != key:
            close()
            key, run = here, []
        run.append(item)
    close()
    return groups


def packed_records(items: Sequence[Item]) -> bytes:
    """The items as the MessagePack array of groups (the ``groups`` of a packed batch)."""
    return _pack(_groups(items))


def _size(stored: Item, packed: bool) -> int:
    if packed:
        return len(stored.packed if type(stored) is PackedRecord else _pack(stored.payload)) + 36 + 8
    return len(to_json_bytes(_record(stored))) + 1


def readable(record: Item, packed: bool) -> bool:
    """Whether ``record`` can be sent in the packed format (``packed``) or as JSON; a
    ``PackedRecord`` is decoded for JSON, its framing alone was checked when it was read."""
    if packed and type(record) is PackedRecord:
        return record.packed is not None
    return record.payload is not None


def damaged(items: Sequence[Item]) -> list[int]:
    """Indexes of the packed records whose bytes do not decode as a record of their names."""
    return [i for i, item in enumerate(items) if type(item) is PackedRecord and item.payload is None]


def encode(records: Sequence[Item], max_batch_bytes: int, *, packed: bool = True) -> tuple[Batch, list[int]]:
    """The records as sent, cut at ``max_batch_bytes``, and the row ids of the leading
    records that cannot be decoded (damaged or hostile payloads: the caller dead-letters
    them). The batch ends before any later unreadable record: a record leaves its chunk
    only after those before it (``telemetry.store``), so it is dead-lettered when it leads."""
    items: list[Item] = []
    unreadable: list[int] = []
    for record in records:
        if not readable(record, packed):
            if items:
                break
            log.error("record %s is unreadable (its stored chunk or context is damaged); moving it to the dead-letter table", record.id)
            unreadable.append(record.rowid)
            continue
        items.append(record)
    encoded = packed_records if packed else json_records
    # One encoder call for the whole batch; only a batch over the byte cap is measured
    # record by record to find where to cut it.
    text = encoded(items)
    if len(text) > max_batch_bytes + 2 and len(items) > 1:
        size = 0
        for count, item in enumerate(items):
            size += _size(item, packed)
            if count and size > max_batch_bytes:
                items = items[:count]
                text = encoded(items)
                break
    return Batch(items, text, packed), unreadable


def batch_id_of(items: Sequence[Item]) -> str:
    """SHA-256 of the sorted record ids: the same records always make the same batch id."""
    return hashlib.sha256("\n".join(sorted(item.id for item in items)).encode()).hexdigest()
