"""``predict_batch`` of a few rows of numpy columns, handed to the row path as row dicts.

The column path pays ~50 µs of numpy setup whatever the row count; the row path's
validation costs a few µs per row. So a small batch of plain numpy columns (numbers in
numeric features, strings in string features) becomes row dicts, and anything else (lists,
object arrays of other things, pandas, mismatched lengths) goes to the column path, which
validates it and explains what is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

SMALL_BATCH = 8
"""``predict_batch`` of at most this many rows of numpy columns takes the row path."""

ColumnKinds = Sequence[tuple[str, bool]]
"""(feature name, numeric?) of every feature, in the schema's order."""


def one_row(columns: Mapping[str, Any], kinds: ColumnKinds, strict: bool) -> dict[str, Any] | None:
    """A batch of exactly one row as a row dict, or None."""
    if type(columns) is not dict or (strict and len(columns) != len(kinds)):
        return None
    row = {}
    for name, numeric in kinds:
        col = columns.get(name)
        if type(col) is not np.ndarray or col.ndim != 1 or len(col) != 1:
            return None
        value = col.item()
        if numeric:
            if col.dtype.kind not in "fiu":
                return None
        elif type(value) is not str:  # a str from a 'U' array, or a str in an object array
            return None
        row[name] = value
    return row


def few_rows(columns: Mapping[str, Any], kinds: ColumnKinds, strict: bool) -> list[dict[str, Any]] | None:
    """A batch of at most ``SMALL_BATCH`` rows as row dicts, or None."""
    if type(columns) is not dict or (strict and len(columns) != len(kinds)):
        return None
    lists = []
    n = -1
    for name, numeric in kinds:
        col = columns.get(name)
        if type(col) is not np.ndarray or col.ndim != 1:
            return None
        kind = col.dtype.kind
        if numeric:
            if kind not in "fiu":
                return None
        elif kind != "U" and not (kind == "O" and len(col) <= SMALL_BATCH and all(type(v) is str for v in col)):
            return None
        if n < 0:
            n = len(col)
            if not 0 < n <= SMALL_BATCH:
                return None
        elif len(col) != n:
            return None
        lists.append(col.tolist())
    names = [name for name, _ in kinds]
    return [dict(zip(names, values)) for values in zip(*lists)]
