"""Tree ensembles and floating point: where a split threshold sits, which precision the original
compares in, and double-precision thresholds for the trees that compare in float64.

Measured on scikit-learn 1.9 (tests/packager/test_tree_precision.py keeps measuring it):
DecisionTree, RandomForest, ExtraTrees and GradientBoosting cast X to float32 before the trees
(``x32 <= threshold``, and skl2onnx's float32 thresholds reproduce that exactly), while
HistGradientBoosting compares float64 ``x <= threshold`` with a float64 threshold, and so does
LightGBM (4.x: ``fval <= threshold_`` in double, thresholds kept in double in the booster; onnxmltools
1.16 writes them as float attributes), while XGBoost keeps its input in float32. A float32
graph cannot separate two values that round to the same float32 (``alcohol = 12.47`` against a
threshold of ``12.469999...``), and skl2onnx 1.20 writes float thresholds even for double inputs
(``nodes_values``, never ``nodes_values_as_tensor``). So for the float64 attempt edgepack puts the
fitted estimator's own float64 thresholds into the graph (``ai.onnx.ml`` opset 3; packager/float64.py), and the parity
gate probes every threshold to prove which attempt routes like the original.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .convert import Column
from .routing import routed_columns

FLOAT64_TREES = frozenset({"HistGradientBoostingClassifier", "HistGradientBoostingRegressor", "LGBMClassifier", "LGBMRegressor"})
"""Estimators whose trees compare float64 inputs with float64 thresholds (measured, see above;
LightGBM's in tests/packager/test_tree_precision.py's LightGBM regressor test)."""

ML_DOMAIN = "ai.onnx.ml"
TREE_OPS = ("TreeEnsembleClassifier", "TreeEnsembleRegressor")

Inverse = Callable[[float], float]
_FLOAT32_MAX = 3.4028234663852886e38


@dataclass(frozen=True)
class Probe:
    """Where the probes of one tree input feature go."""

    column: str
    """The raw input column that reaches the trees."""
    inverse: Inverse
    """Maps a threshold on the trees' input back to a raw value of ``column``."""
    direct: bool
    """True when the column reaches the trees unchanged (or only imputed)."""


# -- thresholds of fitted estimators --------------------------------------------------------


def _sklearn_tree(tree: Any) -> Iterator[tuple[int, float]]:
    for feature, threshold in zip(tree.feature.tolist(), tree.threshold.tolist()):
        if feature >= 0:
            yield feature, threshold


def estimator_thresholds(est: Any) -> dict[int, set[float]] | None:
    """Split thresholds per input feature of a fitted tree-based estimator, None for other ones."""
    import numpy as np

    found: dict[int, set[float]] = {}

    def add(pairs: Iterator[tuple[int, float]]) -> None:
        for feature, threshold in pairs:
            found.setdefault(int(feature), set()).add(float(threshold))

    if hasattr(est, "booster_") and hasattr(est.booster_, "dump_model"):  # LightGBM (float64 thresholds)
        add(_lightgbm_splits(est.booster_.dump_model()))
    elif hasattr(est, "get_booster"):  # XGBoost
        add(_xgboost_splits(est.get_booster()))
    elif hasattr(est, "tree_") and hasattr(est.tree_, "threshold"):
        add(_sklearn_tree(est.tree_))
    elif hasattr(est, "_predictors"):  # HistGradientBoosting
        for per_iteration in est._predictors:
            for predictor in per_iteration:
                nodes = predictor.nodes
                split = ~nodes["is_leaf"].astype(bool)
                add(zip(nodes["feature_idx"][split].tolist(), nodes["num_threshold"][split].tolist()))
    elif hasattr(est, "estimators_"):
        members = np.asarray(est.estimators_, dtype=object).ravel().tolist()
        if not members or not all(hasattr(m, "tree_") for m in members):
            return None
        features = getattr(est, "estimators_features_", None)  # Bagging trains on a column subset
        for k, member in enumerate(members):
            mapping = features[k].tolist() if features is not None else None
            add((mapping[f] if mapping is not None else f, t) for f, t in _sklearn_tree(member.tree_))
    else:
        return None
    return found


def _lightgbm_splits(dump: dict[str, Any]) -> Iterator[tuple[int, float]]:
    stack = [tree["tree_structure"] for tree in dump.get("tree_info", [])]
    while stack:
        node = stack.pop()
        if "split_feature" not in node:
            continue
        if node.get("decision_type") == "<=" and isinstance(node.get("threshold"), (int, float)):
            yield int(node["split_feature"]), float(node["threshold"])
        stack.extend(node[k] for k in ("left_child", "right_child") if k in node)


