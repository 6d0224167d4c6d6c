"""golden.json: sample rows, edge rows first, and what the ORIGINAL model answers on them."""

from __future__ import annotations

from typing import Any

from .convert import Column
from .parity import Tolerance, original_answers


def golden_rows(rows: Any, columns: list[Column], nullable: set[str], count: int) -> Any:
    """Edge rows first (a missing value for each nullable feature, min and max of each numeric
    one), then the first rows, up to ``count``."""
    picked: list[int] = []

    def add(i: int) -> None:
        if i not in picked and len(picked) < count:
            picked.append(int(i))

    numeric = [c.name for c in columns if c.kind == "numeric"]
    for name in [c.name for c in columns]:
        values = rows[name]
        if name in nullable and values.isna().any():
            add(int(values.isna().to_numpy().nonzero()[0][0]))
    for name in numeric:
        values = rows[name]
        if values.notna().any():
            add(int(values.idxmin()))
            add(int(values.idxmax()))
    for i in range(len(rows)):
        add(i)
    return rows.iloc[sorted(picked)].reset_index(drop=True)


def json_value(value: Any) -> Any:
    import math

    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def golden_record(model: Any, frame: Any, columns: list[Column], classification: bool, tol: Tolerance) -> dict[str, Any]:
    """golden.json: the rows, columnar under their original names, and the ORIGINAL model's answers."""
    answers = original_answers(model, frame, classification)
    inputs = {c.name: [json_value(v) for v in frame[c.name].tolist()] for c in columns}
    if classification:
        outputs = {
            "label": [json_value(v) for v in answers.labels.tolist()],
            "probabilities": [[float(p) for p in row] for row in answers.probabilities],
            "prediction": None,
        }
    else:
        outputs = {"label": None, "probabilities": None, "prediction": [float(v) for v in answers.prediction]}
    return {"inputs": inputs, "outputs": outputs, "tolerance": tol.as_dict()}
