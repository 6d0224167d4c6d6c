"""What the runtime needs from a telemetry sink: one ``record`` method, nothing imported.

``telemetry.Buffer`` implements it; so can any object with the same method. The runtime
calls ``record`` once per predicted row, after the prediction is computed. A sink that
raises never fails the prediction: the runtime counts the error and logs it once.

A sink may also have ``record_values`` (``telemetry.Buffer`` does): the same call with the
inputs as two tuples, ``names`` (the same object for every row of a model) and ``values``
(NaN as None). Single-row predictions then skip building a dict per row, which is most of
what telemetry costs the calling thread.

A sink may also have ``recorder(model=, version=, bundle_sha256=, names=)`` (``telemetry.Buffer``
does): the context given once, it returns a function ``(values, outputs, flags) -> id``
that the runtime then calls per row, positionally (``row_recorder`` below).

``record`` (and ``record_values``, and a recorder's function) may return the record's id. A sink that also has a
``feedback(record_id, label)`` method (``telemetry.Buffer`` does) gets that id added to
each result of ``EdgeModel.predict`` as ``"record_id"``, so that the application can
attach the ground truth later.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from itertools import chain
from operator import itemgetter
from typing import Any, Protocol, runtime_checkable

log = logging.getLogger(__name__)


@runtime_checkable
class TelemetrySink(Protocol):
    def record(
        self,
        *,
        model: str,
        version: str,
        bundle_sha256: str,
        inputs: Mapping[str, Any],
        outputs: Mapping[str, Any],
        flags: Sequence[str],
    ) -> str | None:
        """Store one prediction.

        ``inputs`` holds the validated value of every model feature by its original name
        (missing values as None); ``outputs`` is the result without its flags
        (``{"prediction": ..., "probabilities": {label: p}}`` or ``{"prediction": float}``);
        ``flags`` are the guardrail flags of that row. The mappings are fresh copies the
        sink may keep.

        Returns the record's id (a str) when the sink keeps records that can be referred
        to later; the runtime passes it on as the result's ``"record_id"`` (anything but a
        str becomes None there).
        """
        ...


# -- the per-row path -----------------------------------------------------------------------
#
# ``EdgeModel._record`` hands each predicted row over through ``row_recorder``: a function
# built once per model, which turns the row's validated per-input values into the
# sink's call with as little Python as the sink allows. What a prediction costs the
# calling thread is mostly this function, so it is built for it: the input values come
# out of the per-group tuples with one C call per group (one concatenation for the usual
# two), in the order validation gives them (the sink is given that order as the names,
# so nothing is reordered per row), and NaN and missing-string
# sentinels (recorded as None) are found with a C-level pass per packed input (``sum``
# of a numeric input is NaN if one of its values is, needed only for the inputs that
# validation checked value by value; a set test for the sentinels); only a row that has
# one takes ``InputSchema.input_values``.

RowRecorder = Callable[[list[Sequence[Any]], dict[str, Any]], "str | None"]
"""``(validated per-input values, result) -> record id or None``."""

Pick = Callable[[list[Sequence[Any]]], tuple[Any, ...]]
"""``(validated per-group values) -> the row's input values, missing ones as None``."""


