"""Split thresholds and floating point: the parity gate probes every threshold and its float32
and float64 neighbours, and ships a graph that routes like the original, or none.

The wine case is the one a user met: a HistGradientBoostingClassifier passed the old gate on
its reference rows, yet answered differently on a held-out row whose ``alcohol = 12.47`` sits
next to a split threshold of ``12.469999...`` that float32 cannot separate from it.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import runtime
from packager import BuildOptions, ParityError
from packager.artifacts import sklearn_artifacts
from packager.build import write_artifacts
from packager.registry import LoadedModel, ResolvedModel
from packager.trees import estimator_thresholds, probe_values, threshold_probes
from tests.packager.conftest import onnx_answers

_RESOLVED = ResolvedModel(
    name="trees", version="1", run_id=None, requested_uri="models:/trees/1", kind="version", value="1",
    registry_uri="(none)", created_at=None, tracking_uri="(none)",
)


def _artifacts(model: Any, reference: pd.DataFrame, **options: Any) -> Any:
    loaded = LoadedModel(flavor="sklearn", model=model, input_example=reference.head(5), signature_columns=None)
    return sklearn_artifacts(loaded, reference, BuildOptions(**options))


def _wine() -> tuple[Any, pd.DataFrame, pd.DataFrame]:
    from sklearn.datasets import load_wine
    from sklearn.ensemble import HistGradientBoostingClassifier

    X, y = load_wine(return_X_y=True, as_frame=True)
    model = HistGradientBoostingClassifier(random_state=0).fit(X, y)
    # Held-out rows: real rows with alcohol moved to 12.47 and to the float64 neighbours of every
    # alcohol threshold, values no reference row holds.
    column = list(X.columns).index("alcohol")
    cuts = sorted(estimator_thresholds(model)[column])
    values = [12.47] + [float(np.nextafter(t, side)) for t in cuts for side in (-np.inf, np.inf)]
    held_out = X.iloc[np.arange(len(values)) % len(X)].reset_index(drop=True).copy()
    held_out["alcohol"] = values
    return model, X, held_out


def test_wine_hist_gradient_boosting_agrees_on_held_out_rows_at_thresholds(tmp_path: Path) -> None:
    model, X, held_out = _wine()
    art = _artifacts(model, X)
    assert art.parity["threshold_probes"] > 0
    assert art.parity["precision"] == "float64" and art.parity["attempts"] == ["float32", "float64"]
    outs = onnx_answers(art.onnx_bytes, art.inputs, art.converted.onnx_inputs, held_out)
    np.testing.assert_allclose(outs[1], model.predict_proba(held_out), atol=1e-5)
    assert outs[0].tolist() == model.predict(held_out).tolist()

    # On the device: the bundle loads, and answers the held-out rows like the original.
    path = write_artifacts(art, tmp_path / "wine.edgepkg", _RESOLVED, "sklearn").path
    device = runtime.load(path)
    got = device.predict(held_out.to_dict("records"))
    assert [r["prediction"] for r in got] == model.predict(held_out).tolist()
    np.testing.assert_allclose([list(r["probabilities"].values()) for r in got], model.predict_proba(held_out), atol=1e-5)


def test_wine_float32_alone_is_refused_rather_than_shipped() -> None:
    model, X, _ = _wine()
    with pytest.raises(ParityError, match="float32: .* threshold probe rows disagree") as caught:
        _artifacts(model, X, precisions=("float32",))
    assert caught.value.worst and all(row["expected_label"] != row["onnx_label"] or row["abs_diff"] > 1e-4 for row in caught.value.worst)


def _near_twins() -> tuple[Any, pd.DataFrame, float, float]:
    """An HGB regressor whose only split separates two values that round to the same float32."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    low = 1.0
    high = float(np.nextafter(np.nextafter(np.float64(1.0), 2.0), 2.0))  # two float64 ulps above 1.0
    assert np.float32(low) == np.float32(high)
    rng = np.random.default_rng(0)
    x = np.where(rng.uniform(size=400) < 0.5, low, high)
    frame = pd.DataFrame({"x": x, "noise": rng.uniform(size=400)})
    y = np.where(x > low, 10.0, -10.0)
    model = HistGradientBoostingRegressor(max_iter=3, max_depth=2, min_samples_leaf=5, learning_rate=1.0).fit(frame, y)
    return model, frame, low, high


