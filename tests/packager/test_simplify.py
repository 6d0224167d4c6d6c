"""The packager's graph rewrites (packager/simplify.py): fewer nodes, the same answers.

Each rewritten graph is compared with the graph as converted, output for output and bit for
bit, on rows with unknown categories and missing numbers; bundles built through a real
registry are compared with the original scikit-learn pipeline, and an encoder that refuses
unknown categories (``handle_unknown="error"``) keeps refusing them on the device.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import runtime
from packager import build_bundle
from packager.convert import columns_of, convert
from runtime.bundle import read_bundle
from tests.support.registry import register_model

SITES = ["north", "south", "east", "west"]
CROPS = ["wheat", "maize", "rye"]
SHIFTS = ["day", "night"]


def _fields(rows: int = 600, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {
            "temp c": rng.normal(20, 6, rows),
            "rain": rng.gamma(1.5, 8, rows),
            "site": rng.choice(SITES, rows).astype(object),
            "wind": rng.normal(12, 4, rows),
            "crop": rng.choice(CROPS, rows).astype(object),
            # "north" is a site as well: one string, two columns, two different one-hot columns
            "shift": rng.choice(SHIFTS + ["north"], rows).astype(object),
        }
    )
    score = 0.2 * (X["temp c"] - 20) - 0.05 * X["rain"] + (X["site"] == "south") - (X["crop"] == "rye") + (X["shift"] == "north")
    y = np.digitize(score + rng.normal(0, 0.7, rows), [-0.5, 0.5])
    X.loc[rng.choice(rows, rows // 10, replace=False), "rain"] = np.nan
    return X, y


def _pipeline(final: Any, handle_unknown: str = "ignore", numeric_first: bool = True) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = ("num", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]), ["temp c", "rain", "wind"])
    strings = ("cat", OneHotEncoder(handle_unknown=handle_unknown), ["site", "crop", "shift"])
    pre = ColumnTransformer([numeric, strings] if numeric_first else [strings, numeric])
    return Pipeline([("pre", pre), ("model", final)])


def _forest() -> Any:
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=15, max_depth=8, random_state=0, n_jobs=1)


def _logreg() -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=500)


def _gbr() -> Any:
    from sklearn.ensemble import GradientBoostingRegressor

    return GradientBoostingRegressor(n_estimators=20, max_depth=3, random_state=0)


def _hgb() -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(max_iter=15, random_state=0)


def _fit(model: Any, X: pd.DataFrame, y: np.ndarray) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(X, y)


def _hostile(X: pd.DataFrame) -> pd.DataFrame:
    """Rows with unknown categories, an empty string, a site name in another column, and NaN."""
    rows = X.head(60).copy().reset_index(drop=True)
    rows.loc[::4, "site"] = "atlantis"
    rows.loc[1::5, "crop"] = ""
    rows.loc[2::6, "crop"] = "north"
    rows.loc[3::7, "shift"] = "wheat"
    rows.loc[::3, "rain"] = np.nan
    rows.loc[::8, "temp c"] = np.nan
    return rows


def _columns(frame: pd.DataFrame) -> list[Any]:
    from packager.convert import Column

    return [Column(c, "numeric" if pd.api.types.is_numeric_dtype(frame[c]) else "categorical") for c in frame.columns]


def _run(converted: Any, frame: pd.DataFrame) -> list[np.ndarray]:
    import onnxruntime as ort

    from packager.parity import feeds

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(converted.onnx.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds(frame, _columns(frame), converted))


def _ops(converted: Any) -> list[str]:
    return [n.op_type for n in converted.onnx.graph.node]


FINALS = pytest.mark.parametrize(
    "final,numeric_first",
    [(_forest, True), (_logreg, True), (_gbr, True), (_hgb, True), (_forest, False)],
    ids=["forest", "logreg", "gradient-boosting-regressor", "hist-gradient-boosting", "strings-first"],
)
"""The final estimators every graph rewrite is checked in front of (and strings first)."""


def _fitted(final: Any, numeric_first: bool) -> tuple[Any, list[Any], pd.DataFrame]:
    """The pipeline ending in ``final()`` fitted on ``_fields()``: (model, its columns, X)."""
    X, y = _fields()
    if final is _gbr:
        y = y.astype(float) + X["wind"].to_numpy() / 10
    model = _fit(_pipeline(final(), numeric_first=numeric_first), X, y)
    return model, columns_of(model, None, X), X


@pytest.mark.parametrize("precision", ["float32", "float64"])
@FINALS
def test_rewritten_graph_answers_bit_for_bit_like_the_converted_one(final: Any, numeric_first: bool, precision: str) -> None:
    model, columns, X = _fitted(final, numeric_first)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = convert(model, columns, precision, rewrite=False)
        # The strings stay in the graph here; tests/packager/test_encoded_inputs.py cuts them out.
        rewritten = convert(model, columns, precision, encode=False)
    assert "OneHotEncoder" in _ops(plain) and "Split" in _ops(plain)
    # One LabelEncoder over the packed strings stands for the three encoders; no Split is left.
    assert "OneHotEncoder" not in _ops(rewritten) and "Split" not in _ops(rewritten)
    assert _ops(rewritten).count("LabelEncoder") == 1
    assert len(_ops(rewritten)) <= len(_ops(plain)) - 4
    assert rewritten.onnx_inputs == plain.onnx_inputs and rewritten.slots == plain.slots
    if final is not _logreg:
        # In front of trees the imputer is gone: a missing value reaches the trees as NaN and
        # each split routes it where the imputed value went.
        assert not {"IsNaN", "Where", "Imputer"} & set(_ops(rewritten))
    else:
        assert {"Where", "Imputer"} & set(_ops(rewritten))  # a linear model needs the imputed value
    frame = pd.concat([X.head(200), _hostile(X)], ignore_index=True)
    for got, want in zip(_run(rewritten, frame), _run(plain, frame)):
        np.testing.assert_array_equal(got, want)


def test_unknown_categories_give_all_zero_one_hot_columns_as_scikit_learn_does() -> None:
    from sklearn.linear_model import LinearRegression

    X, y = _fields()
    # A linear model shows every one-hot column in its output: an unknown string must add nothing.
    model = _fit(_pipeline(LinearRegression()), X, y.astype(float))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rewritten = convert(model, columns_of(model, None, X), "float64")
        frame = _hostile(X)
        expected = model.predict(frame)
    assert "OneHotEncoder" not in _ops(rewritten)
    np.testing.assert_allclose(_run(rewritten, frame)[0].reshape(-1), expected, rtol=1e-9, atol=1e-9)


def test_an_encoder_that_refuses_unknown_categories_is_left_as_converted() -> None:
    X, y = _fields()
    model = _fit(_pipeline(_forest(), handle_unknown="error"), X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rewritten = convert(model, columns_of(model, None, X), "float32")
    # The numeric Split/Concat still goes; the encoders that raise on an unknown string stay.
    assert _ops(rewritten).count("OneHotEncoder") == 3 and "LabelEncoder" not in _ops(rewritten)
    frame = X.head(3).copy()
    frame.loc[0, "site"] = "atlantis"
    with pytest.raises(Exception, match="(?i)unknown|not found|category"):
        _run(rewritten, frame)


def _build(tracking_uri: str, tmp_path: Path, name: str, model: Any, X: pd.DataFrame, out: str | None = None) -> Path:
    register_model(tracking_uri, name, model, X, alias="champion")
    reference = tmp_path / f"{name}.parquet"
    if not reference.exists():
        X.to_parquet(reference)
    path = tmp_path / (out or f"{name}.edgepkg")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_bundle(f"models:/{name}@champion", path, tracking_uri=tracking_uri, reference_data=reference)
    return path


def _rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()} for row in frame.to_dict("records")]


def test_forest_bundle_answers_like_the_pipeline_with_unknown_categories_and_nan(tracking_uri: str, tmp_path: Path) -> None:
    import onnx

    X, y = _fields()
    model = _fit(_pipeline(_forest()), X, y)
    bundle = _build(tracking_uri, tmp_path, "fields-forest", model, X)
    shipped = onnx.load_from_string(read_bundle(bundle).files["model.onnx"])
    ops = [n.op_type for n in shipped.graph.node]
    # The one-hot chain is cut off too: the device feeds its floats (packager/encoded_inputs.py).
    assert "OneHotEncoder" not in ops and "Split" not in ops and "LabelEncoder" not in ops
    assert {i.name for i in shipped.graph.input} == {"double_input"} or {i.name for i in shipped.graph.input} == {"float_input"}

    device = runtime.load(bundle)
    frame = _hostile(X)
    got = device.predict(_rows(frame))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn warns about the unknown categories
        want_labels, want_proba = model.predict(frame), model.predict_proba(frame)
    assert [r["prediction"] for r in got] == want_labels.tolist()
    np.testing.assert_allclose([list(r["probabilities"].values()) for r in got], want_proba, atol=1e-5)
    assert "unseen_category:site" in got[0]["flags"]
    batch = device.predict_batch({c: frame[c].to_numpy(dtype=np.float64 if pd.api.types.is_numeric_dtype(frame[c]) else object) for c in frame.columns})
    np.testing.assert_allclose(batch["probabilities"], want_proba, atol=1e-5)
    # Strict mode refuses what the pipeline would encode as all zeros, as before.
    with pytest.raises(runtime.InputError, match="site"):
        runtime.load(bundle, strict=True).predict(_rows(frame)[0])


def test_error_encoder_bundle_still_refuses_unknown_categories_on_the_device(tracking_uri: str, tmp_path: Path) -> None:
    X, y = _fields()
    model = _fit(_pipeline(_forest(), handle_unknown="error"), X, y)
    bundle = _build(tracking_uri, tmp_path, "fields-strict-encoder", model, X)
    device = runtime.load(bundle)
    row = _rows(X.head(1))[0]
    assert device.predict(row)["prediction"] == model.predict(X.head(1)).tolist()[0]
    # scikit-learn raises for an unknown category here; so does the bundle (never a guess).
    with pytest.raises(runtime.EdgeError):
        device.predict({**row, "crop": "quinoa"})


def test_rewritten_bundles_stay_byte_identical_across_builds(tracking_uri: str, tmp_path: Path) -> None:
    X, y = _fields()
    model = _fit(_pipeline(_forest()), X, y)
    first = _build(tracking_uri, tmp_path, "fields-twice", model, X, out="first.edgepkg")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_bundle("models:/fields-twice@champion", tmp_path / "second.edgepkg", tracking_uri=tracking_uri, reference_data=tmp_path / "fields-twice.parquet")
    assert first.read_bytes() == (tmp_path / "second.edgepkg").read_bytes()


def _imputed_tree_graph(*, expose_imputed: bool = False, mode: str = "BRANCH_LEQ") -> Any:
    """x (N, 2) double -> Where(IsNaN(x), [1.5, -2.0], x) -> Cast float -> a regressor of two
    stumps (feature 0 at 1.0, feature 1 at 0.0), as edgepack's double imputer and a tree give."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("IsNaN", ["x"], ["mask"]),
        helper.make_node("Where", ["mask", "values", "x"], ["imputed"]),
        helper.make_node("Cast", ["imputed"], ["x32"], to=TensorProto.FLOAT),
        helper.make_node(
            "TreeEnsembleRegressor", ["x32"], ["y"], domain="ai.onnx.ml", n_targets=1,
            nodes_treeids=[0, 0, 0, 1, 1, 1], nodes_nodeids=[0, 1, 2, 0, 1, 2], nodes_featureids=[0, 0, 0, 1, 0, 0],
            nodes_modes=[mode, "LEAF", "LEAF", mode, "LEAF", "LEAF"], nodes_values=[1.0, 0, 0, 0.0, 0, 0],
            nodes_truenodeids=[1, 0, 0, 1, 0, 0], nodes_falsenodeids=[2, 0, 0, 2, 0, 0],
            target_treeids=[0, 0, 1, 1], target_nodeids=[1, 2, 1, 2], target_ids=[0, 0, 0, 0], target_weights=[1.0, 10.0, 100.0, 1000.0],
        ),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])]
    if expose_imputed:
        outputs.append(helper.make_tensor_value_info("imputed", TensorProto.DOUBLE, [None, 2]))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [None, 2])], outputs,
        initializer=[numpy_helper.from_array(np.asarray([1.5, -2.0]), name="values")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 1)], ir_version=8)


