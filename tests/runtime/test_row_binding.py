"""The one-row path through onnxruntime's IOBinding (numeric-only graphs): it answers exactly
what the column path and InferenceSession.run answer, refuses what they refuse, keeps no
result tied to its reused buffers, and stays right with many threads at once."""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

import runtime
from runtime.binding import RowSlot
from runtime.model import SMALL_BATCH

from . import builder

NUMERIC = ["temp c", "humidity_pct", "wind_kmh", "x3", "x4"]


def _numeric_pipeline(estimator: Any) -> Pipeline:
    impute_scale = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    return Pipeline([("features", ColumnTransformer([("num", impute_scale, NUMERIC)])), ("model", estimator)])


def _frame(seed: int) -> tuple[Any, np.ndarray]:
    frame, label = builder.fire_frame(300, seed=seed, numeric=len(NUMERIC))
    return frame[NUMERIC], label


@pytest.fixture(scope="module")
def numeric_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, builder.Built]:
    root = tmp_path_factory.mktemp("numeric-bundles")
    frame, label = _frame(3)
    out = {
        "logreg": builder.build_bundle(root / "logreg.edgepkg", _numeric_pipeline(LogisticRegression()), frame, label, name="logreg"),
        "forest": builder.build_bundle(
            root / "forest.edgepkg", _numeric_pipeline(RandomForestClassifier(n_estimators=8, max_depth=5, random_state=0)),
            frame, label, name="forest",
        ),
        "regressor": builder.build_bundle(
            root / "regressor.edgepkg", _numeric_pipeline(RandomForestRegressor(n_estimators=8, max_depth=5, random_state=0)),
            frame, frame["temp c"].fillna(0).to_numpy() * 3, name="regressor",
        ),
    }
    levels = np.where(frame["temp c"] > 24, "high", np.where(frame["temp c"] > 17, "medium", "low")).astype(object)
    out["string-labels"] = builder.build_bundle(
        root / "levels.edgepkg", _numeric_pipeline(RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0)),
        frame, levels, name="levels",
    )
    return out


