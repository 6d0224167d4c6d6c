"""The per-row telemetry path: ``telemetry_hook.ValuePicker`` and ``row_recorder``."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pytest

import runtime
import telemetry
from runtime.schema import InputSchema
from runtime.telemetry_hook import ValuePicker, row_recorder

from . import builder

# Features listed in an order the packed inputs do not follow (strings and numbers
# interleaved), with nullable numbers and nullable strings (sentinel "" and "<na>").
MANIFEST = {
    "inputs": [
        {"name": "crop", "dtype": "string", "kind": "categorical", "nullable": True, "missing_string": "",
         "categories": ["maize", "rye"], "range": None, "onnx_input": "s", "slot": 1},
        {"name": "t", "dtype": "float64", "kind": "numeric", "nullable": True, "categories": None,
         "range": [0.0, 10.0], "onnx_input": "d", "slot": 2},
        {"name": "site", "dtype": "string", "kind": "categorical", "nullable": False, "categories": ["a", "b"],
         "range": None, "onnx_input": "s", "slot": 0},
        {"name": "h", "dtype": "float64", "kind": "numeric", "nullable": True, "categories": None,
         "range": [0.0, 1.0], "onnx_input": "d", "slot": 0},
        {"name": "soil", "dtype": "string", "kind": "categorical", "nullable": True, "missing_string": "<na>",
         "categories": ["clay", "sand"], "range": None, "onnx_input": "s", "slot": 2},
        {"name": "w", "dtype": "float64", "kind": "numeric", "nullable": False, "categories": None,
         "range": [0.0, 100.0], "onnx_input": "d", "slot": 1},
    ],
    "onnx_inputs": [{"name": "d", "dtype": "float64", "width": 3}, {"name": "s", "dtype": "string", "width": 3}],
}
SESSION_INPUTS = {"d": ("tensor(double)", [None, 3]), "s": ("tensor(string)", [None, 3])}


def _rows(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        rows.append({
            "crop": rng.choice(["maize", "rye", None, "", "wheat"]),
            "t": rng.choice([rng.uniform(0, 10), float("nan"), None, 42.0, 5]),
            "site": rng.choice(["a", "b", "c"]),
            "h": rng.choice([rng.uniform(0, 1), float("nan"), None, 1e300]),
            "soil": rng.choice(["clay", "sand", None, ""]),  # "<na>" itself is refused as an input
            "w": rng.choice([rng.uniform(0, 100), 7, 250.0]),
        })
    return rows


def _same(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return len(a) == len(b) and all(x == y or (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y))
                                    for x, y in zip(a, b)) and [type(x) for x in a] == [type(y) for y in b]


def test_the_fast_input_path_gives_what_input_values_gives_on_every_kind_of_row() -> None:
    schema = InputSchema(MANIFEST, SESSION_INPUTS)
    picker = ValuePicker(schema)
    assert picker.call != picker.exact  # this layout has a fast path (checked first)
    rows = _rows(3000, seed=7)
    seen_fast = False
    for row in rows:
        values, _ = schema.row_values(row, False)
        got = picker.call(values)
        by_name = dict(zip(schema.names, schema.input_values(values)))
        want = tuple(by_name[name] for name in picker.names)
        assert _same(got, want), (row, got, want)
        assert not any(isinstance(v, float) and math.isnan(v) for v in got)  # NaN recorded as None
        seen_fast = seen_fast or picker.call == picker.fast
    assert seen_fast and picker.call == picker.fast
    assert schema.names == ("crop", "t", "site", "h", "soil", "w")
    assert sorted(picker.names) == sorted(schema.names) and picker.names != schema.names  # values as validated, not reordered


class _Lying:
    """A schema whose packed inputs claim another feature order than its input_values uses."""

    def __init__(self, schema: InputSchema) -> None:
        self.packed, self.groups, self.names = schema.packed, schema.groups, schema.names
        self._real = schema

    def input_values(self, values: list[Any]) -> tuple[Any, ...]:
        return tuple(reversed(self._real.input_values(values)))


def test_a_fast_path_that_disagrees_with_input_values_is_dropped_for_good() -> None:
    schema = InputSchema(MANIFEST, SESSION_INPUTS)
    lying = _Lying(schema)
    picker = ValuePicker(lying)
    values, _ = schema.row_values({"crop": "rye", "t": 1.0, "site": "a", "h": 0.5, "soil": "clay", "w": 3.0}, False)
    assert dict(zip(picker.names, picker.call(values))) == dict(zip(lying.names, lying.input_values(values)))
    assert picker.call == picker.exact


def test_a_fast_path_that_misreads_the_layout_falls_back_instead_of_failing() -> None:
    schema = InputSchema(MANIFEST, SESSION_INPUTS)
    picker = ValuePicker(schema)
    assert picker.call == picker._checking
    values, _ = schema.row_values({"crop": "rye", "t": 1.0, "site": "a", "h": 0.5, "soil": "clay", "w": 3.0}, False)
    picker.fast = lambda v: v[7]  # type: ignore[method-assign] - picks an index the row does not have
    assert dict(zip(picker.names, picker.call(values))) == dict(zip(schema.names, schema.input_values(values)))
    assert picker.call == picker.exact


class PositionalSink:
    """A sink with ``recorder``: per-row calls are positional, and may fail or return odd ids."""

    def __init__(self, fail_every: int = 0) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.contexts: list[dict[str, Any]] = []
        self.fail_every = fail_every

    def record(self, **kwargs: Any) -> None:  # the protocol's required method
        raise AssertionError("record() must not be used when recorder() exists")

    def recorder(self, *, model: str, version: str, bundle_sha256: str, names: tuple[str, ...]) -> Any:
        # No ``convert``: the runtime then picks the values itself, per row.
        self.contexts.append({"model": model, "version": version, "bundle_sha256": bundle_sha256, "names": names})

        def push(values: tuple[Any, ...], outputs: dict[str, Any], flags: Any) -> Any:
            self.calls.append((values, outputs, list(flags)))
            if self.fail_every and len(self.calls) % self.fail_every == 0:
                raise RuntimeError("disk on fire")
            return f"id-{len(self.calls)}" if len(self.calls) % 2 else 12345

        return push

    def feedback(self, record_id: str, label: Any) -> bool:
        return True


def test_a_sink_with_recorder_gets_one_context_and_positional_rows(fire: builder.Built, good_row: dict) -> None:
    sink = PositionalSink(fail_every=5)
    model = runtime.load(fire.path, telemetry=sink)
    results = [model.predict({**good_row, "temp c": 20.0 + i, "humidity_pct": None if i % 3 == 0 else 30.0}) for i in range(10)]
    names = sink.contexts[0]["names"]
    assert sink.contexts == [{"model": model.name, "version": model.version, "bundle_sha256": model.sha256, "names": names}]
    assert sorted(names) == sorted(model.feature_names) and len(names) == len(model.feature_names)
    assert len(sink.calls) == 10
    for i, (values, outputs, flags) in enumerate(sink.calls):
        assert type(values) is tuple and dict(zip(names, values)) == {
            **good_row, "temp c": 20.0 + i, "humidity_pct": None if i % 3 == 0 else 30.0}
        assert outputs == {"prediction": results[i]["prediction"], "probabilities": results[i]["probabilities"]}
        assert flags == results[i]["flags"]
    # Ids: str passed on, anything else None; a failing call (every 5th) counted, never raised.
    assert [r["record_id"] for r in results] == [
        "id-1", None, "id-3", None, None, None, "id-7", None, "id-9", None]
    assert model.telemetry_errors == 2


def test_predictions_recorded_through_a_buffer_are_stored_with_none_for_missing_values(
    fire: builder.Built, good_row: dict, tmp_path: Path
) -> None:
    path = tmp_path / "p.db"
    with telemetry.Buffer(path) as buffer:
        model = runtime.load(fire.path, telemetry=buffer)
        rows = [{**good_row, "humidity_pct": [None, float("nan"), 33.0][i % 3], "region": ["north", "highlands"][i % 2]} for i in range(60)]
        results = [model.predict(row) for row in rows]
        listed = model.predict(rows[:4])
        buffer.flush()
        stored = buffer.oldest(100)
    assert [r.id for r in stored] == [r["record_id"] for r in results + listed]
    for record, row, result in zip(stored, rows + rows[:4], results + listed):
        values, outputs, flags = record.payload
        inputs = dict(zip(record.input_names, values))
        want = {**row, "humidity_pct": None if row["humidity_pct"] != 33.0 else 33.0}
        assert inputs == want
        assert outputs == {"prediction": result["prediction"], "probabilities": result["probabilities"]}
        assert list(flags) == result["flags"]


def test_rows_of_an_interleaved_layout_reach_a_buffer_under_their_own_names(tmp_path: Path) -> None:
    # MANIFEST validates its features in another order than its names (strings and numbers
    # interleaved): the recorder gets the validation order as its names, and every stored
    # record must still pair each value with its feature, missing values as None.
    from types import SimpleNamespace

    schema = InputSchema(MANIFEST, SESSION_INPUTS)
    rows = _rows(300, seed=11)
    failures: list[BaseException] = []
    with telemetry.Buffer(tmp_path / "p.db") as buffer:
        model = SimpleNamespace(
            _telemetry=buffer, _schema=schema, name="m", version="1", sha256="a" * 64,
            _outputs=SimpleNamespace(outputs_of=lambda result: {"prediction": result["prediction"]}),
            _telemetry_failed=failures.append, _record_mapping=None,
        )
        record = row_recorder(model)
        ids = []
        for i, row in enumerate(rows):
            values, _ = schema.row_values(row, False)
            ids.append(record(values, {"prediction": float(i), "flags": []}))
        buffer.flush()
        stored = buffer.oldest(1000)
    assert not failures and [r.id for r in stored] == ids
    assert stored[0].input_names != schema.names and sorted(stored[0].input_names) == sorted(schema.names)
    for i, (record_, row) in enumerate(zip(stored, rows)):
        values, _ = schema.row_values(row, False)
        want = dict(zip(schema.names, schema.input_values(values)))
        got = dict(zip(record_.input_names, record_.payload[0]))
        assert got == want or all(_same((got[n],), (want[n],)) for n in schema.names), (row, got, want)
        assert record_.payload[1] == {"prediction": float(i)}
