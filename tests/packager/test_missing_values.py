"""Missing values on the device, proven through a real registry build: median-imputed columns in
front of HistGradientBoosting, and string columns imputed with SimpleImputer (most_frequent /
constant) that hold None/NaN the way pandas gives them."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import runtime
from packager import build_bundle
from runtime.bundle import read_bundle
from tests.support.registry import register_model


def _weather(rows: int = 400, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {
            "temp_c": rng.normal(22, 7, rows),
            "rain_mm_7d": rng.gamma(1.5, 8, rows),
            "wind_kmh": rng.gamma(2, 6, rows),
            "region": rng.choice(["north", "south", "east"], rows),
            "soil": pd.Series(rng.choice(["clay", "sand", "loam", None], rows), dtype="str"),
        }
    )
    score = (X["temp_c"] - 22) * 0.3 - 0.1 * X["rain_mm_7d"] + 0.1 * X["wind_kmh"] + (X["region"] == "south") - (X["soil"] == "sand")
    y = (score + rng.normal(0, 1, rows) > 0).astype(int).to_numpy()
    X.loc[rng.choice(rows, rows // 20, replace=False), "rain_mm_7d"] = np.nan  # ~5% of real rows
    return X, y


def _hgb_pipeline(strategy: str = "most_frequent") -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    strings = Pipeline([("impute", SimpleImputer(strategy=strategy)), ("encode", OneHotEncoder(handle_unknown="ignore"))])
    pre = ColumnTransformer([("num", numeric, ["temp_c", "rain_mm_7d", "wind_kmh"]), ("str", strings, ["region", "soil"])])
    return Pipeline([("pre", pre), ("model", HistGradientBoostingClassifier(max_iter=40, random_state=0))])


def _logreg_pipeline(strategy: str) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    kw = {"fill_value": "unknown"} if strategy == "constant" else {}
    numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    strings = Pipeline([("impute", SimpleImputer(strategy=strategy, **kw)), ("encode", OneHotEncoder(handle_unknown="ignore"))])
    pre = ColumnTransformer([("num", numeric, ["temp_c", "rain_mm_7d", "wind_kmh"]), ("str", strings, ["region", "soil"])])
    return Pipeline([("pre", pre), ("model", LogisticRegression(max_iter=500))])


def _build(tracking_uri: str, tmp_path: Path, name: str, model: Any, X: pd.DataFrame) -> Path:
    register_model(tracking_uri, name, model, X, alias="champion")
    reference = tmp_path / f"{name}.parquet"
    X.to_parquet(reference)
    out = tmp_path / f"{name}.edgepkg"
    report = build_bundle(f"models:/{name}@champion", out, tracking_uri=tracking_uri, reference_data=reference)
    # The report times each phase (the benchmark's build section reads them).
    assert {"resolve", "load", "convert", "parity", "write", "self_test", "tag"} <= set(report.phases)
    assert all(seconds >= 0 for seconds in report.phases.values())
    return out


def _rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Records as an application sends them: a missing value is None."""
    return [{k: (None if pd.isna(v) else v) for k, v in row.items()} for row in frame.to_dict("records")]


def test_median_imputed_hgb_takes_none_on_the_device(tracking_uri: str, tmp_path: Path) -> None:
    X, y = _weather()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = _hgb_pipeline().fit(X, y)
    bundle = _build(tracking_uri, tmp_path, "rain-hgb", model, X)
    inputs = {i["name"]: i for i in read_bundle(bundle).manifest["inputs"]}
    assert inputs["rain_mm_7d"]["nullable"] is True

    device = runtime.load(bundle)
    held_out, _ = _weather(rows=120, seed=5)
    held_out.loc[::3, "rain_mm_7d"] = np.nan  # a missing rain gauge every third row
    got = device.predict(_rows(held_out))
    assert [r["prediction"] for r in got] == model.predict(held_out).tolist()
    np.testing.assert_allclose([list(r["probabilities"].values()) for r in got], model.predict_proba(held_out), atol=1e-5)