def _answers(onx: Any, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"]).run(["y"], {"x": x})[0]


@pytest.mark.parametrize("mode", ["BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT"])
def test_an_imputer_in_front_of_trees_becomes_their_missing_value_routing(mode: str) -> None:
    from onnx import helper

    from packager.simplify import simplify

    onx = _imputed_tree_graph(mode=mode)
    x = np.asarray([[np.nan, np.nan], [0.5, np.nan], [np.nan, 3.0], [1.0, 0.0], [1.5, -2.0], [2.0, -1.0]])
    before = _answers(onx, x)
    assert simplify(onx).imputers == 1
    assert [n.op_type for n in onx.graph.node] == ["Cast", "TreeEnsembleRegressor"]
    tree = onx.graph.node[-1]
    flags = next(helper.get_attribute_value(a) for a in tree.attribute if a.name == "nodes_missing_value_tracks_true")
    imputed_goes = {"BRANCH_LEQ": (1.5 <= 1.0, -2.0 <= 0.0), "BRANCH_LT": (1.5 < 1.0, -2.0 < 0.0),
                    "BRANCH_GTE": (1.5 >= 1.0, -2.0 >= 0.0), "BRANCH_GT": (1.5 > 1.0, -2.0 > 0.0)}[mode]
    assert [flags[0], flags[3]] == [int(v) for v in imputed_goes]
    np.testing.assert_array_equal(_answers(onx, x), before)


def test_an_imputer_whose_values_are_read_elsewhere_stays() -> None:
    from packager.simplify import simplify

    onx = _imputed_tree_graph(expose_imputed=True)
    assert simplify(onx).imputers == 0
    assert "Where" in [n.op_type for n in onx.graph.node]
