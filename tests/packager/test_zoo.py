"""The model zoo (tests/packager/zoo.py): every case builds and agrees with its original on
held-out rows the parity gate never saw, or is refused with a message naming the step.

A representative slice runs in CI; the whole catalogue runs with ``-m zoo`` (deselected by
default in pyproject.toml): ``python -m pytest tests/packager/test_zoo.py -m zoo -n 0``.
XGBoost and LightGBM go through a real SQLite MLflow registry in each flavor they are
logged with: ``mlflow.sklearn``, their native ``mlflow.xgboost`` / ``mlflow.lightgbm``
flavors (estimator and bare Booster), and ``mlflow.onnx`` (onnxmltools' own conversion).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.packager import zoo

SLICE = {
    "LogisticRegression",
    "RandomForestRegressor",
    "HistGradientBoostingClassifier",
    "LinearSVC",
    "RidgeClassifier",
    "Perceptron",
    "KNeighborsClassifier",
    "CalibratedClassifierCV",
    "StackingClassifier",
    "VotingClassifier",
    "BaggingRegressor",
    "AdaBoostClassifier",
    "OneVsRestClassifier",
    "LassoCV",
    "PoissonRegressor",
    "GaussianNB",
    "SVC",
    "DummyClassifier",
    "TransformedTargetRegressor",
    "columns[PCA] -> LogisticRegression",
    "columns[KBinsDiscretizer-ordinal] -> Ridge",
    "columns[QuantileTransformer] -> Ridge",
    "columns[scale, OrdinalEncoder(unknown=-1)] -> RandomForest",
    "columns[scale, onehot] -> SGDClassifier(hinge) (label-only)",
    "XGBClassifier",
    "columns[impute, scale, onehot] -> LGBMRegressor",
}

_ALL = zoo.all_cases()


def _check(case: zoo.Case, tmp_path: Path) -> zoo.Outcome:
    outcome = zoo.run_case(case, tmp_path, direct=False)
    assert outcome.status != "disagrees", f"{case.id}: the bundle answers differently from the original: {outcome.detail}"
    assert outcome.status != "crashed", f"{case.id}: edgepack failed with an unexpected {outcome.error}: {outcome.detail}"
    if outcome.status == "refused":
        # A clear refusal names the step: its path inside the model, or the class of a bare estimator.
        model, *_ = zoo._fit(case)
        from packager.converters import walk_all

        names = {type(s.obj).__name__ for s in walk_all(model)} | {f"'{s.path}'" for s in walk_all(model) if s.path}
        assert any(n in outcome.detail for n in names), f"{case.id}: refusal names no step: {outcome.detail}"
        assert outcome.error in ("UnsupportedModelError", "ConversionError", "ParityError"), outcome.error
    return outcome


@pytest.mark.parametrize("case", [c for c in _ALL if c.id in SLICE], ids=lambda c: c.id)
def test_zoo_slice_builds_and_agrees_or_is_refused_naming_the_step(case: zoo.Case, tmp_path: Path) -> None:
    _check(case, tmp_path)


@pytest.mark.zoo
@pytest.mark.parametrize("case", _ALL, ids=lambda c: c.id)
def test_zoo_builds_and_agrees_or_is_refused_naming_the_step(case: zoo.Case, tmp_path: Path) -> None:
    _check(case, tmp_path)


def test_what_the_issue_names_builds(tmp_path: Path) -> None:
    """Label-only classifiers, the meta-estimators and preprocessing steps the issue lists: they build."""
    wanted = {
        "LinearSVC", "RidgeClassifier", "Perceptron", "PassiveAggressiveClassifier", "LogisticRegressionCV", "RidgeCV",
        "CalibratedClassifierCV", "BaggingClassifier", "AdaBoostRegressor", "StackingRegressor", "VotingRegressor",
        "OneVsRestClassifier", "columns[TruncatedSVD] -> Ridge", "columns[PolynomialFeatures] -> LogisticRegression",
        "columns[PowerTransformer] -> Ridge", "columns[MaxAbsScaler] -> Ridge", "columns[Normalizer] -> LogisticRegression",
        "columns[VarianceThreshold] -> Ridge", "columns[SelectKBest] -> LogisticRegression",
    }
    cases = [c for c in _ALL if c.id in wanted]
    assert len(cases) == len(wanted)
    outcomes = [zoo.run_case(c, tmp_path, direct=False) for c in cases]
    assert {o.case: o.status for o in outcomes} == {c: "builds" for c in wanted}
    label_only = {o.case for o in outcomes if o.label_only}
    assert label_only == {"LinearSVC", "RidgeClassifier", "Perceptron", "PassiveAggressiveClassifier"}


# ---------------------------------------------------------------------------------------
# label-only bundles on the device side


def test_label_only_bundle_says_so_and_results_have_no_probabilities(tmp_path: Path) -> None:
    import runtime
    from packager import BuildOptions
    from packager.build import sklearn_artifacts, write_artifacts
    from packager.registry import LoadedModel, ResolvedModel
    from sklearn.svm import LinearSVC

    train, y, ref, held = zoo.frames("numeric", "classification")
    model = LinearSVC().fit(train, y)
    art = sklearn_artifacts(LoadedModel(flavor="sklearn", model=model, input_example=train.head(5), signature_columns=None), ref, BuildOptions())
    resolved = ResolvedModel(name="svc", version="1", run_id=None, requested_uri="models:/svc/1", kind="version", value="1",
                             registry_uri="(none)", created_at=None, tracking_uri="(none)")
    path = tmp_path / "svc.edgepkg"
    write_artifacts(art, path, resolved, "sklearn")
    bundle = runtime.load(path)
    outputs = bundle.manifest["outputs"]
    assert outputs["label_only"] is True and outputs["probabilities"] is None and outputs["classes"] == sorted(set(y))
    assert bundle.manifest["onnx"]["converters"] == [{"step": "", "estimator": "sklearn.svm._classes.LinearSVC", "converter": "skl2onnx:SklearnLinearSVC"}]
    one = bundle.predict(held.iloc[0].to_dict())
    assert set(one) == {"prediction", "flags"} and one["prediction"] == model.predict(held.head(1))[0]
    many = bundle.predict([held.iloc[i].to_dict() for i in range(5)])
    assert all(set(r) == {"prediction", "flags"} for r in many)
    batch = bundle.predict_batch({c: held[c].to_numpy() for c in held.columns})
    assert "probabilities" not in batch and batch["prediction"].tolist() == model.predict(held).tolist()


# ---------------------------------------------------------------------------------------
# XGBoost and LightGBM through a real registry, in every flavor


def _boosting_data() -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame, pd.DataFrame]:
    # Column names that are not f0..fN and carry spaces and dots (LightGBM sanitises them).
    return zoo.frames("numericints", "classification")


def _log(uri: str, name: str, flavor: str, model: Any, X: pd.DataFrame) -> None:
    import mlflow

    from tests.support.registry import experiment_for, mlflow_pointed_at

    with mlflow_pointed_at(uri), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mlflow.start_run(experiment_id=experiment_for(uri)):
            example = X.head(5)
            if flavor == "sklearn":
                mlflow.sklearn.log_model(model, name="model", registered_model_name=name, input_example=example, serialization_format="pickle")
            elif flavor == "xgboost":
                mlflow.xgboost.log_model(model, name="model", registered_model_name=name, input_example=example)
            elif flavor == "lightgbm":
                mlflow.lightgbm.log_model(model, name="model", registered_model_name=name, input_example=example)
            else:
                # A DataFrame example: the signature then names the (N, 6) input's columns.
                mlflow.onnx.log_model(model, name="model", registered_model_name=name, input_example=example.astype(np.float32))


def _onnxmltools(model: Any, width: int) -> Any:
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    if type(model).__module__.startswith("xgboost"):
        import copy

        model = copy.deepcopy(model)
        model.get_booster().feature_names = None
        return onnxmltools.convert_xgboost(model, initial_types=[("input", FloatTensorType([None, width]))], target_opset=15)
    return onnxmltools.convert_lightgbm(model, initial_types=[("input", FloatTensorType([None, width]))], target_opset=15, zipmap=False)


def _flavor_cases() -> list[tuple[str, str, str, Any]]:
    """``(id, library, flavor, make)``: ``make(train, y)`` returns the object to log."""
    import lightgbm
    import xgboost
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    def xgb(train: Any, y: Any) -> Any:
        return xgboost.XGBClassifier(n_estimators=8, max_depth=3).fit(train, y)

    def lgbm(train: Any, y: Any) -> Any:
        return lightgbm.LGBMClassifier(n_estimators=8, num_leaves=7, verbose=-1).fit(train, y)

    def xgb_booster(train: Any, y: Any) -> Any:
        return xgboost.train({"objective": "multi:softprob", "num_class": 3, "max_depth": 3}, xgboost.DMatrix(train, y), 8)

    def lgbm_booster(train: Any, y: Any) -> Any:
        return lightgbm.train({"objective": "multiclass", "num_class": 3, "num_leaves": 7, "verbose": -1}, lightgbm.Dataset(train, y), 8)

    def in_columns(final: Any) -> Any:
        def fit(train: Any, y: Any) -> Any:
            pre = ColumnTransformer([("scale", StandardScaler(), list(train.columns[:3])), ("keep", "passthrough", list(train.columns[3:]))])
            return Pipeline([("pre", pre), ("model", final())]).fit(train, y)

        return fit

    return [
        ("xgboost-sklearn-flavor", "xgboost", "sklearn", xgb),
        ("xgboost-in-columns-sklearn-flavor", "xgboost", "sklearn", in_columns(lambda: xgboost.XGBClassifier(n_estimators=8, max_depth=3))),
        ("xgboost-native-flavor", "xgboost", "xgboost", xgb),
        ("xgboost-booster-native-flavor", "xgboost", "xgboost", xgb_booster),
        ("xgboost-onnx-flavor", "xgboost", "onnx", xgb),
        ("lightgbm-sklearn-flavor", "lightgbm", "sklearn", lgbm),
        ("lightgbm-in-columns-sklearn-flavor", "lightgbm", "sklearn", in_columns(lambda: lightgbm.LGBMClassifier(n_estimators=8, num_leaves=7, verbose=-1))),
        ("lightgbm-native-flavor", "lightgbm", "lightgbm", lgbm),
        ("lightgbm-booster-native-flavor", "lightgbm", "lightgbm", lgbm_booster),
        ("lightgbm-onnx-flavor", "lightgbm", "onnx", lgbm),
    ]


def _expected(fitted: Any, held: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    import lightgbm
    import xgboost

    if isinstance(fitted, xgboost.Booster):
        probabilities = fitted.predict(xgboost.DMatrix(held))
    elif isinstance(fitted, lightgbm.Booster):
        probabilities = fitted.predict(held)
    else:
        return fitted.predict(held), fitted.predict_proba(held)
    return probabilities.argmax(axis=1), probabilities


def flavor_outcome(case: tuple[str, str, str, Any], uri: str, tmp_path: Path) -> zoo.Outcome:
    import runtime
    from packager import build_bundle
    from packager.errors import PackagerError

    case_id, _library, flavor, make = case
    train, y, ref, held = _boosting_data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = make(train, y)
    logged = _onnxmltools(fitted, train.shape[1]) if flavor == "onnx" else fitted
    _log(uri, case_id, flavor, logged, train)
    path = tmp_path / f"{case_id}.edgepkg"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = build_bundle(f"models:/{case_id}/1", path, tracking_uri=uri, reference_data=ref)
    except PackagerError as exc:
        return zoo.Outcome(case_id, "boosting (registry)", "refused", str(exc), type(exc).__name__)
    bundle = runtime.load(path)
    labels, probabilities = _expected(fitted, held)
    got = bundle.predict_batch({c: held[c].to_numpy() for c in held.columns})
    outcome = zoo.Outcome(case_id, "boosting (registry)", "builds", precision=report.precision,
                          converters=", ".join(sorted({c["converter"] for c in report.converters})) or f"{flavor} as logged")
    if got["prediction"].tolist() != [int(v) for v in labels.tolist()]:
        outcome.status, outcome.detail = "disagrees", "held-out labels differ"
    elif not np.allclose(got["probabilities"], probabilities, atol=report.parity["tolerance"]["abs"], rtol=report.parity["tolerance"]["rel"]):
        outcome.status, outcome.detail = "disagrees", f"held-out probabilities differ by {np.abs(got['probabilities'] - probabilities).max():.3g}"
    return outcome


def flavor_outcomes() -> list[zoo.Outcome]:
    """Every registry flavor case in a fresh registry (for docs/models.md)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="edgepack-zoo-registry-") as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        _create_registry(uri, Path(tmp))
        return [flavor_outcome(case, uri, Path(tmp)) for case in _flavor_cases()]


