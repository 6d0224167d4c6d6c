"""The batch a device posts, checked field by field and turned into what the store keeps.

Every check names the field at fault (``records[3].id``) and what was expected, so a
device developer can fix the sender from the message alone.

Only a wrong batch is checked twice. A valid one passes whole-batch checks that run at C
speed (the set of types in each column, the distinct model names, one regex per id)
without building an object per record; when any of them fails, the record-by-record
checks run instead, to find the first field at fault and say what it should be.

Inputs, outputs and flags are kept as canonical JSON text (sorted keys, compact, UTF-8),
encoded here with orjson so that anything which cannot be stored exactly is refused with
a 422 naming the field, never found out by the store. Strict JSON is what is stored:
NaN, Infinity, integers beyond 64 bits, numbers too small for a double (``1e-400``,
which would read as 0.0) and unpaired surrogates are refused, not turned into something
else (see ``exactness``).

Counters are an open set: the three every device sends (``dropped``, ``sampled_out``,
``dead_lettered``) plus any other cumulative count a newer device keeps (``lost``, for
records lost to a damaged buffer), each a non-negative integer under a short snake_case
name, at most ``MAX_COUNTERS`` of them; the collector keeps the largest value of each.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from itertools import chain
from operator import itemgetter
from typing import Any

import orjson

from .errors import SchemaError
from .exactness import inexact

BATCH_KEYS = frozenset({"batch_id", "records", "counters"})
RECORD_FIELDS = ("id", "ts", "model", "version", "bundle_sha256", "inputs", "outputs", "flags")
RECORD_KEYS = frozenset(RECORD_FIELDS)
COUNTER_KEYS = ("dropped", "sampled_out", "dead_lettered")
"""Counters every batch that has counters carries (and the devices table has columns for)."""
COUNTER_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
MAX_COUNTERS = 32
CANONICAL_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
MAX_TEXT = 256
INT64_MAX = 2**63 - 1
"""Counters go into SQLite INTEGER columns: signed 64 bits."""

_fields_of = itemgetter(*RECORD_FIELDS)
_canonical = partial(orjson.dumps, option=orjson.OPT_SORT_KEYS)
# orjson writes every float of magnitude >= 1e16 with an exponent ("1.8446744073709552e+19"),
# so a value read from an integer orjson could not hold (magnitude >= 2**63, about
# 9.2e18) always shows an exponent of 18 or more in its encoding.
_EXPONENT_SIGN = "+"
_LARGE_NUMBER = re.compile(r"e\+(1[89]|[2-9][0-9]|[0-9]{3})")


@dataclass(frozen=True, kw_only=True)
class Records:
    """The records of a batch, one list per field in the order sent.

    Columns rather than an object per record: the store hands them to one executemany
    as they are, and a batch of 5,000 records never costs 5,000 object constructions.
    """

    id: list[str]
    """Record ids, UUIDs in canonical lower-case form; unique per device forever."""

    ts: list[float]
    """When each prediction was made, unix seconds UTC."""

    model: list[str]
    """Registry name of the model."""

    version: list[str]
    """Registry version of the model."""

    bundle_sha256: list[str]
    """sha256 of the bundle that made the prediction (lower-case hex)."""

    inputs: list[str]
    """The features as given to the model, as canonical JSON text (sorted keys)."""

    outputs: list[str]
    """What the model answered, as canonical JSON text (sorted keys)."""

    flags: list[str]
    """Markers set by the device (out of range input, sampled, ...), as a JSON array."""

    def __len__(self) -> int:
        return len(self.id)


@dataclass(frozen=True, kw_only=True)
class Counters:
    """A device's cumulative totals since its buffer was created."""

    dropped: int
    """Records lost on the device (buffer full)."""

    sampled_out: int
    """Predictions deliberately not recorded."""

    dead_lettered: int
    """Records the device gave up sending."""

    extra: dict[str, int] = field(default_factory=dict)
    """Further cumulative counters by name (``lost``: records lost to a damaged buffer, ...)."""


@dataclass(frozen=True, kw_only=True)
class Batch:
    """A validated ``POST /v1/batches`` body."""

    batch_id: str
    """Sender's id of the batch (for logs; records are deduplicated by their own ids)."""

    records: Records
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
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= INT64_MAX:
        raise SchemaError(
            f"expected a non-negative integer of at most {INT64_MAX}, got {_type_name(value)} {value!r:.60}", field=where
        )
    return value


def _finite(value: float | int) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large to be a float
        return False


def _check_record(value: object, where: str) -> None:
    """The precise checks of one record, always in this order, so a record with several
    faults always gets the same message."""
    if not isinstance(value, dict):
        raise SchemaError(f"expected an object, got {_type_name(value)}", field=where)
    _keys(value, required=RECORD_KEYS, allowed=RECORD_KEYS, where=where)
    raw_id = value["id"]
    if not isinstance(raw_id, str) or not CANONICAL_UUID.fullmatch(raw_id):
        raise SchemaError(
            f"expected a UUID string like '1b4e28ba-2fa1-41d2-883f-0016d3cca427', got {raw_id!r:.60}", field=f"{where}.id"
        )
    ts = value["ts"]
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not _finite(ts):
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
    _text(value["model"], f"{where}.model")
    _text(value["version"], f"{where}.version")


def _only(values: Iterable[object], *types: type) -> bool:
    # Exact types, so bool never passes for int and no subclass sneaks past the encoder.
    return set(map(type, values)).issubset(types)