class ValuePicker:
    """What ``schema.input_values`` computes (the values, NaN and missing strings as None),
    faster for rows that have neither: ``picker.call(values)``, in the order of
    ``picker.names``.

    That order is the one the validated values come in (per validation group), not
    necessarily the schema's name order: a record's inputs are a mapping by name, and
    not reordering them saves building a second tuple per row. The fast path is checked
    against ``input_values`` on the first ``CHECKED_ROWS`` rows; on any difference, or for
    a schema it does not understand, ``input_values`` itself is used from then on."""

    CHECKED_ROWS = 16

    def __init__(self, schema: Any) -> None:
        self.names: tuple[str, ...] = tuple(schema.names)
        """The order of the values ``call`` returns."""
        self.exact: Pick = schema.input_values
        """``input_values``, in the order of ``names``."""
        self.call: Pick = self.exact
        self._checked = 0
        fast = self._fast_path(schema)
        if fast is not None:
            self.fast, self.names, self.exact = fast
            self.call = self._checking

    def _fast_path(self, schema: Any) -> tuple[Pick, tuple[str, ...], Pick] | None:
        """(the fast function, the order it gives values in, ``input_values`` in that order), or None."""
        try:
            # A row's values come per validation group (the packed inputs, or with encoded
            # features those split by dtype: runtime/layout.py), in each group's feature order.
            packed = tuple(schema.groups)
            names = tuple(schema.names)
            slot_order = tuple(f.name for p in packed for f in p.features)
            numeric = tuple(k for k, p in enumerate(packed) if all(f.dtype != "string" for f in p.features))
            sentinels = tuple(
                (k, frozenset(f.missing_string for f in p.features if f.dtype == "string" and f.nullable))
                for k, p in enumerate(packed)
                if any(f.dtype == "string" and f.nullable for f in p.features)
            )
        except (AttributeError, TypeError):
            return None
        if len(names) < 2 or sorted(slot_order) != sorted(names) or len(set(names)) != len(names):
            return None
        input_values = self.exact
        if slot_order == names:
            exact = input_values
        else:
            where = {name: i for i, name in enumerate(names)}
            reorder = itemgetter(*(where[name] for name in slot_order))

            def exact(values: list[Sequence[Any]]) -> tuple[Any, ...]:
                return reorder(input_values(values))

        single = len(packed) == 1
        pair = len(packed) == 2

        def fast(values: list[Sequence[Any]]) -> tuple[Any, ...]:
            try:
                for k in numeric:
                    group = values[k]
                    if type(group) is tuple:
                        # ``row_values`` gives a tuple only for a group its fast path took,
                        # whose range checks no NaN (or inf) passes: nothing to look for.
                        continue
                    total = sum(group)
                    if total != total:  # a NaN (or inf - inf: the exact path decides)
                        return exact(values)
                for k, marks in sentinels:
                    if not marks.isdisjoint(values[k]):
                        return exact(values)
                if single:
                    return tuple(values[0])
                if pair:
                    flat = values[0] + values[1]  # two tuples (the usual): one C call
                    return flat if type(flat) is tuple else tuple(flat)
                return tuple(chain.from_iterable(values))
            except TypeError:  # a value sum or a set cannot take (None, a numpy array), list + tuple: exact path
                return exact(values)

        return fast, slot_order, exact

    def _checking(self, values: list[Sequence[Any]]) -> tuple[Any, ...]:
        want = self.exact(values)
        try:
            got = self.fast(values)
        except Exception:  # noqa: BLE001 - a layout the fast path misread: the exact path decides
            got = None
        if got != want:
            log.info("telemetry: the fast input path disagrees with InputSchema.input_values; using the latter")
            self.call = self.exact
        else:
            self._checked += 1
            if self._checked >= self.CHECKED_ROWS:
                self.call = self.fast
        return want


def row_recorder(model: Any) -> RowRecorder:
    """The function ``model._record`` becomes: one predicted row to ``model``'s sink.

    The sink's cheapest form is used: ``recorder(...)`` (a positional per-row function,
    ``telemetry.Buffer`` has it), else ``record_values(...)``, else ``record(...)``. A
    sink's failure never fails the prediction: it is counted (``model._telemetry_failed``)
    and the row's record id is None. Only str ids are passed on."""
    sink = model._telemetry
    schema = model._schema
    outputs_of = model._outputs.outputs_of
    failed = model._telemetry_failed
    picker = ValuePicker(schema)
    names = picker.names
    make = getattr(sink, "recorder", None)
    record_values = getattr(sink, "record_values", None)
    push = None
    if callable(make):
        try:
            push = make(model=model.name, version=model.version, bundle_sha256=model.sha256, names=names)
        except Exception as exc:  # noqa: BLE001 - a sink's failure must never fail a prediction
            failed(exc)
    elif callable(record_values):
        name, version, sha256 = model.name, model.version, model.sha256

        def push(values: tuple[Any, ...], outputs: Any, flags: Any) -> Any:
            return record_values(model=name, version=version, bundle_sha256=sha256, names=names,
                                 values=values, outputs=outputs, flags=flags)
    if callable(push):

        def record(values: list[Sequence[Any]], result: dict[str, Any]) -> str | None:
            try:
                record_id = push(picker.call(values), outputs_of(result), result["flags"])
            except Exception as exc:  # noqa: BLE001 - a sink's failure must never fail a prediction
                failed(exc)
                return None
            return record_id if type(record_id) is str else None

        return record
    mapping = model._record_mapping
    inputs_of = schema.inputs_of
    return lambda values, result: mapping(inputs_of(values), result)
