"""Scoring a model on labeled rows: the metric promotion decides on, and per-class recall.

scikit-learn's metrics on the build machine (where scikit-learn is installed anyway):
``accuracy``, ``f1`` (binary: of the positive class, scikit-learn's second class; more
classes: macro average), ``roc_auc`` (binary: of the positive class' probability; more
classes: one-vs-rest macro average), ``mae`` and ``rmse``. Higher is better for the first
three, lower for the last two.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import MetricError

METRICS = ("roc_auc", "accuracy", "f1", "mae", "rmse")
LOWER_IS_BETTER = frozenset({"mae", "rmse"})
CLASSIFICATION = frozenset({"roc_auc", "accuracy", "f1"})


def is_classifier(model: Any) -> bool:
    return hasattr(model, "classes_") or hasattr(model, "predict_proba")


def score(model: Any, X: Any, y: Any, *, metric: str) -> dict[str, Any]:
    """``{"<metric>": value, "rows": n, ...}`` with every metric that fits the model's task,
    and ``recall`` per class (as text) for a classifier. ``MetricError`` when ``metric``
    does not fit the task."""
    from sklearn import metrics

    y = np.asarray(y)
    classifier = is_classifier(model)
    if classifier != (metric in CLASSIFICATION):
        task = "classifier" if classifier else "regressor"
        fits = "roc_auc, accuracy, f1" if classifier else "mae, rmse"
        raise MetricError(f"metric {metric!r} does not fit a {task}; expected one of {fits}")
    predicted = model.predict(X)
    out: dict[str, Any] = {"rows": int(len(y))}
    if not classifier:
        out["mae"] = float(metrics.mean_absolute_error(y, predicted))
        out["rmse"] = float(np.sqrt(metrics.mean_squared_error(y, predicted)))
        return out
    classes = list(model.classes_)
    out["accuracy"] = float(metrics.accuracy_score(y, predicted))
    binary = len(classes) == 2
    out["f1"] = float(metrics.f1_score(y, predicted, average="binary" if binary else "macro",
                                       pos_label=classes[1] if binary else 1, labels=classes if not binary else None,
                                       zero_division=0))
    recalls = metrics.recall_score(y, predicted, labels=classes, average=None, zero_division=0)
    out["recall"] = {str(c): float(r) for c, r in zip(classes, recalls) if np.any(y == c)}
    if hasattr(model, "predict_proba"):
        proba = model.predict_proba(X)
        present = set(np.unique(y).tolist())
        try:
            if binary and len(present) == 2:
                out["roc_auc"] = float(metrics.roc_auc_score(y == classes[1], proba[:, 1]))
            elif not binary and present == set(classes):
                out["roc_auc"] = float(metrics.roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=classes))
        except ValueError:
            pass
    if metric not in out:
        raise MetricError(
            f"metric {metric!r} cannot be computed on these rows (ROC AUC needs predict_proba and every class "
            f"among the labels; labels hold {sorted(map(str, np.unique(y)))}); choose accuracy or f1, or more data"
        )
    return out


def gain(metric: str, challenger: float, champion: float) -> float:
    """How much better the challenger is (positive: better), whichever way the metric points."""
    return champion - challenger if metric in LOWER_IS_BETTER else challenger - champion
