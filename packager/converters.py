"""What edgepack converts: a table of sklearn classes, each with a check for settings that
skl2onnx gets wrong, and a walk over Pipelines and ColumnTransformers that runs the checks
on every step BEFORE anything is converted.

Only classes whose conversion the parity tests prove are listed. A class that skl2onnx
converts into a graph that answers differently is refused with the reason, instead of
shipping a model that disagrees with the original on the device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .errors import UnsupportedModelError

Check = Callable[[Any], "str | None"]
"""Returns why a fitted object cannot be converted faithfully, or None when it can."""


def _ok(_: Any) -> str | None:
    return None


def _one_hot(enc: Any) -> str | None:
    if enc.handle_unknown == "infrequent_if_exist":
        return (
            "OneHotEncoder(handle_unknown='infrequent_if_exist') converts to a graph that encodes "
            "infrequent and unknown categories differently from scikit-learn; use handle_unknown='ignore'"
        )
    if getattr(enc, "min_frequency", None) is not None or getattr(enc, "max_categories", None) is not None:
        return (
            "OneHotEncoder with min_frequency/max_categories groups infrequent categories, which the "
            "ONNX converter does not reproduce; drop those settings"
        )
    return None


def _ordinal(enc: Any) -> str | None:
    if getattr(enc, "min_frequency", None) is not None or getattr(enc, "max_categories", None) is not None:
        return "OrdinalEncoder with min_frequency/max_categories is not reproduced by the ONNX converter"
    return None


def _hist_gradient_boosting(est: Any) -> str | None:
    categorical = getattr(est, "is_categorical_", None)
    if categorical is not None and bool(categorical.any()):
        return (
            "HistGradientBoosting with native categorical splits: skl2onnx ignores them and the ONNX "
            "model answers differently; encode the categories in a ColumnTransformer "
            "(OneHotEncoder/OrdinalEncoder) and set categorical_features=None"
        )
    return None


def _imputer(imp: Any) -> str | None:
    if getattr(imp, "add_indicator", False):
        return "SimpleImputer(add_indicator=True) is not supported; drop add_indicator"
    return None


def _identity(ft: Any) -> str | None:
    # A fitted ColumnTransformer stores "passthrough" as FunctionTransformer(func=None).
    if ft.func is not None:
        return f"FunctionTransformer({getattr(ft.func, '__name__', ft.func)!s}) runs arbitrary Python, which ONNX cannot hold"
    return None


def _known_wrong(reason: str) -> Check:
    def check(_: Any) -> str:
        return reason

    check.known_wrong = True  # type: ignore[attr-defined]
    return check


_SVC_REASON = (
    "SVC/NuSVC convert to graphs whose probabilities (Platt scaling with probability=True) and "
    "decision ties differ from scikit-learn 1.9; use LogisticRegression, a tree ensemble or an MLP"
)


def _table() -> dict[type, Check]:
    from sklearn import ensemble, impute, linear_model, neural_network, preprocessing, svm, tree

    return {
        # transformers
        preprocessing.FunctionTransformer: _identity,
        impute.SimpleImputer: _imputer,
        preprocessing.StandardScaler: _ok,
        preprocessing.MinMaxScaler: _ok,
        preprocessing.MaxAbsScaler: _ok,
        preprocessing.RobustScaler: _ok,
        preprocessing.OneHotEncoder: _one_hot,
        preprocessing.OrdinalEncoder: _ordinal,
        # classifiers
        linear_model.LogisticRegression: _ok,
        tree.DecisionTreeClassifier: _ok,
        ensemble.RandomForestClassifier: _ok,
        ensemble.ExtraTreesClassifier: _ok,
        ensemble.GradientBoostingClassifier: _ok,
        ensemble.HistGradientBoostingClassifier: _hist_gradient_boosting,
        neural_network.MLPClassifier: _ok,
        # regressors
        linear_model.LinearRegression: _ok,
        linear_model.Ridge: _ok,
        linear_model.Lasso: _ok,
        linear_model.ElasticNet: _ok,
        tree.DecisionTreeRegressor: _ok,
        ensemble.RandomForestRegressor: _ok,
        ensemble.ExtraTreesRegressor: _ok,
        ensemble.GradientBoostingRegressor: _ok,
        ensemble.HistGradientBoostingRegressor: _hist_gradient_boosting,
        neural_network.MLPRegressor: _ok,
        # converted, but known to answer differently
        svm.SVC: _known_wrong(_SVC_REASON),
        svm.NuSVC: _known_wrong(_SVC_REASON),
    }


_SUPPORTED: dict[type, Check] | None = None


def supported() -> dict[type, Check]:
    """The class -> check table (built lazily: it imports sklearn)."""
    global _SUPPORTED
    if _SUPPORTED is None:
        _SUPPORTED = _table()
    return _SUPPORTED


@dataclass(frozen=True)
class Step:
    """One leaf of a model: where it sits and the fitted object."""

    path: str
    """``/``-joined step names from the top (``pre/num/scale``); ``""`` for a bare estimator."""
    obj: Any
    """The fitted transformer or estimator."""
    columns: tuple[Any, ...] | None
    """The input columns a ColumnTransformer routes to it, when known."""


def walk(model: Any, path: str = "", columns: tuple[Any, ...] | None = None) -> Iterator[Step]:
    """Yield every leaf step of ``model`` (Pipeline and ColumnTransformer are opened up)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    if isinstance(model, Pipeline):
        for name, step in model.steps:
            if step is None or step == "passthrough":
                continue
            yield from walk(step, _join(path, name), columns)
            if not _keeps_columns(step):
                columns = None  # later steps see this step's output, not the raw columns
    elif isinstance(model, ColumnTransformer):
        for name, trans, cols in model.transformers_:
            if isinstance(trans, str) and trans in ("drop", "passthrough"):
                continue
            yield from walk(trans, _join(path, name), _as_columns(cols, model))
    else:
        yield Step(path, model, columns)


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


