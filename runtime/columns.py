"""The column path of ``InputSchema``: ``predict_batch`` validates and packs whole columns
(numpy arrays or lists) at once, checking ranges and categories per block instead of per
value, and names the first offending row when a value is refused."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import InputError
from .features import FIT, FLOAT_MAX, PLAIN_NUMBERS, PLAIN_STRINGS, Feature, Flags, PackedInput, reserved
from .input_errors import extra_error, fit_error, missing_text, reserved_error, unseen_error


class ColumnPacking:
    """Mixed into ``InputSchema``, whose tables it reads (``features``, ``packed``, ``names``,
    ``groups``, ``assemble``, ``_block_checks``, ``_categories``, ``_name_set``) and whose row-path checks it
    shares (``_coerce``); its messages are ``runtime.input_errors``."""

    def pack_columns(self, columns: Mapping[str, Any], strict: bool) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[int, Flags]]:
        """Validate columnar input; return packed feeds, the per-feature arrays and the flags
        of the rows that have any, by row index.

        Checks run once per packed input on the whole ``(N, width)`` block, not per column,
        so a one-row batch costs a handful of numpy calls whatever the feature count.
        """
        if not isinstance(columns, Mapping):
            raise InputError(
                f"predict_batch expects a mapping of feature name -> 1-D array, got {type(columns).__name__}"
            )
        if missing := [n for n in self.names if n not in columns]:
            raise InputError(missing_text(missing, self.names), feature=missing[0])
        if strict and (extra := sorted(set(columns) - self._name_set, key=str)):
            raise extra_error(extra, self.names)
        n: int | None = None
        cols: dict[str, Any] = {}
        for f in self.features:
            col = columns[f.name]
            if hasattr(col, "to_numpy") and not isinstance(col, np.ndarray):
                col = col.to_numpy()
            if isinstance(col, (str, bytes)) or not hasattr(col, "__len__"):
                raise InputError(
                    f"feature {f.name!r} must be a 1-D array or list of values, got {type(col).__name__}", feature=f.name
                )
            if isinstance(col, np.ndarray) and col.ndim != 1:
                raise InputError(
                    f"feature {f.name!r} must be a 1-D array of shape (N,), got shape {col.shape}", feature=f.name
                )
            length = len(col)
            if n is None:
                n = length
            elif length != n:
                first = self.features[0].name
                raise InputError(
                    f"feature {f.name!r} has {length} values but {first!r} has {n}; every column must have the same length",
                    feature=f.name,
                )
            cols[f.name] = col
        if not n:
            raise InputError("expected at least one row, got empty columns")

        feeds: dict[str, np.ndarray] = {}
        arrays: dict[str, np.ndarray] = {}
        flagged: dict[int, Flags] = {}
        # Positions in a group's block are the features' order in it (their slots, unless
        # encoded features share the packed input: runtime.layout).
        for p, checks in zip(self.groups, self._block_checks):
            if p.dtype is object:
                block = np.empty((n, p.width), dtype=object)
                for k, f in enumerate(p.features):
                    block[:, k] = self._string_column(f, cols[f.name], strict, flagged)
                    arrays[f.name] = block[:, k]
                feeds[p.name] = block
            else:
                values = np.empty((n, p.width), dtype=np.float64)
                for k, f in enumerate(p.features):
                    column = self._numeric_column(f, cols[f.name], strict)
                    try:
                        values[:, k] = column
                    except (OverflowError, TypeError, ValueError):  # e.g. an int beyond float64
                        values[:, k] = self._numeric_elements(f, column)
                    arrays[f.name] = values[:, k]
                self._check_block(p, checks, values, strict, flagged)
                if self.assemble is None:  # with encoded features the feeds are assembled below
                    feeds[p.name] = values.astype(p.dtype)
        if self.assemble is not None:
            feeds = self._encoded_feeds(n, arrays)
        return feeds, arrays, flagged

    def _encoded_feeds(self, n: int, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The packed inputs of a bundle with encoded features, from the validated columns."""
        feeds: dict[str, np.ndarray] = {}
        for p in self.packed:
            block = np.empty((n, p.width), dtype=p.dtype)
            for f in p.features:
                if f.encoding is None:
                    block[:, f.slot] = arrays[f.name]
                else:
                    block[:, f.slot : f.slot + f.width] = f.encoding.block(arrays[f.name], p.dtype)
            feeds[p.name] = block
        return feeds

    def _block_check_table(self, p: PackedInput) -> tuple[Any, ...]:
        """Per-slot vectors for the block checks of one numeric packed input."""
        not_nullable = np.array([not f.nullable or f.dtype == "int64" for f in p.features])
        lo = np.array([f.range[0] if f.range is not None and f.categories is None else -math.inf for f in p.features])
        hi = np.array([f.range[1] if f.range is not None and f.categories is None else math.inf for f in p.features])
        categorical = tuple((k, f) for k, f in enumerate(p.features) if f.categories is not None)
        fit = np.array([FIT[f.dtype] for f in p.features])
        return not_nullable, lo, hi, categorical, fit

    def _check_block(self, p: PackedInput, checks: tuple[Any, ...], values: np.ndarray, strict: bool, flagged: dict[int, Flags]) -> None:
        not_nullable, lo, hi, categorical, fit = checks
        too_big = np.abs(values) > fit
        if too_big.any():
            i, j = (int(x) for x in np.argwhere(too_big)[0])
            raise fit_error(p.features[j], values[i, j].item()).at_row(i)
        nan = np.isnan(values)
        if nan.any():
            bad = nan & not_nullable
            if bad.any():
                i, j = (int(x) for x in np.argwhere(bad)[0])
                f = p.features[j]
                raise InputError(
                    f"feature {f.name!r} is not nullable but got a missing value (null/None/NaN); expected {f.expected}",
                    feature=f.name,
                    row=i,
                )
        if p.dtype is np.int64:
            fractional = values != np.round(values)
            if fractional.any():
                i, j = (int(x) for x in np.argwhere(fractional)[0])
                f = p.features[j]
                raise InputError(f"feature {f.name!r} expects an integer, got {values[i, j]!r}; expected {f.expected}", feature=f.name, row=i)
        outside = (values < lo) | (values > hi)
        if outside.any():
            for i, j in zip(*(idx.tolist() for idx in np.nonzero(outside))):
                flagged.setdefault(i, []).append(f"out_of_range:{p.features[j].name}")
        for k, f in categorical:
            col = values[:, k]
            unseen = ~np.isin(col, np.asarray(f.categories, dtype=np.float64)) & ~np.isnan(col)
            for i in np.flatnonzero(unseen).tolist():
                if strict:
                    raise unseen_error(f, col[i].item()).at_row(i)
                flagged.setdefault(i, []).append(f"unseen_category:{f.name}")

    def _numeric_column(self, f: Feature, col: Any, strict: bool) -> Any:
        kind = col.dtype.kind if isinstance(col, np.ndarray) else "O"
        if kind in "fiu":
            return col
        if kind != "O":
            first = col[0] if len(col) else None
            raise InputError(
                f"feature {f.name!r} expects numbers, got an array of {col.dtype} (first value {first!r}); expected {f.expected}",
                feature=f.name,
            )
        if set(map(type, col)) <= PLAIN_NUMBERS:
            return col
        return self._numeric_elements(f, col)

    def _numeric_elements(self, f: Feature, col: Any) -> np.ndarray:
        out = np.empty(len(col), dtype=np.float64)
        for i, v in enumerate(col):
            if type(v) is float or (type(v) is int and -FLOAT_MAX <= v <= FLOAT_MAX):
                out[i] = v
                continue
            try:
                v = self._coerce(f, v, False, [], None)
            except InputError as exc:
                raise exc.at_row(i) from None
            out[i] = math.nan if v is None else v
        return out

    def _string_column(self, f: Feature, col: Any, strict: bool, flagged: dict[int, Flags]) -> Any:
        kind = col.dtype.kind if isinstance(col, np.ndarray) else "O"
        if kind in "US":
            col = col.astype(str).astype(object)
        elif kind != "O":
            first = col[0] if len(col) else None
            raise InputError(
                f"feature {f.name!r} expects strings, got an array of {col.dtype} (first value {first!r}); expected {f.expected}",
                feature=f.name,
            )
        if (absent := reserved(f)) is not None and absent in col:
            raise reserved_error(f, absent).at_row(list(col).index(absent))
        if kind == "O" and not set(map(type, col)) <= PLAIN_STRINGS:
            fixed = np.empty(len(col), dtype=object)
            for i, v in enumerate(col):
                if type(v) is not str:
                    try:
                        v = self._coerce(f, v, False, [], None)
                    except InputError as exc:
                        raise exc.at_row(i) from None
                fixed[i] = v
            col = fixed
        if f.categories is not None:
            cats = self._categories[f.name]
            if not all(map(cats.__contains__, col)):
                label = f"unseen_category:{f.name}"
                for i, v in enumerate(col):
                    if v not in cats and not (f.nullable and v == f.missing_string):  # a missing value is no category
                        if strict:
                            raise unseen_error(f, v).at_row(i)
                        flagged.setdefault(i, []).append(label)
        return col
