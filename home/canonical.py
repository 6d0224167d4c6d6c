"""The canonical JSON text of a whole group of records at once: the fast path of the
MessagePack batch (``home.packed``).

What edgepack's runtime hands the buffer (scalar inputs; outputs whose keys are text,
with scalar values or one level of probabilities keyed all by text or all by integers)
is checked by msgspec's typed decoding, in C, instead of a type check per value in
Python: a group whose records all decode against ``_PLAIN`` needs no further check
before orjson writes it. Anything else (bin, timestamps, nested containers, keys of
mixed types) decodes to ``None`` here and takes the general path record by record.

orjson then writes all the group's inputs (or outputs) in one call, and the text is cut
into records at ``},{``. That cut is exact when the text holds exactly one ``},{`` per
boundary: a record's own text holds none unless a string in it does (in an object a
value is followed by ``,`` and a key, never by ``{``; and these records hold no arrays
of objects), and one more found means a string holds it, so those are written one by
one instead. Each piece is then the text one ``orjson.dumps`` of that record would make.

A group's inputs, the bulk of a record, take a cheaper way still (``plain_inputs``): no
dict per record, but an instance of a struct made once per list of input names, its
fields the names in sorted order, written by msgspec's JSON encoder (about 1.5 µs per
31-input record less than dicts and orjson). msgspec writes what orjson writes, byte for
byte, with one exception, which is checked for: a float with a positive exponent
(msgspec ``1e16``, orjson ``1e+16``). A group whose text holds a digit, ``e``, a digit
(such a float, or a string or name that looks like one) is written by orjson instead; so
is one whose text holds a ``}`` beyond the one closing each record (a string holding one),
or whose names msgspec does not take as field names (ones holding ``"``, a backslash or a
control character).
"""

from __future__ import annotations

import re
from functools import lru_cache
from operator import itemgetter
from typing import Any, Union

import msgspec
import orjson

Scalar = Union[str, int, float, bool, None]
_PLAIN = tuple(
    msgspec.msgpack.Decoder(list[tuple[list[Scalar], dict[str, Union[Scalar, dict[key, Scalar]]], list[str]]])  # type: ignore[valid-type]
    for key in (str, int)
)
"""Records whose probabilities (or other inner maps) are keyed by text, or by integers."""
_BOUNDARY = "},{"
_json_encode = msgspec.json.Encoder().encode
_ORJSON_DIFFERS = re.compile(rb"e(?<=[0-9]e)[0-9]")
"""Where msgspec's JSON may differ from orjson's: a positive exponent (``1e16``, not ``1e+16``).
Written to start with its literal ``e``, which ``re`` finds by a fast scan (twenty times
faster than a pattern starting with the class ``[0-9]``)."""


def decode_plain(raw: bytes) -> list[Any] | None:
    """A group's records if every one is plain (see the module docstring), else None (the
    general decoder then says what is wrong, if anything is)."""
    for decoder in _PLAIN:
        try:
            return decoder.decode(raw)
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
            continue
    return None


def texts(objects: list[dict[Any, Any]], option: int) -> list[str]:
    """``orjson.dumps(o, option=option).decode()`` of each of ``objects``, from one call."""
    if not objects:
        return []
    parts = orjson.dumps(objects, option=option).decode()[2:-2].split(_BOUNDARY)
    if len(parts) != len(objects):
        return [orjson.dumps(o, option=option).decode() for o in objects]  # a string holds "},{"
    return ["{" + part + "}" for part in parts]


def sorted_names(names: list[str]) -> tuple[list[str], itemgetter[Any]] | None:
    """(the names sorted, a picker of a record's values in that order) for unique names
    (more than one), else None: with them orjson writes each record without sorting its
    keys, the same text as ``OPT_SORT_KEYS``, the order worked out once per group."""
    if len(names) > 1 and len(set(names)) == len(names):
        order = sorted(range(len(names)), key=names.__getitem__)
        return [names[i] for i in order], itemgetter(*order)
    return None


@lru_cache(maxsize=256)
def _inputs_struct(names: tuple[str, ...]) -> tuple[type[msgspec.Struct], itemgetter[Any]] | None:
    """A struct whose JSON is a record's inputs object (fields: the names, sorted) and the
    picker of a record's values in that order; None where msgspec refuses the names."""
    if (ordered := sorted_names(list(names))) is None:
        return None
    keys, pick = ordered
    fields = [f"f{i}" for i in range(len(keys))]  # a key may be any text; a field is an identifier
    try:
        struct = msgspec.defstruct("Inputs", [(f, Any) for f in fields], rename=dict(zip(fields, keys)), gc=False)
    except (TypeError, ValueError):
        return None
    return struct, pick


def _struct_texts(names: list[str], records: list[Any]) -> list[str] | None:
    """``plain_inputs`` through a struct per record and msgspec (see the module docstring),
    or None where that text could differ from orjson's."""
    made = _inputs_struct(tuple(names))
    if made is None:
        return None
    struct, pick = made
    data = _json_encode([struct(*pick(record[0])) for record in records])
    if _ORJSON_DIFFERS.search(data) is not None:
        return None
    # [{...},{...}]: each record's text ends at its only "}" (inputs hold no objects).
    parts = data.decode().split("}")
    if len(parts) != len(records) + 1:
        return None  # a string holds "}"
    return [part[1:] + "}" for part in parts[:-1]]


def plain_inputs(names: list[str], records: list[Any]) -> list[str]:
    """The inputs of plain records as canonical JSON (sorted keys), one text per record."""
    if records and (fast := _struct_texts(names, records)) is not None:
        return fast
    if (ordered := sorted_names(names)) is not None:
        keys, pick = ordered
        return texts([dict(zip(keys, pick(record[0]))) for record in records], 0)
    return texts([dict(zip(names, record[0])) for record in records], orjson.OPT_SORT_KEYS)


def plain_outputs(records: list[Any]) -> list[str]:
    """The outputs of plain records as canonical JSON (sorted keys, integer keys as text)."""
    return texts([record[1] for record in records], orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
