"""How a record's values become bytes on disk and JSON on the wire.

On disk a record is its input *values*, outputs and flags as one MessagePack array of
three (``[values, outputs, flags]``), written and read by msgspec; the input names,
model, version and bundle hash are stored once per "context" row (the names as a
MessagePack array) and shared, which halves a 31-feature row. Packing is done by
``record()`` in the application's thread (one msgspec call, ~0.4 µs); a 31-float row is
~330 bytes, half its JSON. The writer stores a commit group's payloads as one chunk
(``telemetry.chunks``) without re-encoding them. JSON is produced at sync time with
orjson, when the device is online and sending anyway.

Why MessagePack through msgspec, not marshal (schema 1): the file may be damaged, and a
damaged or hostile blob must never make the decoder allocate what the blob does not
hold. msgspec checks every declared array, map, string and binary length against the
bytes that remain before it allocates (a five-byte blob declaring 2**31-1 items is
refused in microseconds as truncated), bounds nesting, and validates the payload's shape
(an array of three: array, map, array) in C. Any failure is a ``PayloadError``, which the
sync service dead-letters. Schema 1 files are converted
once at open by ``telemetry.migration`` with a bounded marshal reader
(``telemetry.legacy``), never with ``marshal.loads``.

Values the application hands over may be numpy scalars or arrays: they are converted by
duck typing (``.tolist()`` / ``.item()``) so that numpy is never imported here. Anything
else JSON cannot express is sent as its ``str()``, and non-finite floats (NaN, ±inf,
which strict JSON has no literal for) as ``null``: telemetry keeps the record rather than
dropping it over a value it cannot represent exactly.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec
import orjson

_msgpack_encode = msgspec.msgpack.Encoder().encode
_payload_decoder = msgspec.msgpack.Decoder(tuple[tuple[Any, ...], dict[Any, Any], tuple[Any, ...]])
_names_decoder = msgspec.msgpack.Decoder(tuple[str, ...])


class PayloadError(ValueError):
    """A stored blob is not what ``pack`` or ``pack_names`` wrote (damaged or hostile)."""


_encoder = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=True)


def plain(value: Any) -> Any:
    """``value`` with only JSON types inside (dict with str keys, list, str, int, float, bool, None)."""
    if value is None or type(value) in (str, bool, int):
        return value
    if isinstance(value, bool):  # before int: bool is an int
        return bool(value)
    if isinstance(value, int):  # enums and other int subclasses
        return int(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, float):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {_key(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    tolist = getattr(value, "tolist", None)
    if callable(tolist):  # numpy arrays and numpy scalars
        return plain(tolist())
    item = getattr(value, "item", None)
    if callable(item):
        return plain(item())
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    return str(value)


def _key(key: Any) -> str:
    if isinstance(key, str):
        return str(key)
    item = getattr(key, "item", None)
    if callable(item):
        key = item()
    if isinstance(key, bool):
        return "true" if key else "false"  # what json.dumps does with a bool key
    return str(key)


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _native(value: Any) -> bool:
    """True if ``value`` holds only builtin JSON-like types, exactly (no subclasses)."""
    kind = type(value)
    if kind in _SCALARS:
        return True
    if kind is dict:
        return _SCALARS.issuperset(map(type, value)) and all(map(_native, value.values()))
    if kind is list or kind is tuple:
        return all(map(_native, value))
    return False


def _flat(mapping: dict[Any, Any]) -> bool:
    # The common case, checked at C speed: a dict of plain scalars (31 features: ~0.5 µs).
    return _SCALARS.issuperset(map(type, mapping)) and _SCALARS.issuperset(map(type, mapping.values()))


def names_of(names: Iterable[Any]) -> tuple[str, ...]:
    """The input names as stored once per context: str keys, in the mapping's order."""
    names = tuple(names)
    if all(type(name) is str for name in names):
        return names
    return tuple(_key(name) for name in names)


def _plain_outputs(outputs: dict[Any, Any]) -> bool:
    # What the runtime hands over: scalars, plus one flat dict (probabilities) or list.
    for value in outputs.values():
        kind = type(value)
        if kind in _SCALARS:
            continue
        if kind is dict:
            if not _flat(value):
                return False
        elif kind is list or kind is tuple:
            if not _SCALARS.issuperset(map(type, value)):
                return False
        else:
            return False
    return _SCALARS.issuperset(map(type, outputs))


