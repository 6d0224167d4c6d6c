"""The model's input contract, read once from the manifest: validation, guardrails, packing.

Everything a prediction needs is precomputed here at load time (per-input slot tables,
category sets, ranges, flag strings), so that the per-call path is one loop over the
features and one ``numpy.array`` per packed ONNX input.

Guardrail flags are strings ``"<kind>:<feature>"``:

- ``unseen_category:<feature>`` — a categorical value the training data never showed
  (the one-hot encoder would silently encode it as all zeros);
- ``out_of_range:<feature>`` — a numeric value outside the training ``range``;
- ``prediction_out_of_range`` — a regression prediction outside the training target range
  (added by the output side).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from itertools import chain
from operator import contains, eq, itemgetter, le
from typing import Any

import numpy as np

from .errors import InputError
from .columns import ColumnPacking
from .encodings import CARRIERS
from .layout import layout
from .features import ANY_VALUE, DTYPES, AllBut, reserved, FIT, PLAIN_NUMBERS, PLAIN_STRINGS, Feature, Flags, PackedInput, manifest_error, parse_feature
from .input_errors import check_extra, fit_error, missing_error, pack_error, reserved_error, unseen_error, value_error
from .session import ORT_DTYPES

# How the per-call loop treats a feature: the two common cases are inlined, all others
# (int64, numeric categories, numpy scalars, None) take the general path.
_REAL, _STR, _OTHER = 0, 1, 2


class InputSchema(ColumnPacking):
    """Validates and packs inputs for one model. Immutable after construction; thread-safe."""

    def __init__(self, manifest: Mapping[str, Any], session_inputs: Mapping[str, tuple[str, list[Any]]]) -> None:
        raw_inputs = manifest.get("inputs")
        if not isinstance(raw_inputs, list) or not raw_inputs:
            raise manifest_error("'inputs' must be a non-empty list of features")
        self.features: tuple[Feature, ...] = tuple(parse_feature(i, raw) for i, raw in enumerate(raw_inputs))
        self.names: tuple[str, ...] = tuple(f.name for f in self.features)
        if len(set(self.names)) != len(self.names):
            dupes = sorted({n for n in self.names if self.names.count(n) > 1})
            raise manifest_error(f"feature names must be unique; repeated: {', '.join(dupes)}")
        self._by_name = {f.name: f for f in self.features}
        self.packed: tuple[PackedInput, ...] = self._parse_packed(manifest.get("onnx_inputs"), session_inputs)
        # What the row path validates together: the features of one packed input that share a
        # dtype. Without encoded features (runtime.encodings) these are the packed inputs, and
        # a row's validated values are its feed values; with them, ``assemble`` makes the feed.
        self.groups, self.assemble = layout(self.packed)

        self._plans = tuple(tuple(self._plan(f) for f in p.features) for p in self.groups)
        self._fast = tuple(self._fast_plan(p, plan) for p, plan in zip(self.groups, self._plans))
        self._dtypes = tuple(p.dtype for p in self.packed)
        # A dtype instance spares numpy the type -> dtype lookup on every call.
        self._np_dtypes = tuple(np.dtype(p.dtype) for p in self.packed)
        self._input_names = tuple(p.name for p in self.packed)
        # Where each feature's value sits in the per-group value lists, in feature order.
        self._positions = tuple(
            next((k, g.features.index(f)) for k, g in enumerate(self.groups) if f in g.features) for f in self.features
        )
        # The same, as indexes into the groups' values laid end to end: picking them is one
        # C-level call per row (telemetry's exact path, for rows with a missing value).
        offsets = [sum(len(q.features) for q in self.groups[:k]) for k in range(len(self.groups))]
        flat = [offsets[i] + slot for i, slot in self._positions]
        picker = itemgetter(*flat)  # a manifest has at least one feature
        # itemgetter with one index returns the item itself, not a 1-tuple.
        self._pick_in_name_order: Callable[[list[Any]], tuple[Any, ...]] = (
            picker if len(flat) > 1 else lambda vals: (picker(vals),)
        )
        self._name_set = frozenset(self.names)
        # Where a missing string sits in input_values(), so telemetry records None, not the sentinel.
        self._missing_strings = tuple((i, f.missing_string) for i, f in enumerate(self.features) if f.dtype == "string" and f.nullable)
        self._categories = {f.name: frozenset(f.categories) for f in self.features if f.categories is not None}
        self._block_checks = tuple(self._block_check_table(p) if p.dtype is not object else () for p in self.groups)

    # -- load-time checks ---------------------------------------------------------------

    def _parse_packed(self, raw: Any, session_inputs: Mapping[str, tuple[str, list[Any]]]) -> tuple[PackedInput, ...]:
        if not isinstance(raw, list) or not raw:
            raise manifest_error("'onnx_inputs' must be a non-empty list of {name, dtype, width}")
        packed = []
        for i, item in enumerate(raw):
            if not isinstance(item, dict):
                raise manifest_error(f"onnx_inputs[{i}] must be an object with name, dtype, width")
            name, dtype, width = item.get("name"), item.get("dtype"), item.get("width")
            if not isinstance(name, str) or dtype not in DTYPES or not isinstance(width, int) or width < 1:
                raise manifest_error(f"onnx_inputs[{i}] must be {{name: str, dtype: one of {', '.join(DTYPES)}, width: int >= 1}}, got {item!r}")
            members = sorted((f for f in self.features if f.onnx_input == name), key=lambda f: f.slot)
            filled = [s for f in members for s in range(f.slot, f.slot + f.width)]
            if filled != list(range(width)):
                raise manifest_error(
                    f"onnx input {name!r} has width {width} but its features fill slots "
                    f"{filled}; expected each of 0..{width - 1} exactly once"
                )
            if bad := [f.name for f in members if f.encoding is None and f.dtype != dtype]:
                raise manifest_error(f"features {', '.join(bad)} are carried by {dtype} input {name!r} but declare another dtype")
            if bad := [f.name for f in members if f.encoding is not None and dtype not in CARRIERS]:
                raise manifest_error(
                    f"features {', '.join(bad)} are one-hot encoded into {dtype} input {name!r}; expected a "
                    f"{' or '.join(CARRIERS)} input"
                )
            if name not in session_inputs:
                raise manifest_error(f"onnx input {name!r} is not an input of model.onnx (it has: {', '.join(session_inputs)})")
            ort_type, shape = session_inputs[name]
            if ort_type != ORT_DTYPES[dtype]:
                raise manifest_error(f"onnx input {name!r} is {ort_type} in model.onnx, manifest says {dtype}")
            if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != width):
                raise manifest_error(f"onnx input {name!r} has shape {shape} in model.onnx, manifest says (N, {width})")
            packed.append(PackedInput(name=name, dtype=DTYPES[dtype], width=width, features=tuple(members)))
        names = [p.name for p in packed]
        if len(set(names)) != len(names):
            raise manifest_error("onnx_inputs names must be unique")
        if orphans := [f.name for f in self.features if f.onnx_input not in names]:
            raise manifest_error(f"features {', '.join(orphans)} name an onnx_input that 'onnx_inputs' does not list")
        if unfed := sorted(set(session_inputs) - set(names)):
            raise manifest_error(f"model.onnx inputs {', '.join(unfed)} are not described in 'onnx_inputs'")
        return tuple(packed)

    @staticmethod
    def _plan(f: Feature) -> tuple[Any, ...]:
        if f.dtype in ("float32", "float64") and f.kind == "numeric":
            code = _REAL
        elif f.dtype == "string":
            code = _STR
        else:
            code = _OTHER
        fit = FIT.get(f.dtype, math.inf)
        lo, hi = f.range if f.range is not None else (-fit, fit)
        cats = frozenset(f.categories) if f.categories is not None else None
        return (f.name, code, lo, hi, cats, f"out_of_range:{f.name}", f"unseen_category:{f.name}", f, fit)

    @staticmethod
    def _fast_plan(p: PackedInput, plan: tuple[tuple[Any, ...], ...]) -> tuple[Any, ...]:
        names = [f.name for f in p.features]
        get: Callable[[Mapping[str, Any]], Sequence[Any]]
        if len(names) == 1:
            only = names[0]
            get = lambda row: (row[only],)  # noqa: E731 - itemgetter of one key returns a bare value
        else:
            get = itemgetter(*names)
        codes = {step[1] for step in plan}
        if codes == {_REAL}:
            code, types = _REAL, PLAIN_NUMBERS
        elif codes == {_STR}:
            code, types = _STR, PLAIN_STRINGS
        else:
            code, types = _OTHER, frozenset()  # always the per-feature path
        los = tuple(step[2] for step in plan)
        his = tuple(step[3] for step in plan)
        cats = tuple(
            step[4] if step[4] is not None else AllBut(absent) if (absent := reserved(step[7])) is not None else ANY_VALUE
            for step in plan
        )
        return (get, code, types, los, his, cats, plan)

    def signature(self) -> tuple[tuple[str, str, str], ...]:
        """What must stay the same for a model to replace another without a schema change."""
        return tuple((f.name, f.dtype, f.kind) for f in self.features)

    def feature(self, name: str) -> Feature:
        return self._by_name[name]

    # -- one row --------------------------------------------------------------------------

    def row_values(self, row: Mapping[str, Any], strict: bool) -> tuple[list[Sequence[Any]], Flags]:
        """Validate one mapping; return the values of every packed input and the flags.

        The common case (every value present, of a plain type, in range and known) is
        checked per packed input with a few C-level passes; anything else takes the
        per-feature path, which finds the flags or the error.
        """
        flags: Flags = []
        out: list[Sequence[Any]] = []
        missing = False
        for get, code, types, los, his, cats, plan in self._fast:
            try:
                vals = get(row)
            except KeyError:
                vals = None
            if not (
                vals is not None
                and types.issuperset(map(type, vals))
                and (
                    (all(map(le, los, vals)) and all(map(le, vals, his)))
                    if code == _REAL
                    else all(map(contains, cats, vals))
                )
            ):
                vals, absent = self._slow_values(plan, row, strict, flags)  # a list
                missing = missing or absent
            # A group's values are a tuple only when they passed the checks above, so a
            # numeric tuple holds no NaN: telemetry (runtime/telemetry_hook.py) relies on it.
            out.append(vals)
        if missing:
            raise missing_error(row, self.names)
        if strict and len(row) != len(self.names):
            check_extra(row, self.names, self._name_set)
        return out, flags

    def feeds_of(self, values: Sequence[Sequence[Any]]) -> dict[str, np.ndarray]:
        """The ``(1, width)`` array of every packed input for one row's validated values."""
        return self.arrays_of(values if self.assemble is None else self.assemble(values))

    def arrays_of(self, feed: Sequence[Sequence[Any]]) -> dict[str, np.ndarray]:
        """The ``(1, width)`` array of every packed input for one row's feed values."""
        feeds: dict[str, np.ndarray] = {}
        for name, dtype, vals in zip(self._input_names, self._np_dtypes, feed):
            try:
                feeds[name] = np.array((vals,), dtype=dtype)
            except (OverflowError, TypeError, ValueError) as exc:
                p = next(p for p in self.packed if p.name == name)
                raise pack_error(p, vals, exc, assembled=self.assemble is not None) from exc
        return feeds

    def _slow_values(self, plan: tuple[tuple[Any, ...], ...], row: Mapping[str, Any], strict: bool, flags: Flags) -> tuple[list[Any], bool]:
        values: list[Any] = []
        append = values.append
        missing = False
        for name, code, lo, hi, cats, range_flag, unseen_flag, feature, fit in plan:
            try:
                v = row[name]
            except KeyError:
                missing = True
                append(None)
                continue
            t = type(v)
            if code == _REAL and (t is float or t is int):
                if not lo <= v <= hi:
                    if v != v:
                        if not feature.nullable:
                            raise value_error(row, feature, v, self.names)
                    elif not -fit <= v <= fit:
                        raise fit_error(feature, v)
                    else:
                        flags.append(range_flag)
            elif code == _STR and t is str:
                if (cats is None or v not in cats) and v == reserved(feature):
                    raise reserved_error(feature, v)
                if cats is not None and v not in cats:
                    if strict:
                        raise unseen_error(feature, v)
                    flags.append(unseen_flag)
            else:
                v = self._coerce(feature, v, strict, flags, row)
            append(v)
        return values, missing

    def pack_row(self, row: Mapping[str, Any], strict: bool) -> tuple[dict[str, np.ndarray], list[Sequence[Any]], Flags]:
        values, flags = self.row_values(row, strict)
        return self.feeds_of(values), values, flags

    def pack_rows(self, rows: Sequence[Any], strict: bool) -> tuple[dict[str, np.ndarray], list[list[Sequence[Any]]], list[Flags]]:
        per_input: list[list[Sequence[Any]]] = [[] for _ in self.packed]
        all_values: list[list[Sequence[Any]]] = []
        all_flags: list[Flags] = []
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise InputError(
                    f"expected a mapping of feature name -> value, got {type(row).__name__}", row=i
                )
            try:
                values, flags = self.row_values(row, strict)
            except InputError as exc:
                raise exc.at_row(i) from None
            for target, vals in zip(per_input, values if self.assemble is None else self.assemble(values)):
                target.append(vals)
            all_values.append(values)
            all_flags.append(flags)
        if not all_values:
            raise InputError("expected at least one row, got an empty sequence")
        try:
            feeds = {name: np.array(rows_, dtype=dt) for name, dt, rows_ in zip(self._input_names, self._dtypes, per_input)}
        except (OverflowError, TypeError, ValueError):
            for i, row in enumerate(rows):  # find the row and feature that does not fit
                try:
                    self.pack_row(row, strict)
                except InputError as exc:
                    raise exc.at_row(i) from None
            raise
        return feeds, all_values, all_flags

    def inputs_of(self, values: list[Sequence[Any]]) -> dict[str, Any]:
        """The validated values of one row by feature name, NaN as None (for telemetry)."""
        return dict(zip(self.names, self.input_values(values)))

    def input_values(self, values: list[Sequence[Any]]) -> tuple[Any, ...]:
        """The validated values of one row in ``names`` order, NaN (and a nullable string's
        ``missing_string``) as None (for telemetry)."""
        picked = self._pick_in_name_order(list(chain.from_iterable(values)))
        if self._missing_strings and any(picked[i] == absent for i, absent in self._missing_strings):
            listed = list(picked)
            for i, absent in self._missing_strings:
                if listed[i] == absent:
                    listed[i] = None
            picked = tuple(listed)
        if all(map(eq, picked, picked)):  # only NaN differs from itself
            return picked
        return tuple(None if v != v else v for v in picked)

    # -- columns --------------------------------------------------------------------------

    def _coerce(self, f: Feature, v: Any, strict: bool, flags: Flags, row: Mapping[str, Any] | None) -> Any:
        """Validate and convert one value that the inlined fast path did not handle."""
        is_missing = v is None or (isinstance(v, (float, np.floating)) and v != v)
        if f.dtype == "string":
            if is_missing:
                if f.nullable:
                    # The string the converted graph's imputer looks for ("" unless the manifest says).
                    return f.missing_string
                raise value_error(row, f, v, self.names)
            if not isinstance(v, str):
                raise value_error(row, f, v, self.names)
            v = str(v)
            if v == reserved(f):
                raise reserved_error(f, v)
            if f.categories is not None and v not in self._categories[f.name]:
                if strict:
                    raise unseen_error(f, v)
                flags.append(f"unseen_category:{f.name}")
            return v
        if is_missing:
            if f.nullable and f.dtype != "int64":
                return math.nan
            raise value_error(row, f, v, self.names)
        if isinstance(v, (bool, np.bool_)):
            # bool is an int subclass, but True for a temperature is a caller's bug, not 1.0.
            raise value_error(row, f, v, self.names)
        if isinstance(v, (numbers.Integral, np.integer)):
            v = int(v)
        elif isinstance(v, (numbers.Real, np.floating)):
            v = float(v)
        else:
            raise value_error(row, f, v, self.names)
        if not -FIT[f.dtype] <= v <= FIT[f.dtype] or (f.dtype == "int64" and v == FIT["int64"]):
            raise fit_error(f, v)
        if f.dtype == "int64":
            if isinstance(v, float):
                if not v.is_integer():
                    raise value_error(row, f, v, self.names)
                v = int(v)
        if f.categories is not None:
            if v not in self._categories[f.name]:
                if strict:
                    raise unseen_error(f, v)
                flags.append(f"unseen_category:{f.name}")
        elif f.range is not None and not f.range[0] <= v <= f.range[1]:
            flags.append(f"out_of_range:{f.name}")
        return v
