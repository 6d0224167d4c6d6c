"""The steps of a model, walked: Pipelines, ColumnTransformers, FeatureUnions and the
members of meta-estimators, each with its path and (where a ColumnTransformer routes
them) its raw input columns.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .routing import routed_columns


@dataclass(frozen=True)
class Step:
    """One node of a model: where it sits and the fitted object."""

    path: str
    """``/``-joined step names from the top (``pre/num/scale``); ``""`` for a bare estimator."""
    obj: Any
    """The fitted transformer or estimator."""
    columns: tuple[Any, ...] | None
    """The input columns a ColumnTransformer routes to it, when known."""
    leaf: bool = True
    """False for a container (Pipeline, ColumnTransformer, meta-estimator) whose members are walked too."""


def walk(model: Any, path: str = "", columns: tuple[Any, ...] | None = None) -> Iterator[Step]:
    """Yield every leaf step of ``model`` (Pipeline and ColumnTransformer are opened up)."""
    for step in walk_all(model, path, columns):
        if step.leaf:
            yield step


def walk_all(model: Any, path: str = "", columns: tuple[Any, ...] | None = None) -> Iterator[Step]:
    """Yield every node of ``model``: Pipelines, ColumnTransformers, FeatureUnions and the
    members of meta-estimators (search CVs, Bagging, Stacking, Voting, OneVsRest, calibration, ...)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import FeatureUnion, Pipeline

    if isinstance(model, Pipeline):
        yield Step(path, model, columns, leaf=False)
        for name, step in model.steps:
            if step is None or step == "passthrough":
                continue
            yield from walk_all(step, _join(path, name), columns)
            if not _keeps_columns(step):
                columns = None  # later steps see this step's output, not the raw columns
    elif isinstance(model, ColumnTransformer):
        yield Step(path, model, columns, leaf=False)
        for name, trans, cols in model.transformers_:
            if isinstance(trans, str) and trans in ("drop", "passthrough"):
                continue
            routed = routed_columns(cols, model)
            yield from walk_all(trans, _join(path, name), tuple(routed) if routed is not None else None)
    elif isinstance(model, FeatureUnion):
        yield Step(path, model, columns, leaf=False)
        for name, trans in model.transformer_list:
            if isinstance(trans, str):
                continue
            yield from walk_all(trans, _join(path, name), None)
    else:
        members = list(_members(model))
        yield Step(path, model, columns, leaf=not members)
        for name, member in members:
            yield from walk_all(member, _join(path, name), None)


def _members(model: Any) -> Iterator[tuple[str, Any]]:
    """The fitted estimators a meta-estimator holds, named as they are reached.

    Only classes that take an estimator as a parameter are opened (Bagging, AdaBoost,
    Voting, Stacking, OneVsRest, CalibratedClassifierCV, search CVs, RFE, ...); a forest's
    trees are the forest's own business, and so is the estimator a feature selector (RFE,
    SelectFromModel) fitted to choose columns: only its choice is converted.
    """
    from sklearn.feature_selection import SelectorMixin

    if isinstance(model, SelectorMixin):
        return
    try:
        params = model.get_params(deep=False)
    except Exception:  # not an sklearn estimator (a booster, a custom object)
        return
    if not any(k in params for k in ("estimator", "estimators", "regressor", "base_estimator")):
        return
    if (best := getattr(model, "best_estimator_", None)) is not None:
        yield "best_estimator_", best
        return
    if (named := getattr(model, "named_estimators_", None)) is not None:
        for name, est in named.items():
            if est is not None and not isinstance(est, str):
                yield name, est
        if (final := getattr(model, "final_estimator_", None)) is not None:
            yield "final_estimator_", final
        return
    estimators = getattr(model, "estimators_", None)
    if isinstance(estimators, list):
        # Bagging's and AdaBoost's estimator_ is only the unfitted template of these.
        for i, est in enumerate(estimators):
            if hasattr(est, "get_params"):
                yield f"estimators_[{i}]", est
        return
    for i, calibrated in enumerate(getattr(model, "calibrated_classifiers_", None) or []):
        if (est := getattr(calibrated, "estimator", None)) is not None:
            yield f"calibrated_classifiers_[{i}]", est
    # TransformedTargetRegressor's transformer_ is inverted by its own converter (target_transform.py).
    for attr in ("estimator_", "regressor_"):
        if (member := getattr(model, attr, None)) is not None and not isinstance(member, str):
            yield attr, member


def _keeps_columns(step: Any) -> bool:
    """Imputers and scalers map column i to column i, so an encoder after them still sees raw columns."""
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, RobustScaler, StandardScaler

    if isinstance(step, SimpleImputer):
        import pandas as pd

        # An all-missing column has no statistic and is dropped, unless keep_empty_features.
        dropped = bool(pd.isna(pd.Series(step.statistics_, dtype=object)).any()) and not step.keep_empty_features
        return not step.add_indicator and not dropped
    return isinstance(step, (StandardScaler, MinMaxScaler, MaxAbsScaler, RobustScaler))


def _join(path: str, name: str) -> str:
    return f"{path}/{name}" if path else name
