"""The MessagePack batch (``application/vnd.edgepack.batch.v1+msgpack``): what edgepack
devices send, checked and turned into the same ``Batch`` a JSON body becomes.

The layout follows the device's buffer (``telemetry.chunks``): records travel in groups
that share a context, with the ids and timestamps of a group packed together and each
record as the ``[values, outputs, flags]`` array the device stored::

    {"batch_id": str,
     "groups": [{"model": str, "version": str, "bundle_sha256": str,
                 "inputs": [name, ...],            # once per group
                 "ids": str,                       # 36-character UUIDs, concatenated
                 "ts": bin,                        # little-endian float64, 8 bytes each
                 "records": [[[value, ...], {output: value}, [flag, ...]], ...]}],
     "counters": {name: int} | absent}

Decoding is msgspec's, in C, against typed structs: every declared length is checked
against the bytes present before anything is allocated, unknown keys and wrong types are
refused with the exact path (``$.groups[0].records[3][1]``). It runs in two steps: the
envelope first, with each group's records left as raw bytes, so that the record count
(ids and timestamps say how many) is checked against ``max_records`` before a single
record is decoded. A group of plain records (what the runtime hands over: scalar inputs,
probabilities keyed by text or integers) is decoded typed and written by one orjson call
(``home.canonical``); any other group record by record, below. Both store the same text.

What is stored is today's canonical form (``home.schema``): inputs as the JSON object of
names to values, outputs and flags as JSON, sorted keys, compact. The conversion is the
one a JSON body of the same records goes through (a device that falls back to JSON sends
exactly what orjson makes of its stored values, which the collector re-encodes with
sorted keys), so the same record sent in either format is stored byte for byte the same,
and a replay in the other format is a duplicate. Like the device's JSON, non-finite floats
become ``null``, binary values their hex text, and map keys their JSON text.
"""

from __future__ import annotations

import math
import re
import struct
from typing import Any

import msgspec
import orjson

from .canonical import decode_plain, plain_inputs, plain_outputs, sorted_names
from .errors import MalformedBody, SchemaError
from .schema import (
    CANONICAL_UUID,
    SHA256_HEX,
    Batch,
    Records,
    _counters,
    _text,
)

ID_LENGTH = 36
UUIDS = re.compile(f"(?:{CANONICAL_UUID.pattern})*")
"""Any number of UUIDs, concatenated: one match checks a group's ``ids``."""
_SORT = orjson.OPT_SORT_KEYS
_NON_STR = orjson.OPT_NON_STR_KEYS
_SORT_NON_STR = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
_SCALARS = frozenset({str, int, float, bool, type(None)})
_STR_KEYS = frozenset({str})
_INT_KEYS = frozenset({int})


class _Group(msgspec.Struct, forbid_unknown_fields=True):
    model: Any
    version: Any
    bundle_sha256: Any
    inputs: list[str]
    ids: str
    ts: bytes
    records: msgspec.Raw


class _Envelope(msgspec.Struct, forbid_unknown_fields=True):
    batch_id: Any
    groups: list[_Group]
    counters: Any = None


# Each byte of the body that may open a map or an array (an upper bound on how many it
# holds: a float's bytes may look like one too). A container costs Python 56-64 bytes
# whatever its size on the wire (one byte for an empty map), so a group may hold at most
# one per CONTAINER_BYTES bytes: that keeps what decoding allocates within a small multiple
# of the body (about 20x at worst, as for JSON), where a body of empty maps would cost 64x.
_CONTAINERS = bytes(1 if 0x80 <= b <= 0x9F or 0xDC <= b <= 0xDF else 0 for b in range(256))
CONTAINER_BYTES = 4
_envelope = msgspec.msgpack.Decoder(_Envelope)
_records = msgspec.msgpack.Decoder(list[tuple[list[Any], dict[Any, Any], list[str]]])
# Anything a value may hold decodes to plain Python; MessagePack extension types other
# than the timestamp (a datetime) stay ``Ext`` and are refused when encoding them.


def _decode(decoder: msgspec.msgpack.Decoder, data: Any, where: str) -> Any:
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise SchemaError(f"{exc} (in {where}); expected the layout of the MessagePack batch (docs/wire.md)") from exc
    except (msgspec.DecodeError, RecursionError) as exc:
        raise MalformedBody(f"body is not valid MessagePack ({exc}) in {where}; expected a MessagePack batch") from exc


