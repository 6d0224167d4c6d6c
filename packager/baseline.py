"""Reference statistics for drift: per-feature histograms or category frequencies, and the
distribution of the original model's predictions, over the reference rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .convert import Column


def _histogram(values: Any, bins: int) -> dict[str, Any]:
    import numpy as np

    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {"edges": [], "counts": []}
    counts, edges = np.histogram(finite, bins=bins)
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}


def _frequencies(values: Sequence[Any]) -> dict[str, float]:
    from collections import Counter

    counts = Counter(str(v) for v in values)
    total = sum(counts.values())
    return {key: counts[key] / total for key in sorted(counts)} if total else {}


def baseline(
    frame: Any, columns: Sequence[Column], predictions: Any, *, classification: bool, bins: int, synthesized: bool
) -> dict[str, Any]:
    """The manifest's ``baseline``: what the reference rows and the model's answers on them looked like.

    ``source`` says where the rows came from: ``reference`` (``--reference-data``) or
    ``synthesized`` (the logged input example plus made-up rows), so monitoring at home can
    say how little drift against the latter means.
    """
    import numpy as np

    features: dict[str, Any] = {}
    for col in columns:
        series = frame[col.name]
        missing = int(series.isna().sum())
        if col.kind == "numeric":
            values = series.to_numpy(dtype=np.float64, na_value=np.nan)
            present = values[~np.isnan(values)]
            entry: dict[str, Any] = {"kind": "numeric", "missing": missing, **_histogram(values, bins)}
            entry["mean"] = float(present.mean()) if present.size else None
            entry["std"] = float(present.std()) if present.size else None
        else:
            entry = {"kind": "categorical", "missing": missing, "frequencies": _frequencies(series.dropna().tolist())}
        features[col.name] = entry
    if classification:
        prediction: dict[str, Any] = {"kind": "classification", "frequencies": _frequencies(list(predictions))}
    else:
        prediction = {"kind": "regression", **_histogram(np.asarray(predictions, dtype=np.float64), bins)}
    return {"rows": len(frame), "source": "synthesized" if synthesized else "reference", "features": features, "prediction": prediction}