def _refuse(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is normalised first")


_strict_encode = msgspec.msgpack.Encoder(enc_hook=_refuse).encode
"""Encodes what msgspec takes natively and refuses the rest (numpy values, mappings that
are not dicts, ints beyond 64 bits), which ``plain`` normalises first."""


def pack(values: tuple[Any, ...], outputs: dict[str, Any], flags: tuple[str, ...]) -> bytes:
    """The on-disk blob for one record: its input values (names live in the context
    table, once), its outputs and flags. Never fails: what cannot be encoded exactly is
    kept as text."""
    # One encoder call, no type checks first: it runs in record(), on the application's
    # thread, for every record (checking 31 values' types first cost 4x the encoding).
    # What msgspec encodes natively beyond JSON keeps msgspec's form (a datetime, a UUID,
    # an Enum's value); numpy scalars and arrays, which it refuses, go through ``plain``.
    try:
        return _strict_encode((values, outputs, flags))
    except (TypeError, OverflowError, ValueError, RecursionError):
        pass
    try:
        return _msgpack_encode((plain(values), plain(outputs), plain(flags)))
    except Exception:  # noqa: BLE001 - too deep, an int beyond 64 bits, a broken __str__
        # Keep the record in a degraded form rather than lose it or fail the caller.
        return _msgpack_encode((
            [_text(v) for v in values], {_text(k): _text(v) for k, v in outputs.items()}, [_text(f) for f in flags],
        ))


def _text(value: Any) -> Any:
    if type(value) is str:  # a lone surrogate, which UTF-8 cannot encode, is kept as its escape
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if value is None or type(value) in (bool, float) or (type(value) is int and -(2**63) <= value < 2**64):
        return value
    try:
        return _text(str(value)[:10_000])
    except Exception:  # noqa: BLE001 - a broken __str__
        return f"<unprintable {type(value).__name__}>"


_context_decoder = msgspec.msgpack.Decoder(tuple[str, str, str, tuple[str, ...]])


def pack_context(model: str, version: str, bundle_sha256: str, names: tuple[Any, ...]) -> bytes:
    """A record context (model, version, bundle hash, input names as ``names_of`` stores
    them) as the bytes ``record()`` queues with each of its records, for the writer.

    Bytes, not the tuple of the four: CPython's cyclic garbage collector untracks a
    tuple only once nothing in it is tracked, and the context's tuple (holding the names'
    tuple) stayed tracked until a full collection; so did every queued record holding
    it. Each collection then walked the queued records and moved them on to the oldest
    generation, whose full collections walk the whole queue. A record of bytes, a str
    and a float is untracked by the first young collection. Raises
    ``UnicodeEncodeError`` for text that is not UTF-8 (a lone surrogate)."""
    return _msgpack_encode((model, version, bundle_sha256, names_of(names)))


def unpack_context(blob: bytes) -> tuple[str, str, str, tuple[str, ...]]:
    """``(model, version, bundle_sha256, names)`` from ``pack_context``'s bytes."""
    return _context_decoder.decode(blob)


def pack_names(names: tuple[str, ...]) -> bytes:
    """The blob of a context's input names (part of the context's unique key)."""
    return _msgpack_encode(names)


def unpack_names(blob: bytes) -> tuple[str, ...]:
    """A context's input names; ``PayloadError`` if the blob is not an array of str."""
    try:
        return _names_decoder.decode(blob)
    except (msgspec.DecodeError, RecursionError, MemoryError) as exc:
        raise PayloadError(f"stored input names are unreadable: {exc}") from exc


def unpack(names: tuple[str, ...], blob: bytes) -> tuple[dict[str, Any], Any, Any]:
    """``(inputs, outputs, flags)`` from a context's names and a blob written by ``pack``.

    ``PayloadError`` (a ``ValueError``) for anything else: msgspec refuses declared
    lengths beyond the blob before allocating, nesting beyond its limit, and shapes other
    than ``[array, map, array]``."""
    try:
        values, outputs, flags = _payload_decoder.decode(blob)
    except (msgspec.DecodeError, RecursionError, MemoryError, TypeError) as exc:
        raise PayloadError(f"stored record payload is unreadable: {exc}") from exc
    if len(values) != len(names):
        raise PayloadError(f"{len(values)} input values for {len(names)} input names")
    return dict(zip(names, values)), outputs, flags


def payload_ok(blob: Any) -> bool:
    """True if ``blob`` is a payload as ``pack`` writes it (bounded decode, nothing kept)."""
    try:
        _payload_decoder.decode(blob)
    except (msgspec.DecodeError, RecursionError, MemoryError, TypeError):
        return False
    return True


def to_json(obj: Any) -> str:
    """Compact strict JSON for ``obj``, normalising only when the fast path refuses."""
    try:
        return _encoder.encode(obj)
    except (TypeError, ValueError):
        return _encoder.encode(plain(obj))


_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS  # probabilities are keyed by class label: 0, 1, ...


def to_json_bytes(obj: Any) -> bytes:
    """Compact strict JSON for ``obj`` as UTF-8, the way sync sends records.

    orjson does it ~15x faster than the json module (float formatting dominates a
    31-feature record); non-finite floats become ``null``. What orjson refuses (integers
    beyond 64 bits, unusual key types) goes through ``to_json``'s normalising path.
    """
    try:
        return orjson.dumps(obj, option=_ORJSON_OPTIONS)
    except TypeError:
        return to_json(obj).encode()