def test_a_threshold_between_float32_values_is_probed_and_caught() -> None:
    model, frame, low, high = _near_twins()
    (threshold,) = estimator_thresholds(model)[0]
    assert low < threshold < high and np.float32(threshold) == np.float32(low)

    # Probes sit at the threshold and at its float64 and float32 neighbours on both sides.
    assert {float(np.nextafter(threshold, -np.inf)), threshold, float(np.nextafter(threshold, np.inf))} <= set(
        probe_values(threshold, lambda t: t, True)
    )
    from packager.convert import Column

    probes = threshold_probes(model, [Column("x", "numeric"), Column("noise", "numeric")], frame, limit=1000)
    assert high > threshold and any(low < v <= high for v in probes["x"])

    # Reference rows that never come near the split pass in float32; the probes do not.
    reference = frame[frame["x"] == low].reset_index(drop=True)
    with pytest.raises(ParityError, match="threshold probe rows disagree"):
        _artifacts(model, reference, precisions=("float32",))
    # With float64 allowed, the gate ships the graph with float64 thresholds, which separates them.
    art = _artifacts(model, reference)
    assert art.parity["precision"] == "float64"
    twins = pd.DataFrame({"x": [low, high], "noise": [0.5, 0.5]})
    got = onnx_answers(art.onnx_bytes, art.inputs, art.converted.onnx_inputs, twins)[0].reshape(-1)
    np.testing.assert_allclose(got, model.predict(twins), rtol=1e-6)
    assert got[0] < 0 < got[1]


@pytest.mark.parametrize(
    ("family", "compares_in_float64"),
    [
        ("DecisionTreeRegressor", False),
        ("RandomForestRegressor", False),
        ("ExtraTreesRegressor", False),
        ("GradientBoostingRegressor", False),
        ("HistGradientBoostingRegressor", True),
    ],
)
def test_which_families_compare_in_float64_is_measured(family: str, compares_in_float64: bool) -> None:
    """What packager.trees.FLOAT64_TREES claims, measured on the installed scikit-learn: fit on two
    values float32 cannot separate and see whether the fitted model tells them apart."""
    from sklearn import ensemble, tree

    from packager.trees import FLOAT64_TREES

    cls = getattr(ensemble, family, None) or getattr(tree, family)
    low, high = 1.0, float(np.nextafter(np.nextafter(np.float64(1.0), 2.0), 2.0))
    x = np.repeat([low, high, 3.0], 50).reshape(-1, 1)
    y = np.repeat([0.0, 1.0, 2.0], 50)
    kwargs: dict[str, Any] = {"random_state": 0}
    if family == "HistGradientBoostingRegressor":
        kwargs.update(max_iter=20, min_samples_leaf=5, learning_rate=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = cls(**kwargs).fit(x, y)
    low_pred, high_pred = model.predict([[low], [high]])
    assert bool(abs(high_pred - low_pred) > 0.5) is compares_in_float64
    assert (family in FLOAT64_TREES) is compares_in_float64


def test_forest_behind_a_scaler_is_probed_through_the_scaler() -> None:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"a": rng.normal(50, 20, 300), "b": rng.uniform(0, 1, 300)})
    y = ((frame["a"] > 55) ^ (frame["b"] > 0.5)).astype(int)
    model = make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0)).fit(frame, y)
    art = _artifacts(model, frame)
    assert art.parity["threshold_probes"] > 0
    # Held out: raw values mapped from every threshold back through the scaler, and their
    # float32 neighbours.
    from packager.convert import Column

    probes = threshold_probes(model, [Column("a", "numeric"), Column("b", "numeric")], frame.iloc[::7].reset_index(drop=True), limit=50000)
    outs = onnx_answers(art.onnx_bytes, art.inputs, art.converted.onnx_inputs, probes)
    np.testing.assert_allclose(outs[1], model.predict_proba(probes), atol=1e-5)


