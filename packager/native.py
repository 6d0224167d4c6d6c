"""MLflow's native ``xgboost`` and ``lightgbm`` flavors, loaded as scikit-learn-API models.

``mlflow.xgboost.log_model`` / ``mlflow.lightgbm.log_model`` take either the library's
scikit-learn estimator (``XGBClassifier``, ``LGBMRegressor``, ...) or a bare ``Booster``
from the training API. The first loads as it was logged. A ``Booster`` is wrapped in the
matching estimator, which predicts exactly as the booster does (its ``predict`` is the
booster's), so the sklearn path (onnxmltools' converters, the parity gate) takes it like
any other estimator. Classes of a wrapped booster are ``0..K-1``, as the booster has them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import ModelLoadError

_XGB_CLASSIFIER_OBJECTIVES = ("binary:", "multi:")
_XGB_REGRESSOR_OBJECTIVES = ("reg:", "count:", "survival:")
_LGB_CLASSIFIER_OBJECTIVES = ("binary", "multiclass", "multiclassova", "softmax", "ova", "ovr")


def load_xgboost(path: Path) -> Any:
    """The model of an ``xgboost`` flavor directory, as an ``XGBModel``."""
    import mlflow.xgboost

    try:
        model = mlflow.xgboost.load_model(str(path))
    except Exception as exc:  # MLflow and xgboost raise many kinds
        raise ModelLoadError(f"cannot load the xgboost model in {path.name}: {exc}") from exc
    import xgboost

    if isinstance(model, xgboost.XGBModel):
        return model
    return _wrap_xgboost(model)


def _wrap_xgboost(booster: Any) -> Any:
    import json

    import xgboost

    objective = json.loads(booster.save_config())["learner"]["objective"]["name"]
    if objective.startswith(_XGB_CLASSIFIER_OBJECTIVES):
        model = xgboost.XGBClassifier()
    elif objective.startswith(_XGB_REGRESSOR_OBJECTIVES):
        model = xgboost.XGBRegressor()
    else:
        raise ModelLoadError(
            f"the xgboost booster has objective {objective!r}; edgepack builds classifiers (binary:*, multi:*) and "
            "regressors (reg:*, count:*, survival:*)"
        )
    # XGBModel.load_model reads the class count and feature names from the booster itself.
    model.load_model(bytearray(booster.save_raw("json")))
    return model


def load_lightgbm(path: Path) -> Any:
    """The model of a ``lightgbm`` flavor directory, as an ``LGBMModel``."""
    import mlflow.lightgbm

    try:
        model = mlflow.lightgbm.load_model(str(path))
    except Exception as exc:
        raise ModelLoadError(f"cannot load the lightgbm model in {path.name}: {exc}") from exc
    import lightgbm

    if isinstance(model, lightgbm.LGBMModel):
        return model
    return _wrap_lightgbm(model)


def _wrap_lightgbm(booster: Any) -> Any:
    import lightgbm
    import numpy as np
    from sklearn.preprocessing import LabelEncoder

    objective = str(booster.params.get("objective", "regression"))
    if objective in _LGB_CLASSIFIER_OBJECTIVES:
        model: Any = lightgbm.LGBMClassifier()
        classes = booster.num_model_per_iteration() if objective != "binary" else 2
    elif objective in ("lambdarank", "rank_xendcg", "cross_entropy", "xentropy", "cross_entropy_lambda"):
        raise ModelLoadError(
            f"the lightgbm booster has objective {objective!r}; edgepack builds classifiers and regressors, "
            "not rankers or cross-entropy models"
        )
    else:
        model = lightgbm.LGBMRegressor()
        classes = 0
    # LightGBM has no public way to wrap a trained Booster in its estimator; these are the
    # attributes LGBMModel.fit sets (lightgbm 4.x), and predict goes through the booster.
    model._Booster = booster
    model.fitted_ = True
    model._n_features = model._n_features_in = booster.num_feature()
    model._objective = objective
    names = booster.feature_name()
    model._fitted_with_feature_names = names != [f"Column_{i}" for i in range(len(names))]
    if classes:
        model._n_classes = classes
        model._classes = np.arange(classes)
        model._le = LabelEncoder().fit(np.arange(classes))
    return model