def parse_packed(body: bytes, *, max_records: int) -> Batch:
    """Check a MessagePack batch body; raise ``MalformedBody`` (400) or ``SchemaError``
    (422) naming the place at fault."""
    if not body:
        raise MalformedBody("body is empty; expected a MessagePack batch object")
    if body[:1] in (b"{", b"["):
        raise MalformedBody(
            "body is not valid MessagePack: it looks like JSON; send JSON with Content-Type: application/json, "
            "or a MessagePack batch with this Content-Type"
        )
    envelope: _Envelope = _decode(_envelope, body, "the batch")
    batch_id = _text(envelope.batch_id, "batch_id")
    total = 0
    counts = []
    if len(envelope.groups) > max_records:
        raise SchemaError(
            f"batch has {len(envelope.groups)} groups; a group holds at least one record and at most {max_records} "
            "records are accepted per batch, send smaller batches",
            field="groups",
        )
    for g, group in enumerate(envelope.groups):
        if not group.ids:
            raise SchemaError("holds no records; expected at least one (leave an empty group out)", field=f"groups[{g}].ids")
        if len(group.ids) % ID_LENGTH:
            raise SchemaError(
                f"holds {len(group.ids)} characters, expected {ID_LENGTH} per record (UUIDs concatenated)",
                field=f"groups[{g}].ids",
            )
        count = len(group.ids) // ID_LENGTH
        if len(group.ts) != 8 * count:
            raise SchemaError(
                f"holds {len(group.ts)} bytes for {count} ids, expected 8 per record (little-endian float64)",
                field=f"groups[{g}].ts",
            )
        counts.append(count)
        total += count
    if total > max_records:
        raise SchemaError(
            f"batch has {total} records; at most {max_records} are accepted per batch, send smaller batches", field="groups"
        )
    raws = [bytes(group.records) for group in envelope.groups]
    _check_containers(raws, total)
    ids: list[str] = []
    ts: list[float] = []
    models: list[str] = []
    versions: list[str] = []
    shas: list[str] = []
    inputs: list[str] = []
    outputs: list[str] = []
    flags: list[str] = []
    for g, (group, count) in enumerate(zip(envelope.groups, counts)):
        where = f"groups[{g}]"
        model = _text(group.model, f"{where}.model")
        version = _text(group.version, f"{where}.version")
        sha = group.bundle_sha256
        if not isinstance(sha, str) or not SHA256_HEX.fullmatch(sha):
            raise SchemaError(f"expected the bundle's sha256 as 64 hex digits, got {sha!r:.80}", field=f"{where}.bundle_sha256")
        plain = decode_plain(raws[g])
        records = plain if plain is not None else _decode(_records, raws[g], f"{where}.records")
        if len(records) != count:
            raise SchemaError(f"holds {len(records)} records, but ids and ts hold {count}", field=f"{where}.records")
        if not UUIDS.fullmatch(group.ids):
            for i in range(count):
                record_id = group.ids[i * ID_LENGTH : (i + 1) * ID_LENGTH]
                if not CANONICAL_UUID.fullmatch(record_id):
                    raise SchemaError(
                        f"expected a UUID like '1b4e28ba-2fa1-41d2-883f-0016d3cca427', got {record_id!r}",
                        field=f"{where}.ids[{i}]",
                    )
        lowered = group.ids.lower()
        stamps = struct.unpack(f"<{count}d", group.ts)
        if not all(map(math.isfinite, stamps)):
            i = next(i for i, stamp in enumerate(stamps) if not math.isfinite(stamp))
            raise SchemaError(f"expected unix seconds UTC as a finite number, got {stamps[i]!r}", field=f"{where}.ts[{i}]")
        names = group.inputs
        width = len(names)
        for i, record in enumerate(records):
            if len(record[0]) != width:
                raise SchemaError(
                    f"holds {len(record[0])} input values for the group's {width} input names",
                    field=f"{where}.records[{i}][0]",
                )
        if plain is not None:
            inputs.extend(plain_inputs(names, records))
            outputs.extend(plain_outputs(records))
        else:
            inputs.extend(_canonical_inputs(names, records, where))
            outputs.extend(_canonical_outputs(records, where))
        flags.extend(orjson.dumps(record[2]).decode() if record[2] else "[]" for record in records)
        ids.extend([lowered[i : i + ID_LENGTH] for i in range(0, len(lowered), ID_LENGTH)])
        ts.extend(stamps)
        models.extend([model] * count)
        versions.extend([version] * count)
        shas.extend([sha.lower()] * count)
    counters = _counters(envelope.counters) if envelope.counters is not None else None
    columns = Records(
        id=ids, ts=ts, model=models, version=versions, bundle_sha256=shas, inputs=inputs, outputs=outputs, flags=flags
    )
    return Batch(batch_id=batch_id, records=columns, counters=counters)


def _check_containers(raws: list[bytes], records: int) -> None:
    # The layout itself opens 4 per record (the record, its values, outputs and flags);
    # beyond those, one per CONTAINER_BYTES bytes, over the whole batch.
    size = sum(map(len, raws))
    budget = size // CONTAINER_BYTES + 4 * records + 1024
    # The byte count is exact enough for records of numbers; text beyond ASCII (whose UTF-8
    # bytes look like container headers) is counted exactly, token by token.
    if sum(raw.translate(_CONTAINERS).count(1) for raw in raws) <= budget:
        return
    found = 0
    for raw in raws:
        found += containers(raw, budget - found)
        if found > budget:
            raise SchemaError(
                f"records hold over {budget} maps and arrays in {size} bytes (at most 4 per record and one per "
                f"{CONTAINER_BYTES} bytes beyond are decoded); expected records of scalar values, or send such "
                "records as JSON",
                field="groups",
            )