def _rows(model: runtime.EdgeModel, count: int, seed: int = 0) -> list[dict[str, Any]]:
    """Rows that hit every branch: plain floats, ints, NaN where nullable, values outside
    the training range, values that round differently in float32 than their neighbours."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        row: dict[str, Any] = {}
        for f in model.inputs:
            lo, hi = f.range  # type: ignore[misc]
            value: Any = float(rng.uniform(lo - 5, hi + 5))
            if i % 7 == 0:
                value = int(round(value))
            elif i % 11 == 0:
                value = float(np.nextafter(np.float32(value), np.float32(np.inf))) + 2.0**-40
            if f.nullable and i % 5 == 0:
                value = None if i % 10 == 0 else math.nan
            row[f.name] = value
        rows.append(row)
    return rows


def _columns(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    return {name: np.array([np.nan if r[name] is None else r[name] for r in rows], dtype=np.float64) for name in rows[0]}


def test_numeric_graphs_take_the_bound_path_and_string_tensors_do_not(numeric_models: dict[str, builder.Built], fire_model: runtime.EdgeModel) -> None:
    # Without this the other tests here would test InferenceSession.run again.
    for name in ("logreg", "forest", "regressor"):
        assert runtime.load(numeric_models[name].path)._binding is not None, name
    assert runtime.load(numeric_models["string-labels"].path)._binding is None  # a string label tensor
    assert fire_model._binding is None  # a string input tensor


@pytest.mark.parametrize("name", ["logreg", "forest", "regressor", "string-labels"])
def test_one_row_paths_answer_exactly_what_inference_session_run_answers(numeric_models: dict[str, builder.Built], name: str) -> None:
    model = runtime.load(numeric_models[name].path)
    rows = _rows(model, 120)
    batch = model.predict_batch(_columns(rows))  # > SMALL_BATCH rows: the column path
    assert len(rows) > SMALL_BATCH
    session = ort.InferenceSession(model.bundle.files["model.onnx"], providers=["CPUExecutionProvider"])
    labels = model.manifest["outputs"].get("classes")
    for i, row in enumerate(rows):
        # Bit for bit against a plain one-row run (a 120-row GEMM may round differently).
        feed = np.array([[np.nan if row[n] is None else row[n] for n in NUMERIC]], dtype=np.float32)
        plain = session.run(None, {"float_input": feed})
        single = model.predict(row)
        one = model.predict_batch(_columns([row]))
        assert single["flags"] == batch["flags"].get(i, [])
        assert one["flags"] == ({0: batch["flags"][i]} if i in batch["flags"] else {})
        assert one["prediction"].dtype == batch["prediction"].dtype and one["prediction"].shape == (1,)
        if labels is None:
            assert single["prediction"] == plain[0].item() == one["prediction"].item()
            assert single["prediction"] == pytest.approx(batch["prediction"][i].item(), rel=1e-6)
            continue
        assert single["prediction"] == plain[0].item() == one["prediction"].item()
        assert list(single["probabilities"].values()) == plain[1][0].tolist()
        assert one["probabilities"].dtype == batch["probabilities"].dtype == plain[1].dtype
        assert one["probabilities"].tolist() == plain[1].tolist()
        np.testing.assert_allclose(one["probabilities"][0], batch["probabilities"][i], rtol=1e-5, atol=1e-6)


def test_results_do_not_share_the_reused_buffers(numeric_models: dict[str, builder.Built]) -> None:
    model = runtime.load(numeric_models["logreg"].path)
    first, second = _rows(model, 2, seed=4)
    a = model.predict_batch(_columns([first]))
    kept = {k: v.copy() for k, v in a.items() if isinstance(v, np.ndarray)}
    b = model.predict_batch(_columns([second]))
    assert b["probabilities"].tolist() != kept["probabilities"].tolist()  # two different rows
    for key, value in kept.items():
        assert a[key].tolist() == value.tolist(), key
    a["probabilities"][0, 0] = 42.0  # a caller's array is theirs to change
    assert model.predict_batch(_columns([first]))["probabilities"].tolist() == kept["probabilities"].tolist()
    regressor = runtime.load(numeric_models["regressor"].path)
    r1 = regressor.predict_batch(_columns([first]))
    kept_value = r1["prediction"].tolist()
    regressor.predict_batch(_columns([second]))
    assert r1["prediction"].tolist() == kept_value


@pytest.mark.parametrize("name", ["logreg", "regressor"])
def test_eight_threads_on_the_bound_path_give_the_serial_results(numeric_models: dict[str, builder.Built], name: str) -> None:
    model = runtime.load(numeric_models[name].path)
    rows = _rows(model, 64, seed=9)
    expected = [model.predict(row) for row in rows]
    expected_one = [model.predict_batch(_columns([row])) for row in rows]
    start = threading.Barrier(8)
    failures: list[str] = []

    def work(offset: int) -> None:
        start.wait()
        for k in range(400):
            i = (offset * 13 + k) % len(rows)
            if k % 2:
                got = model.predict(rows[i])
                if got != expected[i]:
                    failures.append(f"predict row {i}: {got} != {expected[i]}")
            else:
                got_one = model.predict_batch(_columns([rows[i]]))
                if got_one["prediction"].tolist() != expected_one[i]["prediction"].tolist() or got_one["flags"] != expected_one[i]["flags"]:
                    failures.append(f"predict_batch row {i}")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def _bad_values(model: runtime.EdgeModel) -> list[tuple[str, Any, str]]:
    """(feature, value, what the message must say) that every path refuses."""
    strict_name = next(f.name for f in model.inputs if not f.nullable)
    return [
        (strict_name, math.nan, "not nullable"),
        (strict_name, None, "not nullable"),
        (strict_name, "12", "got str '12'"),
        (strict_name, True, "got bool True"),
        (strict_name, math.inf, "does not fit float32"),
        (strict_name, 1e39, "does not fit float32"),
        (strict_name, 10**400, "does not fit float32"),
        (strict_name, [1.0], "got list"),
    ]


def test_the_bound_path_refuses_what_it_always_refused(numeric_models: dict[str, builder.Built]) -> None:
    model = runtime.load(numeric_models["logreg"].path)
    good = _rows(model, 1, seed=2)[0]
    good = {k: (1.0 if v is None or v != v else v) for k, v in good.items()}
    for feature, value, text in _bad_values(model):
        with pytest.raises(runtime.InputError, match="expected a number") as info:
            model.predict({**good, feature: value})
        assert info.value.feature == feature and text in str(info.value)
    missing = dict(good)
    del missing["wind_kmh"]
    with pytest.raises(runtime.InputError, match="missing feature") as info:
        model.predict(missing)
    assert info.value.feature == "wind_kmh"
    strict = runtime.load(numeric_models["logreg"].path, strict=True)
    with pytest.raises(runtime.InputError, match="unexpected feature") as info:
        strict.predict({**good, "rain": 1.0})
    assert info.value.feature == "rain"
    with pytest.raises(runtime.InputError, match="unexpected feature") as info:
        strict.predict_batch(_columns([{**good, "rain": 1.0}]))
    assert info.value.feature == "rain"


def test_predict_batch_of_one_row_names_row_zero(numeric_models: dict[str, builder.Built]) -> None:
    model = runtime.load(numeric_models["logreg"].path)
    good = {k: (1.0 if v is None or v != v else v) for k, v in _rows(model, 1, seed=2)[0].items()}
    strict_name = next(f.name for f in model.inputs if not f.nullable)
    for value, text in ((np.nan, "not nullable"), (np.inf, "does not fit float32"), (1e39, "does not fit float32")):
        columns = {k: np.array([v]) for k, v in good.items()}
        columns[strict_name] = np.array([value])
        with pytest.raises(runtime.InputError, match=text) as info:
            model.predict_batch(columns)
        assert info.value.feature == strict_name and info.value.row == 0


def test_a_failing_bound_run_falls_back_to_inference_session_run(numeric_models: dict[str, builder.Built], monkeypatch: pytest.MonkeyPatch) -> None:
    model = runtime.load(numeric_models["forest"].path)
    rows = _rows(model, 5, seed=6)
    expected = [model.predict(row) for row in rows]

    def broken(self: RowSlot, values: Any) -> Any:
        # An onnxruntime failure inside the bound run cannot be produced on demand.
        raise ort.capi.onnxruntime_pybind11_state.Fail("bound run failed")

    monkeypatch.setattr(RowSlot, "run", broken)
    assert [model.predict(row) for row in rows] == expected
    assert model.predict_batch(_columns(rows[:1]))["prediction"].tolist() == [expected[0]["prediction"]]


def test_a_model_whose_bound_path_disagrees_at_load_does_not_use_it(numeric_models: dict[str, builder.Built], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    original = RowSlot.run

    def skewed(self: RowSlot, values: Any) -> Any:
        outputs = original(self, values)
        outputs[-1][...] = 0.5  # a binding that answered something else than InferenceSession.run
        return outputs

    monkeypatch.setattr(RowSlot, "run", skewed)
    with caplog.at_level("INFO", logger="runtime.model"):
        model = runtime.load(numeric_models["logreg"].path)
    assert model._binding is None and "IOBinding path not used" in caplog.text
    row = _rows(model, 1, seed=8)[0]
    monkeypatch.setattr(RowSlot, "run", original)
    assert model.predict(row) == runtime.load(numeric_models["logreg"].path).predict(row)


def test_int64_and_float64_inputs_take_the_bound_path(tmp_path: Path, numeric_models: dict[str, builder.Built]) -> None:
    """Ints packed as struct 'q' and doubles as 'd' are what numpy packs: same answers, same refusals."""
    import json

    import onnx
    from onnx import TensorProto, helper

    # y = sum(double(int_input)) + sum(double_input): every input value shows in the output.
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["int_input"], ["as_double"], to=TensorProto.DOUBLE),
            helper.make_node("Concat", ["as_double", "double_input"], ["all"], axis=1),
            helper.make_node("ReduceSum", ["all", "axes"], ["variable"], keepdims=1),
        ],
        "mixed",
        [helper.make_tensor_value_info("int_input", TensorProto.INT64, [None, 2]),
         helper.make_tensor_value_info("double_input", TensorProto.DOUBLE, [None, 1])],
        [helper.make_tensor_value_info("variable", TensorProto.DOUBLE, [None, 1])],
        [helper.make_tensor("axes", TensorProto.INT64, [1], [1])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    golden_inputs = {"count": [1, 2, 7], "big": [2**60 + 1, -(2**62), 3], "level": [0.5, 0.75, 0.25]}

    def expected(count: int, big: int, level: float) -> float:
        return float(np.array([[count, big]], dtype=np.int64).astype(np.float64).sum() + level)

    base = numeric_models["regressor"].manifest
    manifest = {
        **base,
        "model": {**base["model"], "name": "mixed"},
        "inputs": [
            {"name": "count", "onnx_input": "int_input", "slot": 0, "dtype": "int64", "kind": "numeric", "nullable": False, "range": [0, 10], "categories": None},
            {"name": "big", "onnx_input": "int_input", "slot": 1, "dtype": "int64", "kind": "numeric", "nullable": False, "range": None, "categories": None},
            {"name": "level", "onnx_input": "double_input", "slot": 0, "dtype": "float64", "kind": "numeric", "nullable": True, "range": [0.0, 1.0], "categories": None},
        ],
        "onnx_inputs": [{"name": "int_input", "dtype": "int64", "width": 2}, {"name": "double_input", "dtype": "float64", "width": 1}],
        "outputs": {"task": "regression", "prediction": "variable", "target_range": [0.0, 100.0], "classes": None,
                    "label": None, "label_values": None, "probabilities": None},
    }
    golden = {
        "inputs": golden_inputs,
        "outputs": {"label": None, "probabilities": None, "prediction": [expected(*row) for row in zip(*golden_inputs.values())]},
        "tolerance": {"abs": 1e-6, "rel": 1e-9},
    }
    path = tmp_path / "mixed.edgepkg"
    runtime.bundle.write_bundle(path, manifest, {
        "model.onnx": proto.SerializeToString(), "golden.json": json.dumps(golden).encode(), "requirements.txt": b"onnxruntime\n",
    })
    model = runtime.load(path)
    assert model._binding is not None
    assert model.predict({"count": 7, "big": 3, "level": 0.25}) == {"prediction": 10.25, "flags": []}
    big = 2**60 + 1  # not a float64: the int64 tensor must carry it exactly
    got = model.predict({"count": 3, "big": big, "level": 0.5})
    assert got == {"prediction": expected(3, big, 0.5), "flags": ["prediction_out_of_range"]}
    assert model.predict({"count": 3.0, "big": big, "level": math.nan})["prediction"] != model.predict({"count": 3, "big": big, "level": 0.5})["prediction"]
    one = model.predict_batch({"count": np.array([3]), "big": np.array([big]), "level": np.array([0.5])})
    assert one["prediction"].tolist() == [got["prediction"]] and one["flags"] == {0: ["prediction_out_of_range"]}
    with pytest.raises(runtime.InputError, match="feature 'big'") as info:
        model.predict({"count": 1, "big": 2**63, "level": 0.5})
    assert info.value.feature == "big"
    with pytest.raises(runtime.InputError, match="feature 'count'") as info:
        model.predict({"count": 1.5, "big": 1, "level": 0.5})
    assert info.value.feature == "count"
