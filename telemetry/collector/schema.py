"""The batch a device posts, checked field by field.

Every check names the field at fault (``records[3].id``) and what was expected, so a
device developer can fix the sender from the message alone.
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass
from typing import Any

from .errors import SchemaError

BATCH_KEYS = frozenset({"batch_id", "records", "counters"})
RECORD_KEYS = frozenset({"id", "ts", "model", "version", "bundle_sha256", "inputs", "outputs", "flags"})
COUNTER_KEYS = ("dropped", "sampled_out", "dead_lettered")
CANONICAL_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
MAX_TEXT = 256


@dataclass(frozen=True, kw_only=True)
class Record:
    """One prediction as the device saw it."""

    id: str
    """Record id, a UUID in canonical lower-case form; unique per device forever."""

    ts: float
    """When the prediction was made, unix seconds UTC."""

    model: str
    """Registry name of the model."""

    version: str
    """Registry version of the model."""

    bundle_sha256: str
    """sha256 of the bundle that made the prediction (lower-case hex)."""

    inputs: dict[str, Any]
    """The features as given to the model."""

    outputs: dict[str, Any]
    """What the model answered."""

    flags: list[str]
    """Markers set by the device (out of range input, sampled, ...)."""


@dataclass(frozen=True, kw_only=True)
class Counters:
    """A device's cumulative totals since its buffer was created."""

    dropped: int
    """Records lost on the device (buffer full)."""

    sampled_out: int
    """Predictions deliberately not recorded."""

    dead_lettered: int
    """Records the device gave up sending."""


@dataclass(frozen=True, kw_only=True)
class Batch:
    """A validated ``POST /v1/batches`` body."""

    batch_id: str
    """Sender's id of the batch (for logs; records are deduplicated by their own ids)."""

    records: list[Record]
    """The records, in the order sent."""

    counters: Counters | None
    """Cumulative device counters, when sent."""


def _type_name(value: object) -> str:
    return "null" if value is None else {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
        type(value), type(value).__name__
    )


def _keys(value: dict[str, Any], *, required: frozenset[str] | tuple[str, ...], allowed: frozenset[str] | tuple[str, ...], where: str | None) -> None:
    missing = [key for key in sorted(required) if key not in value]
    if missing:
        raise SchemaError(f"missing {', '.join(repr(k) for k in missing)}; expected keys {sorted(allowed)}", field=where)
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise SchemaError(f"unknown key(s) {', '.join(repr(k) for k in unknown)}; expected only {sorted(allowed)}", field=where)


def _text(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SchemaError(f"expected a non-empty string, got {_type_name(value)} {value!r:.60}", field=where)
    if len(value) > MAX_TEXT:
        raise SchemaError(f"expected at most {MAX_TEXT} characters, got {len(value)}", field=where)
    return value


def _count(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SchemaError(f"expected a non-negative integer, got {_type_name(value)} {value!r:.60}", field=where)
    return value


def _record(value: object, where: str) -> Record:
    if not isinstance(value, dict):
        raise SchemaError(f"expected an object, got {_type_name(value)}", field=where)
    _keys(value, required=RECORD_KEYS, allowed=RECORD_KEYS, where=where)
    raw_id = value["id"]
    if not isinstance(raw_id, str) or not CANONICAL_UUID.fullmatch(raw_id):
        raise SchemaError(
            f"expected a UUID string like '1b4e28ba-2fa1-41d2-883f-0016d3cca427', got {raw_id!r:.60}", field=f"{where}.id"
        )
    ts = value["ts"]
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts):
        raise SchemaError(f"expected unix seconds UTC as a finite number, got {_type_name(ts)} {ts!r:.60}", field=f"{where}.ts")
    sha = value["bundle_sha256"]
    if not isinstance(sha, str) or not SHA256_HEX.fullmatch(sha):
        raise SchemaError(f"expected the bundle's sha256 as 64 hex digits, got {sha!r:.80}", field=f"{where}.bundle_sha256")
    for key in ("inputs", "outputs"):
        if not isinstance(value[key], dict):
            raise SchemaError(f"expected an object, got {_type_name(value[key])}", field=f"{where}.{key}")
    flags = value["flags"]
    if not isinstance(flags, list) or not all(isinstance(flag, str) for flag in flags):
        raise SchemaError(f"expected an array of strings, got {flags!r:.80}", field=f"{where}.flags")
    return Record(
        id=str(uuid.UUID(raw_id)),
        ts=float(ts),
        model=_text(value["model"], f"{where}.model"),
        version=_text(value["version"], f"{where}.version"),
        bundle_sha256=sha.lower(),
        inputs=value["inputs"],
        outputs=value["outputs"],
        flags=flags,
    )


def parse_batch(document: object, *, max_records: int) -> Batch:
    """Check a decoded JSON body against the batch schema; raise ``SchemaError`` naming the field."""
    if not isinstance(document, dict):
        raise SchemaError(f"expected the body to be a JSON object with keys {sorted(BATCH_KEYS)}, got {_type_name(document)}")
    _keys(document, required=frozenset({"batch_id", "records"}), allowed=BATCH_KEYS, where=None)
    batch_id = _text(document["batch_id"], "batch_id")
    records = document["records"]
    if not isinstance(records, list):
        raise SchemaError(f"expected an array of records, got {_type_name(records)}", field="records")
    if len(records) > max_records:
        raise SchemaError(
            f"batch has {len(records)} records; at most {max_records} are accepted per batch, send smaller batches",
            field="records",
        )
    parsed = [_record(item, f"records[{index}]") for index, item in enumerate(records)]
    counters = None
    if document.get("counters") is not None:
        raw = document["counters"]
        if not isinstance(raw, dict):
            raise SchemaError(f"expected an object {{{', '.join(COUNTER_KEYS)}}}, got {_type_name(raw)}", field="counters")
        _keys(raw, required=COUNTER_KEYS, allowed=COUNTER_KEYS, where="counters")
        counters = Counters(**{key: _count(raw[key], f"counters.{key}") for key in COUNTER_KEYS})
    return Batch(batch_id=batch_id, records=parsed, counters=counters)
