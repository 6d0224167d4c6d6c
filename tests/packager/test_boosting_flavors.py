"""XGBoost and LightGBM through a real SQLite MLflow registry, in every flavor they are logged
with: ``mlflow.sklearn`` (bare and inside a ColumnTransformer pipeline), their native
``mlflow.xgboost`` / ``mlflow.lightgbm`` flavors (the estimator and a bare ``Booster``), and
``mlflow.onnx`` (onnxmltools' own conversion). Each bundle is compared with the original on
held-out rows the parity gate never saw.

A file of its own so that CI's ``--dist loadfile`` runs it beside the zoo slice.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.packager import zoo




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
                # skops, MLflow 3's default: its XGBoost/LightGBM types are in DEFAULT_TRUSTED_TYPES.
                import skops.io

                logged_types = skops.io.get_untrusted_types(data=skops.io.dumps(model))
                mlflow.sklearn.log_model(model, name="model", registered_model_name=name, input_example=example,
                                         serialization_format="skops", skops_trusted_types=logged_types)
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


