"""What edgepack converts: every step skl2onnx has a converter for (with onnxmltools'
XGBoost and LightGBM converters registered), and a walk over the model that runs, BEFORE
anything is converted, the few checks for conversions known to be silently wrong.

The parity gate decides whether a conversion reproduces the original. Refused up front
are only the cases the gate cannot see: settings whose graph answers differently on rows
the reference data may never hold (infrequent categories, native categorical splits, Platt
scaling), and Python code that ONNX cannot hold. Each refusal says why and what to use.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import UnsupportedModelError
from .steps import walk, walk_all

Check = Callable[[Any], "str | None"]
"""Returns why a fitted object is known to convert wrongly, or None."""


# ---------------------------------------------------------------------------------------
# the converter registry


_REGISTERED = False
_LOCK = threading.Lock()


def register_external_converters() -> None:
    """Register onnxmltools' XGBoost and LightGBM converters with skl2onnx (once).

    This is how onnxmltools documents it ("Convert a pipeline with a XGBoost model"): the
    library's own converter plus skl2onnx's linear shape calculators, so the models also
    convert inside a Pipeline or a ColumnTransformer. A library that is not installed is
    skipped: no model of it can have been loaded either.
    """
    global _REGISTERED
    with _LOCK:
        if _REGISTERED:
            return
        from skl2onnx import update_registered_converter
        from skl2onnx.common.shape_calculator import (
            calculate_linear_classifier_output_shapes,
            calculate_linear_regressor_output_shapes,
        )

        classifier_options = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
        try:
            import xgboost
            from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
        except ImportError:
            pass
        else:
            for cls in (xgboost.XGBClassifier, xgboost.XGBRFClassifier):
                update_registered_converter(
                    cls, f"XGBoost{cls.__name__}", calculate_linear_classifier_output_shapes, convert_xgboost, options=classifier_options
                )
            for cls in (xgboost.XGBRegressor, xgboost.XGBRFRegressor):
                update_registered_converter(cls, f"XGBoost{cls.__name__}", calculate_linear_regressor_output_shapes, convert_xgboost)
        try:
            import lightgbm
            from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm
        except ImportError:
            pass
        else:
            update_registered_converter(
                lightgbm.LGBMClassifier,
                "LightGbmLGBMClassifier",
                calculate_linear_classifier_output_shapes,
                convert_lightgbm,
                options=classifier_options,
            )
            update_registered_converter(
                lightgbm.LGBMRegressor,
                "LightGbmLGBMRegressor",
                calculate_linear_regressor_output_shapes,
                convert_lightgbm,
                options={"split": None},
            )
        from . import target_transform

        target_transform.register()
        _REGISTERED = True


def converter_of(cls: type) -> str | None:
    """The alias of the converter skl2onnx would use for ``cls`` (exact type), or None."""
    register_external_converters()
    from skl2onnx._supported_operators import sklearn_operator_name_map

    return sklearn_operator_name_map.get(cls)


def accepts_option(cls: type, option: str) -> bool:
    """True when the converter registered for ``cls`` declares ``option`` (``zipmap``, ...)."""
    alias = converter_of(cls)
    if alias is None:
        return False
    from skl2onnx.common._registration import get_converter

    try:
        allowed = get_converter(alias).get_allowed_options() or {}
    except (ValueError, KeyError):
        return False
    return option in allowed


def _library_of(alias: str) -> str:
    if alias.startswith(("XGBoost", "LightGbm")):
        return "onnxmltools"
    if alias.startswith("Edgepack"):
        return "edgepack"
    return "skl2onnx"


# ---------------------------------------------------------------------------------------
# conversions known to be silently wrong


def _svc(est: Any) -> str | None:
    if getattr(est, "probability", False):
        return (
            f"{type(est).__name__}(probability=True): skl2onnx's graph computes Platt-scaled probabilities differently "
            "from scikit-learn 1.9 (which calibrates them with internal cross-validation), so the bundle's probabilities "
            "and labels would differ on rows the reference data does not cover; use probability=False (a label-only "
            "bundle), CalibratedClassifierCV(LinearSVC()), LogisticRegression or a tree ensemble"
        )
    return None


def _has_infrequent(enc: Any) -> bool:
    return any(c is not None for c in (getattr(enc, "infrequent_categories_", None) or []))


def _one_hot(enc: Any) -> str | None:
    if enc.handle_unknown in ("infrequent_if_exist", "warn") and _has_infrequent(enc):
        return (
            f"OneHotEncoder(handle_unknown={enc.handle_unknown!r}) with infrequent categories (min_frequency or "
            "max_categories) converts to a graph that encodes unknown categories as all zeros instead of the "
            "infrequent column, which no reference row can show; use handle_unknown='ignore' without "
            "min_frequency/max_categories"
        )
    return None


def _unknown_as_zeros(obj: Any) -> bool:
    """A OneHotEncoder whose unknown categories become all zeros under another name than
    'ignore': 'infrequent_if_exist' and 'warn' (scikit-learn 1.6+) without infrequent
    categories. skl2onnx knows only 'ignore' for that (it converts 'warn' to a graph that
    fails on an unknown category), so the copy for the converters says 'ignore'."""
    return (
        type(obj).__name__ == "OneHotEncoder"
        and getattr(obj, "handle_unknown", None) in ("infrequent_if_exist", "warn")
        and not _has_infrequent(obj)
    )


def _hist_gradient_boosting(est: Any) -> str | None:
    categorical = getattr(est, "is_categorical_", None)
    if categorical is not None and bool(categorical.any()):
        return (
            "HistGradientBoosting with native categorical splits: skl2onnx ignores them and the ONNX model answers "
            "differently; encode the categories in a ColumnTransformer (OneHotEncoder/OrdinalEncoder) and set "
            "categorical_features=None"
        )
    return None


def _function(ft: Any) -> str | None:
    # A fitted ColumnTransformer stores "passthrough" as FunctionTransformer(func=None).
    if ft.func is not None:
        name = getattr(ft.func, "__name__", ft.func)
        return (
            f"FunctionTransformer({name!s}) runs arbitrary Python, which ONNX cannot hold; compute the feature before "
            "the model (in the data), or use a scikit-learn transformer that has a converter"
        )
    return None


def _known_wrong() -> dict[str, Check]:
    return {
        "SVC": _svc,
        "NuSVC": _svc,
        "OneHotEncoder": _one_hot,
        "HistGradientBoostingClassifier": _hist_gradient_boosting,
        "HistGradientBoostingRegressor": _hist_gradient_boosting,
        "FunctionTransformer": _function,
    }


# ---------------------------------------------------------------------------------------
# the up-front check


@dataclass(frozen=True)
class Handled:
    """Which converter handles one step (the build report's ``converters``)."""

    step: str
    """The step's path (``""`` for a bare estimator)."""
    estimator: str
    """The step's class, ``module.Class``."""
    converter: str
    """``skl2onnx:Alias`` or ``onnxmltools:Alias`` (the alias the converter is registered under)."""

    def as_dict(self) -> dict[str, str]:
        return {"step": self.step, "estimator": self.estimator, "converter": self.converter}


def _where(path: str) -> str:
    return f"step {path!r} " if path else "the model "


def check_supported(model: Any) -> list[Handled]:
    """Check every step before converting; raise ``UnsupportedModelError`` naming the first bad one.

    Returns which converter handles each step, in walk order.
    """
    known_wrong = _known_wrong()
    handled: list[Handled] = []
    for step in walk_all(model):
        cls = type(step.obj)
        reason = known_wrong.get(cls.__name__, lambda _: None)(step.obj)
        if reason:
            raise UnsupportedModelError(f"{_where(step.path)}({cls.__name__}) is refused: {reason}", step=step.path, cls=cls.__name__)
        alias = converter_of(cls)
        if alias is None:
            raise UnsupportedModelError(
                f"{_where(step.path)}({cls.__module__}.{cls.__name__}) has no ONNX converter: neither skl2onnx "
                f"nor onnxmltools can convert {cls.__name__}; replace it with a step that has one (the list: "
                "skl2onnx.supported_converters(), plus XGBoost and LightGBM), or register a converter for it with "
                "skl2onnx.update_registered_converter before building",
                step=step.path,
                cls=cls.__name__,
            )
        handled.append(Handled(step.path, f"{cls.__module__}.{cls.__name__}", f"{_library_of(alias)}:{alias}"))
    return handled


# ---------------------------------------------------------------------------------------
# preparing a model for the converters


def for_conversion(model: Any) -> Any:
    """A copy of ``model`` that the converters take as it is; ``model`` itself is not touched.

    onnxmltools reads XGBoost trees from the booster's dump, where features are named as
    the model was fitted ("temp c"); it only understands ``f0..fN`` ("Unable to interpret
    'temp c', feature names should follow pattern 'f%d'"). Features keep their order, so
    dropping the names from the copy's booster changes nothing else. A OneHotEncoder that
    encodes unknown categories as zeros under another name is told 'ignore' (``_unknown_as_zeros``).
    """
    if not any(_needs_change(step.obj) for step in walk_all(model)):
        return model
    import copy

    clone = copy.deepcopy(model)
    for step in walk_all(clone):
        obj = step.obj
        if type(obj).__module__.startswith("xgboost") and hasattr(obj, "get_booster"):
            obj.get_booster().feature_names = None
        elif type(obj).__name__ == "VotingClassifier" and obj.flatten_transform:
            # Only transform() reads it; skl2onnx refuses the default (True) for predict too.
            obj.flatten_transform = False
        elif _unknown_as_zeros(obj):
            obj.handle_unknown = "ignore"
    return clone


def _needs_change(obj: Any) -> bool:
    if type(obj).__module__.startswith("xgboost") and hasattr(obj, "get_booster"):
        return obj.get_booster().feature_names is not None
    return (type(obj).__name__ == "VotingClassifier" and bool(getattr(obj, "flatten_transform", False))) or _unknown_as_zeros(obj)


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