def _xgboost_splits(booster: Any) -> Iterator[tuple[int, float]]:
    import json

    names = list(booster.feature_names or [])
    stack = [json.loads(tree) for tree in booster.get_dump(dump_format="json")]
    while stack:
        node = stack.pop()
        if "split" in node and "split_condition" in node:
            feature = str(node["split"])
            index = names.index(feature) if feature in names else int(feature.lstrip("f"))
            yield index, float(node["split_condition"])
        stack.extend(node.get("children", []))


def graph_thresholds(onx: Any) -> dict[int, set[float]]:
    """Split thresholds per feature from the ``TreeEnsemble*`` nodes of a converted graph.

    The fallback for tree ensembles edgepack cannot read directly (XGBoost, LightGBM through
    onnxmltools): the values are what the converter wrote, float32 in practice.
    """
    from onnx import helper, numpy_helper

    found: dict[int, set[float]] = {}
    for node in onx.graph.node:
        if node.domain != ML_DOMAIN or node.op_type not in TREE_OPS:
            continue
        attrs = {a.name: a for a in node.attribute}
        if "nodes_values_as_tensor" in attrs:
            values = numpy_helper.to_array(attrs["nodes_values_as_tensor"].t).tolist()
        else:
            values = list(helper.get_attribute_value(attrs["nodes_values"]))
        features = helper.get_attribute_value(attrs["nodes_featureids"])
        modes = helper.get_attribute_value(attrs["nodes_modes"])
        for feature, value, mode in zip(features, values, modes):
            if mode != b"LEAF":
                found.setdefault(int(feature), set()).add(float(value))
    return found


# -- from the trees' input back to raw columns ------------------------------------------------


def _step_inverse(step: Any, j: int) -> Inverse | None:
    """The inverse of a per-column monotone step for its output column ``j`` (None: not one)."""
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, RobustScaler, StandardScaler

    if isinstance(step, SimpleImputer):
        if step.add_indicator:
            return None
        return lambda t: t  # identity on every value that is present
    if isinstance(step, StandardScaler):
        scale = 1.0 if step.scale_ is None else float(step.scale_[j])
        mean = 0.0 if step.mean_ is None else float(step.mean_[j])
        return lambda t: t * scale + mean
    if isinstance(step, MinMaxScaler):
        lo, scale = float(step.min_[j]), float(step.scale_[j])
        return (lambda t: (t - lo) / scale) if scale else None
    if isinstance(step, MaxAbsScaler):
        scale = float(step.scale_[j])
        return lambda t: t * scale
    if isinstance(step, RobustScaler):
        scale = 1.0 if step.scale_ is None else float(step.scale_[j])
        center = 0.0 if step.center_ is None else float(step.center_[j])
        return lambda t: t * scale + center
    return None


def _is_identity(step: Any) -> bool:
    from sklearn.impute import SimpleImputer

    if isinstance(step, str):
        return step == "passthrough"
    if type(step).__name__ == "FunctionTransformer":
        return step.func is None
    return isinstance(step, SimpleImputer) and not step.add_indicator


