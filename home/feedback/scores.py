"""Live model quality from ground truth: records joined with their labels, scored.

``live_scores(db, model=...)`` joins ``records`` with ``feedback`` (by device and record
id) and scores what the devices predicted against the truth, per model version and, with
``bucket_seconds``, per time bucket of prediction time: accuracy and ROC AUC for a
classifier (AUC from the recorded probabilities; one-vs-rest macro average for more than
two classes), MAE and RMSE for a regressor, each with the number of labeled records it
rests on. ``classification_scores`` / ``regression_scores`` score plain arrays the same
way. numpy and scipy only (home has no scikit-learn); the ROC AUC is the Mann-Whitney U
statistic over average ranks (ties count one half), which equals the trapezoidal area.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import rankdata

from ..errors import HomeError
from .labels import canonical
from .joined import describe, joined_rows

_JOIN = """
SELECT r.version, r.ts, r.outputs, f.label
FROM feedback AS f JOIN records AS r ON r.device = f.device AND r.id = f.record_id
WHERE r.model = ? AND r.ts >= ? AND r.ts < ? {extra}
ORDER BY r.ts
"""


class ScoresError(HomeError):
    """Live scores cannot be computed (no database, unreadable rows)."""


def roc_auc(positive: Sequence[bool] | np.ndarray, score: Sequence[float] | np.ndarray) -> float | None:
    """Area under the ROC curve of ``score`` for telling ``positive`` rows from the rest;
    None when either class is absent (the area is undefined)."""
    y = np.asarray(positive, dtype=bool)
    s = np.asarray(score, dtype=np.float64)
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(s)  # average ranks: a tie between classes counts one half
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def classification_scores(
    labels: Sequence[Any], predictions: Sequence[Any], probabilities: Sequence[Sequence[float]] | None = None,
    classes: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """``{"count", "accuracy", "roc_auc"}`` of predicted class labels against the truth.

    ``probabilities`` (one row per record, columns in ``classes`` order) gives the ROC
    AUC: for two classes of the second class (scikit-learn's positive class), else the
    one-vs-rest macro average over the classes present in ``labels`` with both a positive
    and a negative row. Labels are compared by their canonical JSON (1 is not "1").
    """
    truth = [canonical(v) for v in labels]
    guess = [canonical(v) for v in predictions]
    count = len(truth)
    accuracy = float(np.mean([a == b for a, b in zip(truth, guess)])) if count else None
    auc = None
    if probabilities is not None and classes is not None and count:
        keys = [canonical(c) for c in classes]
        matrix = np.asarray(probabilities, dtype=np.float64).reshape(count, len(keys))
        if len(keys) == 2:
            auc = roc_auc([t == keys[1] for t in truth], matrix[:, 1])
        else:
            areas = [roc_auc([t == key for t in truth], matrix[:, j]) for j, key in enumerate(keys)]
            present = [a for a in areas if a is not None]
            auc = float(np.mean(present)) if present else None
    return {"count": count, "accuracy": accuracy, "roc_auc": auc}


def regression_scores(labels: Sequence[float], predictions: Sequence[float]) -> dict[str, Any]:
    """``{"count", "mae", "rmse"}`` of predictions against the truth."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(predictions, dtype=np.float64)
    if not y.size:
        return {"count": 0, "mae": None, "rmse": None}
    err = p - y
    return {"count": int(y.size), "mae": float(np.mean(np.abs(err))), "rmse": float(np.sqrt(np.mean(err * err)))}


def _score_group(rows: list[tuple[dict[str, Any], Any]]) -> dict[str, Any]:
    first = rows[0][0]
    probabilities = first.get("probabilities")
    if isinstance(probabilities, dict):
        classes_text = list(probabilities)
        # Keys are JSON object keys (text); the labels' own values name the classes.
        by_key = {}
        for out, label in rows:
            by_key.setdefault(_key(label), label)
            by_key.setdefault(_key(out.get("prediction")), out.get("prediction"))
        classes = [by_key.get(k, k) for k in classes_text]
        matrix = [[float((out.get("probabilities") or {}).get(k, 0.0)) for k in classes_text] for out, _ in rows]
        scores = classification_scores([l for _, l in rows], [o.get("prediction") for o, _ in rows], matrix, classes)
        return {"task": "classification", **scores}
    if isinstance(first.get("prediction"), float):
        numeric = [(o, l) for o, l in rows if isinstance(l, (int, float)) and not isinstance(l, bool)]
        return {"task": "regression", **regression_scores([l for _, l in numeric], [o["prediction"] for o, _ in numeric])}
    scores = classification_scores([l for _, l in rows], [o.get("prediction") for o, _ in rows])
    return {"task": "classification", **scores}


def _key(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)


def live_scores(
    db: str | Path, *, model: str, version: str | None = None, since_seconds: float | None = None,
    device: str | None = None, bucket_seconds: float | None = None, now: float | None = None,
) -> list[dict[str, Any]]:
    """Scores of ``model`` from its labeled records, one dict per version (and bucket).

    Each: ``{"model", "version", "task", "count", "accuracy", "roc_auc"}`` (classifier) or
    ``{..., "mae", "rmse"}`` (regressor), plus ``"bucket_start"`` (Unix seconds) with
    ``bucket_seconds``. Windows are on prediction time (the record's ``ts``). ``db`` is
    the collector's SQLite file (a path) or its PostgreSQL database (a ``postgresql://`` URI).
    """
    end = time.time() if now is None else now
    start = -1e308 if since_seconds is None else end - since_seconds
    extra, params = "", [model, start, end + 1e-3 if now is None else end]
    if version is not None:
        extra += " AND r.version = ?"
        params.append(version)
    if device is not None:
        extra += " AND r.device = ?"
        params.append(device)
    action = f"reading labeled records of {model!r}"
    groups: dict[tuple[str, float | None], list[tuple[dict[str, Any], Any]]] = {}
    try:
        for ver, ts, outputs, label in joined_rows(db, _JOIN.format(extra=extra), params, error=ScoresError, action=action):
            bucket = None if bucket_seconds is None else float(np.floor(ts / bucket_seconds) * bucket_seconds)
            out = json.loads(outputs) if outputs else {}
            groups.setdefault((ver, bucket), []).append((out if isinstance(out, dict) else {}, json.loads(label)))
    except ValueError as exc:
        raise ScoresError(f"{action} from {describe(db)}: {exc}") from exc
    result = []
    for (ver, bucket), rows in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0.0)):
        entry: dict[str, Any] = {"model": model, "version": ver, **_score_group(rows)}
        if bucket_seconds is not None:
            entry["bucket_start"] = bucket
        result.append(entry)
    return result
