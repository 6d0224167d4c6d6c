"""Every supported model family converts and passes parity, and the ONNX model answers like
the original on rows it never saw (fed the way the manifest says a device must feed it).

These tests go from a fitted model straight into the packager's conversion and parity
path (registry round trips are in test_registry.py): logging 15 models would cost a minute.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from packager import BuildOptions, ParityError, UnsupportedModelError
from packager.artifacts import sklearn_artifacts
from packager.build import write_artifacts
from packager.registry import LoadedModel, ResolvedModel
from tests.packager.conftest import onnx_answers

NUMERIC = ["temp c", "wind.speed", "1st reading", "p"]
_RESOLVED = ResolvedModel(
    name="family", version="1", run_id=None, requested_uri="models:/family/1", kind="version", value="1",
    registry_uri="(none)", created_at=None, tracking_uri="(none)",
)


def _frame(rows: int, seed: int, *, strings: bool = False, nan: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    data: dict[str, Any] = {
        "temp c": rng.normal(20, 6, rows),
        "wind.speed": rng.gamma(2.0, 3.0, rows),
        "1st reading": rng.uniform(-5, 5, rows),
        "p": rng.uniform(0, 1, rows),
    }
    if strings:
        data["region name"] = rng.choice(["north", "south", "east"], rows)
        data["soil.type"] = rng.choice(["clay", "sand", "loam", "peat"], rows)
    frame = pd.DataFrame(data)
    if nan:
        frame.loc[rng.choice(rows, rows // 10, replace=False), "wind.speed"] = np.nan
    return frame


def _score(frame: pd.DataFrame) -> np.ndarray:
    s = 0.2 * (frame["temp c"] - 20) + 0.3 * frame["1st reading"] - frame["p"]
    s = s + 0.1 * frame["wind.speed"].fillna(6)
    if "region name" in frame:
        s = s + (frame["region name"] == "south") * 1.0 - (frame["soil.type"] == "sand") * 0.8
    return s.to_numpy()


def _labels(kind: str, score: np.ndarray) -> np.ndarray:
    if kind == "int":
        return (score > 0).astype(int)
    if kind == "bool":
        return score > 0
    if kind == "str":
        return np.where(score > 0.5, "high", np.where(score > -0.5, "medium", "low"))
    if kind == "int3":
        return np.digitize(score, [-0.5, 0.5]) * 2 + 3  # 3, 5, 7
    raise ValueError(kind)


def _ct_pipeline(final: Any) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, OrdinalEncoder, StandardScaler

    pre = ColumnTransformer(
        [
            ("scaled", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]), ["temp c", "wind.speed"]),
            ("minmax", MinMaxScaler(), ["1st reading", "p"]),
            ("onehot", OneHotEncoder(handle_unknown="ignore"), ["region name"]),
            ("ordinal", OrdinalEncoder(), ["soil.type"]),
        ]
    )
    return Pipeline([("pre", pre), ("model", final)])


def _families() -> list[Any]:
    from sklearn import ensemble, linear_model, neural_network, tree
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def case(id: str, make: Callable[[], Any], labels: str | None, *, strings: bool = False, nan: bool = False) -> Any:
        return pytest.param(make, labels, strings, nan, id=id)

    return [
        case("logreg-binary-int", lambda: linear_model.LogisticRegression(max_iter=500), "int"),
        case("logreg-multiclass-str", lambda: make_pipeline(StandardScaler(), linear_model.LogisticRegression(max_iter=500)), "str"),
        case("linear-regression", linear_model.LinearRegression, None),
        case("ridge", lambda: linear_model.Ridge(alpha=0.5), None),
        case("decision-tree-bool", lambda: tree.DecisionTreeClassifier(max_depth=5, random_state=0), "bool"),
        case("decision-tree-regressor", lambda: tree.DecisionTreeRegressor(max_depth=5, random_state=0), None),
        case("random-forest-multiclass-int", lambda: ensemble.RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0), "int3"),
        case("random-forest-regressor", lambda: ensemble.RandomForestRegressor(n_estimators=5, max_depth=4, random_state=0), None),
        case("gradient-boosting-str", lambda: ensemble.GradientBoostingClassifier(n_estimators=10, max_depth=2, random_state=0), "str"),
        case("gradient-boosting-regressor", lambda: ensemble.GradientBoostingRegressor(n_estimators=10, max_depth=2, random_state=0), None),
        case("hist-gradient-boosting-binary", lambda: ensemble.HistGradientBoostingClassifier(max_iter=10, random_state=0), "int", nan=True),
        case("hist-gradient-boosting-regressor", lambda: ensemble.HistGradientBoostingRegressor(max_iter=10, random_state=0), None, nan=True),
        case("mlp-classifier", lambda: make_pipeline(StandardScaler(), neural_network.MLPClassifier(hidden_layer_sizes=(8,), max_iter=300, random_state=0)), "str"),
        case("mlp-regressor", lambda: make_pipeline(StandardScaler(), neural_network.MLPRegressor(hidden_layer_sizes=(8,), max_iter=300, random_state=0)), None),
        case("pipeline-columns-logreg-bool", lambda: _ct_pipeline(linear_model.LogisticRegression(max_iter=500)), "bool", strings=True, nan=True),
        case("pipeline-columns-forest-str", lambda: _ct_pipeline(ensemble.RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0)), "str", strings=True, nan=True),
        case("pipeline-columns-ridge", lambda: _ct_pipeline(linear_model.Ridge()), None, strings=True, nan=True),
    ]


def _fit(make: Callable[[], Any], labels: str | None, strings: bool, nan: bool) -> tuple[Any, pd.DataFrame, pd.DataFrame]:
    train, test = _frame(160, 1, strings=strings, nan=nan), _frame(60, 2, strings=strings, nan=nan)
    y = _labels(labels, _score(train)) if labels else _score(train) * 10 + 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLP convergence on tiny data
        model = make().fit(train, y)
    return model, train, test


def _artifacts(model: Any, example: pd.DataFrame, **kw: Any) -> Any:
    loaded = LoadedModel(flavor="sklearn", model=model, input_example=example, signature_columns=None)
    return sklearn_artifacts(loaded, kw.pop("reference_data", None), BuildOptions(**kw))


@pytest.mark.parametrize(("make", "labels", "strings", "nan"), _families())
def test_family_converts_and_answers_like_the_original(
    make: Callable[[], Any], labels: str | None, strings: bool, nan: bool, tmp_path: Path
) -> None:
    model, train, test = _fit(make, labels, strings, nan)
    art = _artifacts(model, train.head(5))

    assert art.parity["rows"] >= 205 and art.parity["precision"] in ("float32", "float64")
    assert [i["name"] for i in art.inputs] == list(train.columns)
    # Same-typed columns share one input: one input per dtype, slots 0..width-1 each (a string
    # the runtime one-hot encodes fills one float slot per category, from its slot on).
    by_input: dict[str, list[int]] = {}
    for entry in art.inputs:
        width = len(entry["encoding"]["categories"]) if "encoding" in entry else 1
        by_input.setdefault(entry["onnx_input"], []).extend(range(entry["slot"], entry["slot"] + width))
    assert {s["name"]: sorted(by_input[s["name"]]) for s in art.converted.onnx_inputs} == {
        s["name"]: list(range(s["width"])) for s in art.converted.onnx_inputs
    }
    assert 1 <= len(art.converted.onnx_inputs) <= (2 if strings else 1)

    # Held-out rows, complete ones only unless the manifest promises NaN is fine.
    nullable = {i["name"] for i in art.inputs if i["nullable"]}
    gaps = test.isna()
    usable = test[~gaps[[c for c in test.columns if c not in nullable]].any(axis=1)]
    outs = onnx_answers(art.onnx_bytes, art.inputs, art.converted.onnx_inputs, usable)
    if labels:
        to_class = dict(zip(art.label_values, art.classes))
        got = [to_class[v] for v in outs[0].tolist()]
        assert got == model.predict(usable).tolist()
        np.testing.assert_allclose(outs[1], model.predict_proba(usable), atol=1e-4, rtol=0)
        assert art.classes == model.classes_.tolist()
        assert {type(c) for c in art.classes} == {type(c) for c in model.classes_.tolist()}
    else:
        np.testing.assert_allclose(outs[0].reshape(-1), model.predict(usable), rtol=1e-4, atol=1e-6)

    # Written as a bundle, it loads and passes its golden self-test through the device runtime.
    bundle = write_artifacts(art, tmp_path / "family.edgepkg", _RESOLVED, "sklearn")
    assert bundle.manifest["outputs"]["classes"] == (model.classes_.tolist() if labels else None)

    # golden.json holds what the ORIGINAL model answers on its rows.
    golden = pd.DataFrame(art.golden["inputs"]).astype({c: float for c in train.columns if c in NUMERIC})
    assert 1 <= len(golden) <= 20
    if labels:
        assert art.golden["outputs"]["label"] == model.predict(golden).tolist()
        np.testing.assert_allclose(art.golden["outputs"]["probabilities"], model.predict_proba(golden), atol=1e-12)
    else:
        np.testing.assert_allclose(art.golden["outputs"]["prediction"], model.predict(golden), atol=1e-12)


def test_nan_is_proven_per_feature_not_assumed() -> None:
    from sklearn.linear_model import LogisticRegression

    model, train, _ = _fit(lambda: _ct_pipeline(LogisticRegression(max_iter=500)), "int", True, True)
    art = _artifacts(model, train.head(5))
    nullable = {i["name"]: i["nullable"] for i in art.inputs}
    # Imputed columns take NaN; MinMaxScaler passes NaN through to LogisticRegression, which refuses it.
    # OneHotEncoder(handle_unknown="ignore") takes a missing string as unknown (all zeros), and so
    # does the graph fed ""; OrdinalEncoder refuses it.
    assert nullable == {"temp c": True, "wind.speed": True, "1st reading": False, "p": False, "region name": True, "soil.type": False}
    assert art.parity["rows_with_missing"] >= 2 * BuildOptions().nan_probe_rows
    assert any(v is None for v in art.golden["inputs"]["temp c"] + art.golden["inputs"]["wind.speed"])


@pytest.mark.parametrize(
    ("make", "labels"),
    [
        pytest.param(lambda: __import__("sklearn.ensemble", fromlist=["x"]).HistGradientBoostingRegressor(max_iter=10, random_state=0), None, id="hist-gradient-boosting"),
        pytest.param(lambda: __import__("sklearn.ensemble", fromlist=["x"]).RandomForestClassifier(n_estimators=5, random_state=0), "int", id="random-forest"),
    ],
)
def test_nullable_matches_what_onnx_really_does_with_nan(make: Callable[[], Any], labels: str | None) -> None:
    model, train, test = _fit(make, labels, False, True)
    art = _artifacts(model, train.head(5))
    complete = test.dropna()
    verdicts = {}
    for entry in art.inputs:
        probe = complete.copy()
        probe[entry["name"]] = np.nan
        outs = onnx_answers(art.onnx_bytes, art.inputs, art.converted.onnx_inputs, probe)
        if labels:
            expected, got = model.predict_proba(probe), outs[1]
        else:
            expected, got = model.predict(probe), outs[0].reshape(-1)
        verdicts[entry["name"]] = (entry["nullable"], bool(np.allclose(got, expected, rtol=1e-4, atol=1e-4)))
    # A feature declared nullable answers like the original with NaN in it, on unseen rows too.
    assert all(agrees for nullable, agrees in verdicts.values() if nullable), verdicts
    if labels is None:
        assert all(nullable for nullable, _ in verdicts.values()), verdicts  # HGB routes NaN like sklearn
    else:
        # The random forest routes NaN differently for some features: those are refused NaN.
        assert any(not nullable and not agrees for nullable, agrees in verdicts.values()), verdicts


def test_float32_mismatch_is_retried_in_double_precision() -> None:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeRegressor

    rng = np.random.default_rng(0)
    # Large offset, tiny spread: StandardScaler in float32 lands on the other side of thresholds.
    X = pd.DataFrame({"x": 10000 + rng.random(300), "z": rng.random(300)})
    model = make_pipeline(StandardScaler(), DecisionTreeRegressor(random_state=0)).fit(X, rng.random(300))
    art = _artifacts(model, X.head(20))
    assert art.parity["attempts"] == ["float32", "float64"]
    assert art.parity["precision"] == "float64" == art.converted.precision
    assert {s["dtype"] for s in art.converted.onnx_inputs} == {"float64"}
    outs = onnx_answers(art.onnx_bytes, art.inputs, art.converted.onnx_inputs, X)
    np.testing.assert_allclose(outs[0].reshape(-1), model.predict(X), rtol=1e-4, atol=1e-6)

    with pytest.raises(ParityError) as err:
        _artifacts(model, X.head(20), precisions=("float32",))
    assert "float32: " in str(err.value) and "worst rows" in str(err.value)
    assert err.value.worst and all(row["abs_diff"] > 1e-6 for row in err.value.worst)


def test_parity_failure_lists_every_attempt_and_the_worst_rows() -> None:
    from sklearn.linear_model import LogisticRegression

    model, train, _ = _fit(lambda: _ct_pipeline(LogisticRegression(max_iter=500)), "int", True, True)
    with pytest.raises(ParityError) as err:
        _artifacts(model, train.head(5), abs_tolerance=0.0, rel_tolerance=0.0)
    message = str(err.value)
    assert "float32: " in message and "float64: " in message and message.count("rows disagree") == 2
    worst = err.value.worst
    assert worst[0]["inputs"].keys() == set(train.columns) and len(worst) == BuildOptions().worst_rows
    assert worst[0]["abs_diff"] == max(row["abs_diff"] for row in worst) > 0


def test_reference_data_frame_drives_parity_ranges_and_baseline() -> None:
    from sklearn.linear_model import LogisticRegression

    model, train, test = _fit(lambda: _ct_pipeline(LogisticRegression(max_iter=500)), "int", True, True)
    art = _artifacts(model, None, reference_data=test)
    complete = int((~test.isna().any(axis=1)).sum())
    assert art.parity["rows"] - art.parity["rows_with_missing"] == complete
    temp = next(i for i in art.inputs if i["name"] == "temp c")
    assert temp["range"] == [float(test["temp c"].min()), float(test["temp c"].max())]
    minmax = next(i for i in art.inputs if i["name"] == "p")
    assert minmax["range"] == [float(train["p"].min()), float(train["p"].max())]  # from the fitted MinMaxScaler
    assert next(i for i in art.inputs if i["name"] == "soil.type")["categories"] == ["clay", "loam", "peat", "sand"]
    region = art.baseline["features"]["region name"]
    expected = test["region name"].value_counts(normalize=True).sort_index().to_dict()
    assert region["frequencies"] == pytest.approx(expected)
    wind = art.baseline["features"]["wind.speed"]
    assert wind["missing"] == int(test["wind.speed"].isna().sum()) and sum(wind["counts"]) == int(test["wind.speed"].notna().sum())
    predicted = pd.Series(model.predict(test[~test.isna().any(axis=1)])).astype(str).value_counts(normalize=True).to_dict()
    assert art.baseline["prediction"]["frequencies"] == pytest.approx(predicted)


@pytest.mark.parametrize(
    ("make", "step", "cls", "reason"),
    [
        pytest.param(
            lambda: _svc(),
            "",
            "SVC",
            "Platt",
            id="svc-probability",
        ),
        pytest.param(
            lambda: _ct_pipeline_with(
                __import__("sklearn.preprocessing", fromlist=["OneHotEncoder"]).OneHotEncoder(
                    handle_unknown="infrequent_if_exist", max_categories=2
                )
            ),
            "pre/cat",
            "OneHotEncoder",
            "infrequent_if_exist",
            id="onehot-infrequent",
        ),
        pytest.param(
            lambda: _ct_pipeline_with(
                __import__("sklearn.preprocessing", fromlist=["OneHotEncoder"]).OneHotEncoder(handle_unknown="warn", max_categories=2)
            ),
            "pre/cat",
            "OneHotEncoder",
            "'warn') with infrequent categories",
            id="onehot-warn-infrequent",
        ),
        pytest.param(
            lambda: _native_categorical_hgb(),
            "model",
            "HistGradientBoostingClassifier",
            "categorical",
            id="hgb-native-categorical",
        ),
        pytest.param(
            lambda: _ct_pipeline_with(None, poly=True),
            "pre/num/poly",
            "SplineTransformer",
            "has no ONNX converter",
            id="unsupported-step",
        ),
    ],
)
def test_known_wrong_and_unsupported_steps_are_refused_before_converting(make: Callable[[], Any], step: str, cls: str, reason: str) -> None:
    model, X = make()
    with pytest.raises(UnsupportedModelError) as err:
        _artifacts(model, X.head(5))
    assert err.value.cls == cls and err.value.step == step
    assert cls in str(err.value) and reason in str(err.value)


@pytest.mark.parametrize("handle_unknown", ["infrequent_if_exist", "warn"])
def test_onehot_that_encodes_unknowns_as_zeros_under_another_name_converts_like_ignore(handle_unknown: str) -> None:
    """Without infrequent categories, 'infrequent_if_exist' and 'warn' encode an unknown
    category as all zeros, as 'ignore' does; skl2onnx only knows 'ignore' for it."""
    from sklearn.preprocessing import OneHotEncoder

    model, train = _ct_pipeline_with(OneHotEncoder(handle_unknown=handle_unknown))
    art = _artifacts(model, train.head(5))
    assert art.parity["label_agreement"] == 1.0
    assert model.named_steps["pre"].named_transformers_["cat"].handle_unknown == handle_unknown  # the original is untouched
    rows = train.head(8).copy()
    rows.loc[::2, "region name"] = "atlantis"  # unknown to the encoder
    rows.loc[1::3, "soil.type"] = ""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 'warn' warns about the unknown categories, as it should
        want = model.predict_proba(rows)
    got = onnx_answers(art.onnx_bytes, art.inputs, art.converted.onnx_inputs, rows)
    np.testing.assert_allclose(np.asarray(got[1]), want, atol=1e-5)


def _ct_pipeline_with(encoder: Any, *, poly: bool = False) -> tuple[Any, pd.DataFrame]:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, SplineTransformer, StandardScaler

    train = _frame(120, 5, strings=True)
    # SplineTransformer: one of the few transformers neither skl2onnx nor onnxmltools converts.
    num = Pipeline([("scale", StandardScaler()), ("poly", SplineTransformer(n_knots=3))]) if poly else StandardScaler()
    pre = ColumnTransformer([("num", num, NUMERIC), ("cat", encoder or OneHotEncoder(handle_unknown="ignore"), ["region name", "soil.type"])])
    model = Pipeline([("pre", pre), ("model", LogisticRegression(max_iter=300))]).fit(train, _labels("int", _score(train)))
    return model, train


def _svc() -> tuple[Any, pd.DataFrame]:
    from sklearn.svm import SVC

    train = _frame(120, 4)
    return SVC(probability=True, random_state=0).fit(train, _labels("int", _score(train))), train


def _native_categorical_hgb() -> tuple[Any, pd.DataFrame]:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline

    train = _frame(120, 6)
    train["zone"] = pd.Categorical(np.random.default_rng(0).choice(["a", "b"], len(train)))
    train["zone"] = train["zone"].cat.codes.astype(float)
    hgb = HistGradientBoostingClassifier(max_iter=5, categorical_features=[4], random_state=0)
    model = Pipeline([("model", hgb)]).fit(train, _labels("int", _score(train)))
    return model, train


def test_target_range_comes_from_the_target_column_of_the_reference_data() -> None:
    from sklearn.linear_model import Ridge

    from packager import ReferenceDataError

    model, train, test = _fit(lambda: Ridge(), None, False, False)
    y = _score(test) * 10 + 3
    art = _artifacts(model, None, reference_data=test.assign(yield_t=y), target_column="yield_t")
    assert art.target_range == [float(y.min()), float(y.max())]
    assert art.parity["rows"] == len(test) + art.parity["rows_with_missing"]
    with pytest.raises(ReferenceDataError, match="no target column 'nope'"):
        _artifacts(model, None, reference_data=test, target_column="nope")


_BUILD_IN_CHILD = """
import pickle, sys
from packager.artifacts import sklearn_artifacts
from packager.build import write_artifacts
from packager.registry import LoadedModel
from packager import BuildOptions
from tests.packager.test_families import _RESOLVED
model, example = pickle.load(open(sys.argv[1], "rb"))
art = sklearn_artifacts(LoadedModel(flavor="sklearn", model=model, input_example=example, signature_columns=None), None, BuildOptions())
print(write_artifacts(art, sys.argv[2], _RESOLVED, "sklearn").sha256)
"""


def test_bundle_bytes_do_not_depend_on_the_process_hash_seed(tmp_path: Path) -> None:
    import os
    import pickle
    import subprocess
    import sys

    from sklearn.ensemble import RandomForestClassifier

    model, train, _ = _fit(lambda: _ct_pipeline(RandomForestClassifier(n_estimators=3, random_state=0)), "str", True, True)
    here = write_artifacts(_artifacts(model, train.head(5)), tmp_path / "here.edgepkg", _RESOLVED, "sklearn")
    (tmp_path / "model.pkl").write_bytes(pickle.dumps((model, train.head(5))))
    root = Path(__file__).resolve().parents[2]
    # Without care, seeds 0 and 1 give different bytes here (skl2onnx keeps opsets in a set).
    for seed in ("0", "1"):
        child = subprocess.run(
            [sys.executable, "-c", _BUILD_IN_CHILD, str(tmp_path / "model.pkl"), str(tmp_path / f"child{seed}.edgepkg")],
            cwd=root, env={**os.environ, "PYTHONHASHSEED": seed}, capture_output=True, text=True, check=True,
        )
        assert child.stdout.strip().splitlines()[-1] == here.sha256
        assert (tmp_path / f"child{seed}.edgepkg").read_bytes() == (tmp_path / "here.edgepkg").read_bytes()


def test_onnx_flavor_per_column_inputs_with_zipmap_are_packed_under_original_names(tmp_path: Path) -> None:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.linear_model import LogisticRegression

    from packager.onnx_flavor import from_onnx

    model, train, test = _fit(lambda: _ct_pipeline(LogisticRegression(max_iter=500)), "str", True, True)
    types = [(c, FloatTensorType([None, 1]) if c in NUMERIC else StringTensorType([None, 1])) for c in train.columns]
    onx = to_onnx(model, initial_types=types, target_opset={"": 17, "ai.onnx.ml": 3})  # ZipMap on
    assert [i.name for i in onx.graph.input][:3] == ["temp_c", "wind_speed", "_1st_reading"]
    art = from_onnx(LoadedModel(flavor="onnx", model=onx, input_example=train.head(5), signature_columns=None), None, BuildOptions())
    assert [i["name"] for i in art.inputs] == list(train.columns)
    assert [s["name"] for s in art.converted.onnx_inputs] == ["float_input", "string_input"]
    assert art.classes == ["high", "low", "medium"] and art.estimator == "onnx"
    complete = test.dropna()
    outs = onnx_answers(art.onnx_bytes, art.inputs, art.converted.onnx_inputs, complete)
    assert outs[0].tolist() == model.predict(complete).tolist()
    np.testing.assert_allclose(outs[1], model.predict_proba(complete), atol=1e-4)
    write_artifacts(art, tmp_path / "onnx.edgepkg", _RESOLVED, "onnx")  # loads and self-tests on the device side


def test_signature_types_win_over_what_a_csv_reader_guesses(tmp_path: Path) -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(3)
    train = pd.DataFrame({"zone": rng.choice(["10", "20", "30"], 120).astype(object), "t": rng.normal(0, 1, 120)})
    y = ((train["zone"] == "20") ^ (train["t"] > 0)).astype(int)
    pre = ColumnTransformer([("zone", OneHotEncoder(handle_unknown="ignore"), ["zone"]), ("t", "passthrough", ["t"])])
    model = Pipeline([("pre", pre), ("clf", LogisticRegression())]).fit(train, y)
    train.to_csv(tmp_path / "ref.csv", index=False)
    assert pd.api.types.is_integer_dtype(pd.read_csv(tmp_path / "ref.csv")["zone"])  # the trap

    loaded = LoadedModel(flavor="sklearn", model=model, input_example=None, signature_columns=[("zone", "string"), ("t", "double")])
    art = sklearn_artifacts(loaded, tmp_path / "ref.csv", BuildOptions())
    zone = art.inputs[0]
    assert (zone["kind"], zone["dtype"], zone["categories"]) == ("categorical", "string", ["10", "20", "30"])
    outs = onnx_answers(art.onnx_bytes, art.inputs, art.converted.onnx_inputs, train)
    np.testing.assert_allclose(outs[1], model.predict_proba(train), atol=1e-4)


def test_passthrough_columns_convert_but_custom_functions_are_refused() -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    train = _frame(120, 8)
    y = _score(train)
    keep = Pipeline([("pre", ColumnTransformer([("s", StandardScaler(), ["temp c"])], remainder="passthrough")), ("r", Ridge())]).fit(train, y)
    art = _artifacts(keep, train.head(5))
    outs = onnx_answers(art.onnx_bytes, art.inputs, art.converted.onnx_inputs, train)
    np.testing.assert_allclose(outs[0].reshape(-1), keep.predict(train), rtol=1e-4, atol=1e-5)

    logs = Pipeline([("pre", ColumnTransformer([("log", FunctionTransformer(np.log1p), ["p"])], remainder="passthrough")), ("r", Ridge())]).fit(train, y)
    with pytest.raises(UnsupportedModelError, match=r"step 'pre/log' \(FunctionTransformer\) is refused: .*log1p.*arbitrary Python"):
        _artifacts(logs, train.head(5))


def test_double_retry_works_behind_an_imputer_too() -> None:
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeRegressor

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"x": 10000 + rng.random(300), "z": rng.random(300)})
    X.loc[::17, "z"] = np.nan
    model = make_pipeline(SimpleImputer(), StandardScaler(), DecisionTreeRegressor(random_state=0)).fit(X, rng.random(300))
    art = _artifacts(model, X.head(20))
    assert art.parity["attempts"] == ["float32", "float64"] and art.parity["precision"] == "float64"
    assert {i["name"]: i["nullable"] for i in art.inputs} == {"x": True, "z": True}
    outs = onnx_answers(art.onnx_bytes, art.inputs, art.converted.onnx_inputs, X)
    np.testing.assert_allclose(outs[0].reshape(-1), model.predict(X), rtol=1e-4, atol=1e-6)


def test_model_fitted_on_a_numpy_array_and_logged_with_a_numpy_example(tmp_path: Path) -> None:
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    from packager.registry import load

    train = _frame(120, 9)
    X = train.to_numpy()
    model = LogisticRegression(max_iter=300).fit(X, _labels("int", _score(train)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlflow.sklearn.save_model(model, tmp_path / "model", input_example=X[:5], serialization_format="pickle")
    loaded = load(tmp_path / "model", trust_pickle=True)
    assert loaded.signature_columns is None and list(loaded.input_example.columns) == ["0", "1", "2", "3"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn: "X has feature names" for the reference frame
        art = sklearn_artifacts(loaded, None, BuildOptions())
    assert [i["name"] for i in art.inputs] == ["0", "1", "2", "3"]
    frame = pd.DataFrame(X, columns=["0", "1", "2", "3"])
    outs = onnx_answers(art.onnx_bytes, art.inputs, art.converted.onnx_inputs, frame)
    np.testing.assert_allclose(outs[1], model.predict_proba(X), atol=1e-4)


def test_a_bundle_that_fails_the_device_self_test_is_removed(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    from packager import SelfTestFailedError

    model, train, _ = _fit(lambda: LogisticRegression(max_iter=300), "int", False, False)
    art = _artifacts(model, train.head(5))
    # Golden answers that the model in the bundle cannot reproduce (a corrupted conversion).
    art.golden["outputs"]["probabilities"] = [[p[1], p[0]] for p in art.golden["outputs"]["probabilities"]]
    out = tmp_path / "bad.edgepkg"
    with pytest.raises(SelfTestFailedError, match="fails to load on the device side"):
        write_artifacts(art, out, _RESOLVED, "sklearn")
    assert not out.exists()