_FIXED = {0xC0: 1, 0xC2: 1, 0xC3: 1, 0xCA: 5, 0xCB: 9, 0xCC: 2, 0xCD: 3, 0xCE: 5, 0xCF: 9, 0xD0: 2, 0xD1: 3,
          0xD2: 5, 0xD3: 9, 0xD4: 3, 0xD5: 4, 0xD6: 6, 0xD7: 10, 0xD8: 18}
_SIZED = {0xC4: (1, 0), 0xC5: (2, 0), 0xC6: (4, 0), 0xC7: (1, 1), 0xC8: (2, 1), 0xC9: (4, 1), 0xD9: (1, 0),
          0xDA: (2, 0), 0xDB: (4, 0)}
"""Formats with a length field: (bytes of the length, bytes of an extension type after it)."""
_HEADERS = {0xDC: 3, 0xDD: 5, 0xDE: 3, 0xDF: 5}


def containers(data: bytes, limit: int) -> int:
    """How many maps and arrays ``data`` (MessagePack) opens, counted token by token (the
    tokens of any nesting follow one another), stopping once over ``limit``. Malformed
    data stops the count; the decoder then says what is wrong with it."""
    count = at = 0
    end = len(data)
    while at < end and count <= limit:
        byte = data[at]
        if byte < 0x80 or byte >= 0xE0:
            at += 1
        elif byte < 0xA0:
            count += 1
            at += 1
        elif byte < 0xC0:
            at += 1 + (byte & 0x1F)
        elif byte in _FIXED:
            at += _FIXED[byte]
        elif byte in _SIZED:
            width, extra = _SIZED[byte]
            at += 1 + width + extra + int.from_bytes(data[at + 1 : at + 1 + width], "big")
        elif byte in _HEADERS:
            count += 1
            at += _HEADERS[byte]
        else:
            break
    return count


def _canonical_inputs(names: list[str], records: list[Any], where: str) -> list[str]:
    out = []
    ordered = sorted_names(names)
    ordered_names, pick = ordered if ordered is not None else (names, None)
    for i, record in enumerate(records):
        values = record[0]
        if _SCALARS.issuperset(map(type, values)):
            # The common case: scalars under str names, one orjson call.
            if pick is not None:
                out.append(orjson.dumps(dict(zip(ordered_names, pick(values)))).decode())
            else:
                out.append(orjson.dumps(dict(zip(names, values)), option=_SORT).decode())
        else:
            out.append(_as_json_body_would(dict(zip(names, values)), f"{where}.records[{i}][0]"))
    return out


def _canonical_outputs(records: list[Any], where: str) -> list[str]:
    out = []
    for i, record in enumerate(records):
        outputs = record[1]
        if _plain_outputs(outputs):
            out.append(orjson.dumps(outputs, option=_SORT_NON_STR).decode())
        else:
            # Keys that are not all text (or all integers) may collide once written as text:
            # the JSON body's way, exactly.
            out.append(_as_json_body_would(outputs, f"{where}.records[{i}][1]"))
    return out


def _plain_outputs(outputs: dict[Any, Any]) -> bool:
    """Outputs whose keys, at both levels, are all str or all int (so no two collide as
    text, and orjson's sorted text keys are the JSON body's), with scalar values: what the
    runtime hands over (a prediction, probabilities keyed by class label)."""
    if not _STR_KEYS.issuperset(map(type, outputs)):
        return False
    for value in outputs.values():
        kind = type(value)
        if kind in _SCALARS:
            continue
        if kind is not dict or not _SCALARS.issuperset(map(type, value.values())):
            return False
        keys = set(map(type, value))
        if not (keys <= _STR_KEYS or keys <= _INT_KEYS):
            return False
    return True


def _as_json_body_would(value: Any, where: str) -> str:
    """``value`` stored the way it would be had the device sent it as JSON: the device's
    orjson encoding (non-str keys as text, NaN as null), read back, sorted keys."""
    try:
        sent = orjson.dumps(value, option=_NON_STR)
    except TypeError:
        try:
            sent = orjson.dumps(_plain(value, where), option=_NON_STR)
        except (TypeError, RecursionError) as exc:
            raise SchemaError(
                f"cannot be stored as canonical JSON ({exc}); expected plain values nested at most 254 deep", field=where
            ) from exc
    return orjson.dumps(orjson.loads(sent), option=_SORT).decode()


def _plain(value: Any, where: str) -> Any:
    """What the device's JSON encoder makes of values orjson refuses: bytes as hex text."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {_plain_key(k, where): _plain(v, where) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
    if isinstance(value, msgspec.msgpack.Ext):
        raise SchemaError(
            f"holds a MessagePack extension value (type {value.code}); expected JSON-like values "
            "(nil, bool, int, float, str, bin, array, map, timestamp)",
            field=where,
        )
    return value


def _plain_key(key: Any, where: str) -> Any:
    if isinstance(key, (bytes, bytearray, memoryview)):
        return bytes(key).hex()
    if isinstance(key, tuple):
        raise SchemaError("holds a map key that is an array; expected str, int, float, bool or nil keys", field=where)
    return key