@pytest.mark.parametrize("library", ["lightgbm", "xgboost"])
def test_boosters_thresholds_are_read_from_the_fitted_model(library: str) -> None:
    """XGBoost/LightGBM: the probes use the booster's own thresholds (LightGBM's are float64),
    by the column index of a DataFrame-fitted model, whatever its feature names."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"rain mm": rng.gamma(2, 3, 300), "temp": rng.normal(20, 5, 300)})
    y = (frame["rain mm"] > 6).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if library == "lightgbm":
            from lightgbm import LGBMClassifier

            model = LGBMClassifier(n_estimators=5, num_leaves=4, verbose=-1).fit(frame, y)
        else:
            from xgboost import XGBClassifier

            model = XGBClassifier(n_estimators=5, max_depth=2).fit(frame, y)
    found = estimator_thresholds(model)
    assert found is not None and set(found) <= {0, 1} and found.get(0)
    # The split that decides the label sits near 6 mm of rain.
    assert any(abs(t - 6.0) < 0.5 for t in found[0])
    from packager.convert import Column

    probes = threshold_probes(model, [Column("rain mm", "numeric"), Column("temp", "numeric")], frame, limit=1000)
    assert len(probes) and set(probes.columns) == {"rain mm", "temp"}


def test_lightgbm_regressor_agrees_with_the_booster_at_the_float64_neighbours_of_its_thresholds(tmp_path: Path) -> None:
    """LightGBM compares float64 inputs with float64 thresholds; onnxmltools' graph compares in
    float32. The bundle must route the float64 neighbours of every split like the booster, on
    the device, including a split between two values float32 cannot tell apart."""
    import lightgbm

    rng = np.random.default_rng(0)
    low, high = 1.0, 1.0 + 1e-9
    assert np.float32(low) == np.float32(high)
    n = 600
    twin = rng.uniform(size=n) < 0.5
    x = np.where(twin, high, low) + np.where(rng.uniform(size=n) < 0.3, rng.normal(3, 1, n), 0.0)
    frame = pd.DataFrame({"x": x, "noise": rng.normal(20, 5, n)})
    y = np.where(x == high, 10.0, -10.0) + frame["noise"] * 0.1
    model = lightgbm.LGBMRegressor(n_estimators=10, num_leaves=7, min_child_samples=5, verbose=-1).fit(frame, y)
    found = estimator_thresholds(model)
    assert found is not None and any(low < t < high for t in found[0])  # a split float32 cannot hold

    # Held out: for every booster threshold, the threshold and its float64 neighbours.
    rows = []
    for feature, column in enumerate(frame.columns):
        for t in sorted(found.get(feature, ())):
            for value in (float(np.nextafter(t, -np.inf)), t, float(np.nextafter(t, np.inf))):
                row = frame.iloc[len(rows) % n].to_dict()
                row[column] = value
                rows.append(row)
    held_out = pd.DataFrame(rows)
    expected = model.predict(held_out)
    below, above = expected[0::3], expected[2::3]
    assert (np.abs(above - below) > 0.1).any()  # the neighbours of a threshold do land in other leaves

    art = _artifacts(model, frame.iloc[::5].reset_index(drop=True))
    assert art.parity["precision"] == "float64" and art.parity["threshold_probes"] > 0
    path = write_artifacts(art, tmp_path / "lgbm.edgepkg", _RESOLVED, "sklearn").path
    device = runtime.load(path)
    got = device.predict_batch({c: held_out[c].to_numpy() for c in held_out.columns})["prediction"]
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_lightgbm_classifier_graph_holds_every_booster_threshold_in_float64() -> None:
    """Multiclass, behind an imputer: every split of the shipped graph carries the booster's own
    float64 threshold (the node numbering of onnxmltools is matched tree for tree)."""
    import lightgbm
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline

    from packager.trees import graph_thresholds

    rng = np.random.default_rng(1)
    # Readings on a 0.1 grid: fewer distinct values than bins, so LightGBM splits at midpoints
    # between them, doubles that float32 cannot hold (on continuous data its thresholds are).
    frame = pd.DataFrame({"a": rng.normal(10, 3, 400), "b": rng.gamma(2, 2, 400), "c": rng.uniform(size=400)}).round(1)
    frame.loc[rng.uniform(size=400) < 0.05, "b"] = np.nan
    y = np.digitize(frame["a"].to_numpy() + frame["c"].to_numpy() * 4, [10, 13])
    model = make_pipeline(SimpleImputer(strategy="median"), lightgbm.LGBMClassifier(n_estimators=12, num_leaves=9, verbose=-1)).fit(frame, y)
    art = _artifacts(model, frame)
    assert art.parity["precision"] == "float64"
    booster = estimator_thresholds(model[-1])
    assert booster and any(float(np.float32(t)) != t for ts in booster.values() for t in ts)
    assert graph_thresholds(art.converted.onnx) == booster
    trees = [n for n in art.converted.onnx.graph.node if n.op_type.startswith("TreeEnsemble")]
    assert trees and all({"nodes_values_as_tensor", "class_weights_as_tensor"} <= {a.name for a in n.attribute} for n in trees)