def _origin(steps: Sequence[Any], j: int, names: Sequence[str]) -> tuple[str, Inverse, bool] | None:
    """Follow output column ``j`` of ``steps`` (applied in order to raw columns ``names``)
    back to a raw column; None when a step mixes columns or cannot be inverted."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    inverse: Inverse = lambda t: t  # noqa: E731
    direct = True
    for step in reversed(list(steps)):
        if step is None or (isinstance(step, str) and step == "passthrough"):
            continue
        if isinstance(step, Pipeline):
            inner = _origin([s for _, s in step.steps], j, names)
            return None if inner is None else _chain(inner, inverse, direct)
        if isinstance(step, ColumnTransformer):
            for name, trans, cols in step.transformers_:
                part = step.output_indices_.get(name)
                if part is None or not part.start <= j < part.stop or trans == "drop":
                    continue
                picked = routed_columns(cols, step)
                if picked is None:
                    return None
                inner_steps = [s for _, s in trans.steps] if isinstance(trans, Pipeline) else [trans]
                inner = _origin(inner_steps, j - part.start, picked)
                return None if inner is None else _chain(inner, inverse, direct)
            return None
        if _is_identity(step):
            continue
        step_inverse = _step_inverse(step, j)
        if step_inverse is None:
            return None
        inverse = _compose(step_inverse, inverse)
        direct = False
    if not 0 <= j < len(names):
        return None
    return str(names[j]), inverse, direct


def _compose(outer: Inverse, inner: Inverse) -> Inverse:
    return lambda t: outer(inner(t))


def _chain(found: tuple[str, Inverse, bool], inverse: Inverse, direct: bool) -> tuple[str, Inverse, bool]:
    column, inner, inner_direct = found
    return column, _compose(inner, inverse), inner_direct and direct


def _final(model: Any) -> tuple[list[Any], Any]:
    from sklearn.pipeline import Pipeline

    if isinstance(model, Pipeline):
        steps = [s for _, s in model.steps]
        return steps[:-1], steps[-1]
    return [], model


# -- probe rows ---------------------------------------------------------------------------------


def probe_values(threshold: float, inverse: Inverse, direct: bool) -> list[float]:
    """The raw values probed for one threshold ``t`` on the trees' input.

    ``t`` itself, the float64 neighbours of ``t`` on both sides (the values a float32 graph
    cannot separate from ``t``), ``float32(t)`` and the float32 neighbours of that on both
    sides; for a column behind a scaler, the same points mapped back through the scaler's
    inverse, without the float64 neighbours (one ulp is below what two implementations of the
    same scaling agree on).
    """
    import numpy as np

    t = float(threshold)
    f = np.float32(t)
    points = [t, float(f), float(np.nextafter(f, np.float32(-np.inf))), float(np.nextafter(f, np.float32(np.inf)))]
    if direct:
        points += [float(np.nextafter(t, -np.inf)), float(np.nextafter(t, np.inf))]
        return [p for p in points if np.isfinite(p)]
    raw = []
    for p in points:
        x = inverse(p)
        if not np.isfinite(x):
            continue
        xf = np.float32(x)
        raw += [x, float(np.nextafter(xf, np.float32(-np.inf))), float(np.nextafter(xf, np.float32(np.inf)))]
    return [p for p in raw if np.isfinite(p)]


def threshold_probes(model: Any, columns: Sequence[Column], complete: Any, *, converted: Any = None, limit: int) -> Any:
    """Rows of ``complete`` with one numeric column set to a value at or next to a split threshold.

    Covers the final estimator's trees for every input feature that comes from a raw column
    directly or through per-column monotone steps (imputers, scalers, ColumnTransformer routing);
    features behind encoders, PCA and the like are not probed. Thresholds come from the fitted
    estimator, or from the ``TreeEnsemble*`` nodes of ``converted`` for tree ensembles edgepack
    cannot read. At most ``limit`` rows, spread evenly over the thresholds. Empty when there are no trees.
    """
    import numpy as np
    import pandas as pd

    pre, final = _final(model)
    found = estimator_thresholds(final)
    if found is None and converted is not None:
        found = graph_thresholds(converted) or None
    if not found or complete.empty:
        return complete.iloc[0:0]
    numeric = {c.name for c in columns if c.kind == "numeric"}
    names = [c.name for c in columns]
    per_column: dict[str, list[float]] = {}
    for j in sorted(found):
        origin = _origin(pre, j, names) if pre else ((names[j], lambda t: t, True) if j < len(names) else None)
        if origin is None or origin[0] not in numeric:
            continue
        column, inverse, direct = origin
        values = per_column.setdefault(column, [])
        for t in sorted(found[j]):
            if np.isfinite(t) and abs(t) < _FLOAT32_MAX:  # +inf: scikit-learn's "missing values go right" split
                values.extend(v for v in probe_values(t, inverse, direct) if abs(v) < _FLOAT32_MAX)
    pairs = [(column, v) for column in sorted(per_column) for v in sorted(set(per_column[column]))]
    if not pairs:
        return complete.iloc[0:0]
    if len(pairs) > limit:
        keep = np.linspace(0, len(pairs) - 1, limit).round().astype(int)
        pairs = [pairs[i] for i in sorted(set(keep.tolist()))]
    base = complete.iloc[np.arange(len(pairs)) % len(complete)].reset_index(drop=True).copy()
    for column in per_column:
        if pd.api.types.is_integer_dtype(base[column]) or pd.api.types.is_bool_dtype(base[column]):
            base[column] = base[column].astype(np.float64)
    for column in per_column:
        rows = [i for i, (c, _) in enumerate(pairs) if c == column]
        base.loc[rows, column] = [pairs[i][1] for i in rows]
    return base