def _fast_check(records: list[Any]) -> tuple[tuple[Any, ...], ...] | None:
    """The record columns if every record is valid, judged batch-wide; None if any check
    fails (the precise checks then say which field)."""
    if not _only(records, dict) or set(map(len, records)) != {len(RECORD_FIELDS)}:
        return None
    try:
        # Exactly the expected keys: each record has as many keys as fields, and each field.
        columns = tuple(zip(*map(_fields_of, records)))
    except KeyError:
        return None
    ids, ts, models, versions, shas, inputs, outputs, flags = columns
    try:
        texts_ok = all(
            type(text) is str and text.strip() and len(text) <= MAX_TEXT for text in set(chain(models, versions))
        )
        shas_ok = _only(shas, str) and all(map(SHA256_HEX.fullmatch, set(shas)))
        times_ok = _only(ts, float, int) and all(map(math.isfinite, ts))
    except (TypeError, OverflowError):
        # An unhashable model, version or sha, or an integer too large for a float: the
        # precise checks say which.
        return None
    if not (
        texts_ok
        and shas_ok
        and times_ok
        and _only(ids, str)
        and all(map(CANONICAL_UUID.fullmatch, ids))
        and _only(inputs, dict)
        and _only(outputs, dict)
        and _only(flags, list)
        and _only(chain.from_iterable(flags), str)
    ):
        return None
    return columns


def _encode(column: tuple[Any, ...], encode: Callable[[Any], bytes], field: str) -> list[str]:
    try:
        return list(map(bytes.decode, map(encode, column)))
    except (TypeError, ValueError):
        # Only strict JSON reaches here, so this is nesting beyond orjson's depth limit or a
        # caller's non-JSON object: find the record to name it.
        for index, value in enumerate(column):
            try:
                encode(value)
            except (TypeError, ValueError) as exc:
                raise SchemaError(
                    f"cannot be stored as canonical JSON ({exc}); expected plain JSON values nested at most 254 deep",
                    field=f"records[{index}].{field}",
                ) from exc
        raise


def _records(records: list[Any], source: bytes | None) -> Records:
    columns = _fast_check(records)
    if columns is None:
        for index, item in enumerate(records):
            _check_record(item, f"records[{index}]")
        columns = tuple(zip(*map(_fields_of, records))) if records else ((),) * len(RECORD_FIELDS)
    ids, ts, models, versions, shas, inputs, outputs, flags = columns
    inputs_text = _encode(inputs, _canonical, "inputs")
    outputs_text = _encode(outputs, _canonical, "outputs")
    flags_text = _encode(flags, orjson.dumps, "flags") if any(flags) else ["[]"] * len(flags)
    if source is not None and _may_hold_big_integers(inputs_text, outputs_text):
        # Decoded again, exactly, only for the rare batch holding a number of 1e18 or more.
        _refuse_big_integers(json.loads(source)["records"])
    lowered_shas = {sha: sha.lower() for sha in set(shas)}
    return Records(
        id=list(map(str.lower, ids)),
        # Integer timestamps are made floats here: SQLite cannot bind an integer over 2**63.
        ts=list(ts) if _only(ts, float) else list(map(float, ts)),
        model=list(models),
        version=list(versions),
        bundle_sha256=list(map(lowered_shas.__getitem__, shas)),
        inputs=inputs_text,
        outputs=outputs_text,
        flags=flags_text,
    )


def _refuse_big_integers(exact_records: list[dict[str, Any]]) -> None:
    # Only inputs and outputs are stored as sent; a huge ts is a float either way.
    for index, record in enumerate(exact_records):
        for key in ("inputs", "outputs"):
            found = inexact(record[key], f"records[{index}].{key}")
            if found:
                raise SchemaError(found[1], field=found[0])


def _may_hold_big_integers(*columns: list[str]) -> bool:
    text = "".join(chain.from_iterable(columns))
    # Canonical JSON has a '+' only in an exponent or inside a string, and a one-character
    # search runs at memchr speed; the regex looks only at batches that have one.
    return _EXPONENT_SIGN in text and _LARGE_NUMBER.search(text) is not None


def parse_batch(document: object, *, max_records: int, source: bytes | None = None) -> Batch:
    """Check a decoded JSON body against the batch schema; raise ``SchemaError`` naming the field.

    ``source`` is the body ``document`` was decoded from by orjson, if it was: orjson reads
    an integer beyond 64 bits as a float without a word, so a batch holding numbers that
    large is decoded again exactly from it, and such an integer is refused.
    """
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
    parsed = _records(records, source)
    counters = _counters(document["counters"]) if document.get("counters") is not None else None
    return Batch(batch_id=batch_id, records=parsed, counters=counters)


def _counters(raw: object) -> Counters:
    if not isinstance(raw, dict):
        raise SchemaError(f"expected an object {{{', '.join(COUNTER_KEYS)}, ...}}, got {_type_name(raw)}", field="counters")
    missing = [key for key in COUNTER_KEYS if key not in raw]
    if missing:
        raise SchemaError(
            f"missing {', '.join(repr(k) for k in missing)}; expected at least {list(COUNTER_KEYS)}", field="counters"
        )
    if len(raw) > MAX_COUNTERS:
        raise SchemaError(f"{len(raw)} counters; at most {MAX_COUNTERS} are kept per device", field="counters")
    for name in raw:
        if not isinstance(name, str) or not COUNTER_NAME.fullmatch(name):
            raise SchemaError(
                f"counter name {name!r:.80} is not allowed; expected snake_case: a lower-case letter, then up to 63 "
                "lower-case letters, digits or _",
                field="counters",
            )
    values = {name: _count(value, f"counters.{name}") for name, value in raw.items()}
    return Counters(
        dropped=values.pop("dropped"),
        sampled_out=values.pop("sampled_out"),
        dead_lettered=values.pop("dead_lettered"),
        extra=dict(sorted(values.items())),
    )
