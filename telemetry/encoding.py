"""How a record's values become bytes on disk and JSON on the wire.

On disk a record is its input *values*, outputs and flags as one ``marshal`` blob
(format 2: no back-references, which format 3+ spend a hash lookup per object on); the
input names, model, version and bundle hash are stored once per "context" row and
shared, which halves a 31-feature row. Packing is done by ``record()`` in the
application's thread (~1 µs of marshal plus type checks); a 31-float row is ~360 bytes,
half its JSON. JSON is produced at sync time with orjson, when the device is online and
sending anyway. The blob is only ever read back by this
package from a file it wrote itself; marshal keeps reading older format versions, so a
Python upgrade with records still pending is fine.

Values the application hands over may be numpy scalars or arrays: they are converted by
duck typing (``.tolist()`` / ``.item()``) so that numpy is never imported here. Anything
else JSON cannot express is sent as its ``str()``, and non-finite floats (NaN, ±inf,
which strict JSON has no literal for) as ``null``: telemetry keeps the record rather than
dropping it over a value it cannot represent exactly.
"""

from __future__ import annotations

import json
import marshal
import math
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

MARSHAL_VERSION = 4
"""marshal format of the input names stored once per context (part of its unique key)."""

PAYLOAD_MARSHAL_VERSION = 2
"""marshal format of record payloads; ``marshal.loads`` reads every format."""

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


def pack(values: tuple[Any, ...], outputs: dict[str, Any], flags: tuple[str, ...]) -> bytes:
    """The on-disk blob for one record: its input values (names live in the context
    table, once), its outputs and flags."""
    # marshal writes anything with the buffer protocol (numpy scalars and arrays) as raw
    # bytes without complaint, so only exact builtin types may reach it unconverted. The
    # checks run in record(), on the application's thread, for every record, so the
    # common shapes are checked with C-level set operations first and only odd ones walk
    # the structure.
    if (
        _SCALARS.issuperset(map(type, values))
        and _SCALARS.issuperset(map(type, flags))
        and _plain_outputs(outputs)
    ) or (_native(values) and _native(outputs) and _native(flags)):
        return marshal.dumps((values, outputs, flags), PAYLOAD_MARSHAL_VERSION)
    return marshal.dumps((plain(values), plain(outputs), plain(flags)), PAYLOAD_MARSHAL_VERSION)


def unpack(names: tuple[str, ...], blob: bytes) -> tuple[dict[str, Any], Any, Any]:
    """``(inputs, outputs, flags)`` from a context's names and a blob written by ``pack``."""
    values, outputs, flags = marshal.loads(blob)
    if len(values) != len(names):
        raise ValueError(f"{len(values)} input values for {len(names)} input names")
    return dict(zip(names, values)), outputs, flags


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