def _as_columns(cols: Any, ct: Any) -> tuple[Any, ...] | None:
    names = getattr(ct, "feature_names_in_", None)
    if isinstance(cols, str):
        return (cols,)
    try:
        items = list(cols)
    except TypeError:
        return None
    if items and all(isinstance(c, (bool,)) or type(c).__name__ == "bool_" for c in items):
        return tuple(n for n, keep in zip(names, items) if keep) if names is not None else None
    if items and all(isinstance(c, (int,)) or type(c).__name__.startswith("int") for c in items):
        return tuple(names[int(i)] for i in items) if names is not None else None
    return tuple(items)


def check_supported(model: Any) -> list[Step]:
    """Check every step before converting; raise ``UnsupportedModelError`` naming the first bad one."""
    table = supported()
    steps = list(walk(model))
    for step in steps:
        cls = type(step.obj)
        where = f"step {step.path!r} " if step.path else ""
        check = table.get(cls)
        if check is None:
            names = sorted(c.__name__ for c, fn in table.items() if not getattr(fn, "known_wrong", False))
            raise UnsupportedModelError(
                f"{where}({cls.__module__}.{cls.__name__}) cannot be converted by edgepack; "
                f"supported steps: Pipeline, ColumnTransformer, {', '.join(names)}",
                step=step.path,
                cls=cls.__name__,
            )
        reason = check(step.obj)
        if reason:
            raise UnsupportedModelError(f"{where}({cls.__name__}) is refused: {reason}", step=step.path, cls=cls.__name__)
    return steps


def final_estimator(model: Any) -> Any:
    from sklearn.pipeline import Pipeline

    while isinstance(model, Pipeline):
        model = model.steps[-1][1]
    return model


def categories_by_column(model: Any) -> dict[str, list[Any]]:
    """Known categories per raw input column, from the encoders a ColumnTransformer routes it to."""
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

    found: dict[str, list[Any]] = {}
    for step in walk(model):
        if isinstance(step.obj, (OneHotEncoder, OrdinalEncoder)) and step.columns:
            for col, cats in zip(step.columns, step.obj.categories_):
                found.setdefault(str(col), [c for c in cats.tolist() if c is not None and c == c])
    return found


def ranges_by_column(model: Any) -> dict[str, tuple[float, float]]:
    """Training min/max per raw numeric column, where a MinMaxScaler saw them directly."""
    from sklearn.preprocessing import MinMaxScaler

    found: dict[str, tuple[float, float]] = {}
    for step in walk(model):
        if isinstance(step.obj, MinMaxScaler) and step.columns:
            for col, lo, hi in zip(step.columns, step.obj.data_min_, step.obj.data_max_):
                found[str(col)] = (float(lo), float(hi))
    return found