def _create_registry(uri: str, tmp: Path) -> None:
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=uri).search_experiments()  # creates the schema


_FLAVOR_IDS = [c[0] for c in _flavor_cases()] if all(__import__("importlib").util.find_spec(m) for m in ("xgboost", "lightgbm", "onnxmltools")) else []


@pytest.mark.parametrize("case_id", _FLAVOR_IDS)
def test_xgboost_and_lightgbm_build_in_every_flavor_and_agree_on_held_out_rows(case_id: str, tracking_uri: str, tmp_path: Path) -> None:
    case = next(c for c in _flavor_cases() if c[0] == case_id)
    outcome = flavor_outcome(case, tracking_uri, tmp_path)
    assert outcome.status == "builds", f"{case_id}: {outcome.status}: {outcome.error} {outcome.detail}"


def test_conversion_failure_has_its_own_exit_code_and_names_the_step(tracking_uri: str, tmp_path: Path) -> None:
    from click.testing import CliRunner
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import SplineTransformer

    from edgepack.cli import cli
    from tests.support.registry import register_model

    train, y, _ref, _held = zoo.frames("numeric", "classification")
    model = Pipeline([("pre", ColumnTransformer([("spline", SplineTransformer(n_knots=3), ["p"])], remainder="passthrough")), ("clf", LogisticRegression(max_iter=300))]).fit(train, y)
    register_model(tracking_uri, "splines", model, train)
    result = CliRunner().invoke(cli, ["build", "models:/splines/1", "-o", str(tmp_path / "s.edgepkg"), "--tracking-uri", tracking_uri])
    assert result.exit_code == 7, result.output
    assert "step 'pre/spline'" in result.output and "SplineTransformer" in result.output and "Traceback" not in result.output
    help_text = CliRunner().invoke(cli, ["build", "--help"]).output
    assert "7  conversion" in help_text and "3  parity" in help_text