@pytest.mark.parametrize("strategy", ["most_frequent", "constant"])
@pytest.mark.parametrize("missing", [None, np.nan], ids=["None", "NaN"])
def test_imputed_string_columns_build_and_take_none(tracking_uri: str, tmp_path: Path, strategy: str, missing: Any) -> None:
    X, y = _weather(seed=1)
    # The training frame holds the missing strings the way the user's data did.
    X["soil"] = pd.Series([missing if pd.isna(v) else v for v in X["soil"].tolist()], dtype=object)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = _logreg_pipeline(strategy).fit(X, y)
    bundle = _build(tracking_uri, tmp_path, f"soil-{strategy}", model, X)
    manifest = read_bundle(bundle).manifest
    soil = next(i for i in manifest["inputs"] if i["name"] == "soil")
    assert soil["dtype"] == "string" and soil["nullable"] is True and isinstance(soil["missing_string"], str)

    device = runtime.load(bundle)
    held_out, _ = _weather(rows=90, seed=6)
    held_out.loc[::2, "soil"] = np.nan
    got = device.predict(_rows(held_out))
    # pandas hands the original a missing string as NaN: that is what None on the device means.
    assert [r["prediction"] for r in got] == model.predict(held_out).tolist()
    np.testing.assert_allclose([list(r["probabilities"].values()) for r in got], model.predict_proba(held_out), atol=1e-5)
    # No unseen-category flag for a missing value, and strict mode takes it too.
    assert not any("unseen_category:soil" in r["flags"] for r in got)
    strict = runtime.load(bundle, strict=True)
    assert strict.predict({**_rows(held_out)[0], "soil": None})["prediction"] == got[0]["prediction"]

    # Telemetry records a missing string as None, not as the string that stands for it.
    class Sink:
        def __init__(self) -> None:
            self.inputs: list[dict[str, Any]] = []

        def record(self, *, inputs: Any, **_: Any) -> None:
            self.inputs.append(dict(inputs))

    sink = Sink()
    runtime.load(bundle, telemetry=sink).predict(_rows(held_out)[:2])
    assert [r["soil"] for r in sink.inputs] == [None, _rows(held_out)[1]["soil"]]

    # A columnar batch with None and NaN in the string column answers the same.
    batch = device.predict_batch({c: held_out[c].to_numpy(dtype=object) for c in held_out.columns})
    np.testing.assert_allclose(batch["probabilities"], model.predict_proba(held_out), atol=1e-5)


def test_a_missing_string_sentinel_never_collides_with_a_real_value() -> None:
    from sklearn.impute import SimpleImputer

    from packager.convert import Column
    from packager.errors import UnsupportedModelError
    from packager.missing_strings import SENTINEL, bridge

    frame = pd.DataFrame({"c": pd.Series(["", "a", None, "a"], dtype=object)})
    imputer = SimpleImputer(strategy="most_frequent").fit(frame)
    bridged = bridge(imputer, [Column("c", "categorical")], frame)
    assert bridged.missing == {"c": SENTINEL} and SENTINEL != ""
    assert bridged.model is not imputer and bridged.model.missing_values == SENTINEL
    assert isinstance(imputer.missing_values, float)  # the original is untouched
    # A column that really holds the sentinel could not tell it from a missing value.
    held = pd.DataFrame({"c": pd.Series([SENTINEL, "a", "a", None], dtype=object)})
    with pytest.raises(UnsupportedModelError, match="NUL byte"):
        bridge(SimpleImputer(strategy="most_frequent").fit(held), [Column("c", "categorical")], held)


