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
"""

from __future__ import annotations

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
    text = orjson.dumps(objects, option=option).decode()
    if text.count(_BOUNDARY) != len(objects) - 1:
        return [orjson.dumps(o, option=option).decode() for o in objects]  # a string holds "},{"
    return ["{" + part + "}" for part in text[2:-2].split(_BOUNDARY)]


def sorted_names(names: list[str]) -> tuple[list[str], itemgetter[Any]] | None:
    """(the names sorted, a picker of a record's values in that order) for unique names
    (more than one), else None: with them orjson writes each record without sorting its
    keys, the same text as ``OPT_SORT_KEYS``, the order worked out once per group."""
    if len(names) > 1 and len(set(names)) == len(names):
        order = sorted(range(len(names)), key=names.__getitem__)
        return [names[i] for i in order], itemgetter(*order)
    return None


def plain_inputs(names: list[str], records: list[Any]) -> list[str]:
    """The inputs of plain records as canonical JSON (sorted keys), one text per record."""
    if (ordered := sorted_names(names)) is not None:
        keys, pick = ordered
        return texts([dict(zip(keys, pick(record[0]))) for record in records], 0)
    return texts([dict(zip(names, record[0])) for record in records], orjson.OPT_SORT_KEYS)


def plain_outputs(records: list[Any]) -> list[str]:
    """The outputs of plain records as canonical JSON (sorted keys, integer keys as text)."""
    return texts([record[1] for record in records], orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