@pytest.mark.parametrize("pipeline", [_logreg_pipeline, _hgb_pipeline], ids=["logreg-constant", "hgb-most-frequent"])
def test_an_empty_string_is_a_value_not_a_missing_one(tracking_uri: str, tmp_path: Path, pipeline: Any) -> None:
    """The original imputes only NaN/None: "" (never seen in training) is an unknown category
    to it. The bundle must answer "" the same way, and None as imputed."""
    X, y = _weather(seed=2)
    X["soil"] = pd.Series([None if pd.isna(v) else v for v in X["soil"].tolist()], dtype=object)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = (pipeline("constant") if pipeline is _logreg_pipeline else pipeline()).fit(X, y)
    bundle = _build(tracking_uri, tmp_path, f"soil-empty-{pipeline.__name__.strip('_')}", model, X)
    soil = next(i for i in read_bundle(bundle).manifest["inputs"] if i["name"] == "soil")
    held_out, _ = _weather(rows=60, seed=7)
    # pandas hands the original a missing string as NaN (what None on the device means).
    held_out["soil"] = pd.Series([["", np.nan, "clay", "peat"][i % 4] for i in range(60)], dtype=object)
    want = model.predict_proba(held_out)
    device = runtime.load(bundle)
    got = device.predict(_rows(held_out))
    np.testing.assert_allclose([list(r["probabilities"].values()) for r in got], want, atol=1e-5)
    assert "unseen_category:soil" in got[0]["flags"] and "unseen_category:soil" not in got[1]["flags"]
    batch = device.predict_batch({c: held_out[c].to_numpy(dtype=object) for c in held_out.columns})
    np.testing.assert_allclose(batch["probabilities"], want, atol=1e-5)

    # The string the graph takes for missing is no input: refused by name, on every path.
    sentinel = soil["missing_string"]
    row = {**_rows(held_out)[2], "soil": sentinel}
    with pytest.raises(runtime.InputError, match="'soil'.*for a missing value; send None") as info:
        device.predict(row)
    assert info.value.feature == "soil"
    with pytest.raises(runtime.InputError, match="row 1: feature 'soil'"):
        device.predict([_rows(held_out)[0], row])
    columns = {c: held_out[c].to_numpy(dtype=object).copy() for c in held_out.columns}
    columns["soil"][5] = sentinel
    with pytest.raises(runtime.InputError, match="row 5: feature 'soil'"):
        device.predict_batch(columns)


def test_missing_value_probes_answered_in_one_call_equal_one_call_per_feature() -> None:
    """The original answers every feature's missing-value probe in one predict call; that must
    be what it answers probe by probe (a bool column with NaN must not turn into True)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    from packager.convert import Column
    from packager.nullable import missing_cases, with_missing
    from packager.parity import original_answers

    X, y = _weather(seed=2)
    X["irrigated"] = np.random.default_rng(2).uniform(size=len(X)) < 0.5
    y = y ^ X["irrigated"].to_numpy().astype(int)
    pre = ColumnTransformer(
        [("num", SimpleImputer(strategy="median"), ["temp_c", "rain_mm_7d", "wind_kmh", "irrigated"]), ("str", OneHotEncoder(handle_unknown="ignore"), ["region"])]
    )
    model = Pipeline([("pre", pre), ("model", HistGradientBoostingClassifier(max_iter=10, random_state=0))]).fit(X.drop(columns="soil"), y)
    frame = X.drop(columns="soil")
    columns = [Column(c, "categorical" if c == "region" else "numeric") for c in frame.columns]
    complete = frame.dropna().reset_index(drop=True)
    singles, _ = missing_cases(model, complete, frame.iloc[0:0], columns, columns, True, 20)
    for column, case in zip(columns, singles):
        alone = original_answers(model, with_missing(complete, column, 20), True)
        np.testing.assert_array_equal(case.expected.probabilities, alone.probabilities)


def test_a_feature_whose_missing_values_fail_does_not_take_another_down_with_it() -> None:
    # Real reference rows miss 'rain_mm_7d' alone, 'soil' alone, and both. The original reads
    # soil's None as a category of its own (its imputer looks for NaN), so soil cannot be
    # nullable; rain_mm_7d is median-imputed and must stay nullable, although the rows
    # missing both disagree.
    import warnings

    from packager import BuildOptions
    from packager.artifacts import sklearn_artifacts
    from packager.registry import LoadedModel
    from tests.packager import zoo

    case = next(c for c in zoo.all_cases() if c.id == "columns[scale, most_frequent-imputed strings] -> LogisticRegression")
    model, train, ref, _held = zoo._fit(case)
    assert ref["rain_mm_7d"].isna().any() and ref["soil"].isna().any()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art = sklearn_artifacts(LoadedModel(flavor="sklearn", model=model, input_example=train.head(5), signature_columns=None), ref, BuildOptions())
    nullable = {entry["name"]: entry["nullable"] for entry in art.inputs}
    assert nullable["rain_mm_7d"] is True and nullable["soil"] is False
