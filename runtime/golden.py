"""The golden set: rows and the ORIGINAL model's outputs on them, replayed at load.

A value ``v`` of the original model matches the value ``w`` computed here when
``|v - w| <= abs`` or ``|v - w| <= rel * |v|``; labels must be equal.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .bundle import parse_json
from .errors import EdgeError, SelfTestError

GOLDEN = "golden.json"


@dataclass(frozen=True, kw_only=True)
class GoldenSet:
    """The parsed ``golden.json``."""

    inputs: dict[str, list[Any]]
    """Columnar rows by original feature name; missing values are None."""
    labels: list[Any] | None
    """Classification: the original model's labels."""
    probabilities: list[list[float]] | None
    """Classification: the original model's probabilities, columns in classes order."""
    predictions: list[float] | None
    """Regression: the original model's predictions."""
    abs_tol: float
    """Absolute tolerance."""
    rel_tol: float
    """Relative tolerance."""

    @property
    def rows(self) -> int:
        return len(next(iter(self.inputs.values()))) if self.inputs else 0


def _error(message: str) -> SelfTestError:
    return SelfTestError(message, entry=GOLDEN)


def parse_golden(
    data: bytes, *, task: str, fallback_tolerance: Any = None, max_depth: int = 64, label_only: bool = False
) -> GoldenSet:
    """Parse ``golden.json``; its ``tolerance`` wins, else the manifest's parity tolerance.

    ``label_only``: a classifier without probabilities, whose golden set holds labels only.
    """
    raw = parse_json(data, entry=GOLDEN, max_depth=max_depth, error=SelfTestError)
    if not isinstance(raw, dict) or not isinstance(raw.get("inputs"), dict) or not isinstance(raw.get("outputs"), dict):
        raise _error("expected an object with 'inputs' (columns by feature name) and 'outputs'")
    inputs = raw["inputs"]
    lengths = {name: len(col) for name, col in inputs.items() if isinstance(col, list)}
    if len(lengths) != len(inputs) or not lengths or len(set(lengths.values())) != 1 or 0 in lengths.values():
        raise _error(f"'inputs' must be non-empty lists of one common length, got lengths {lengths}")
    n = next(iter(lengths.values()))
    tolerance = raw.get("tolerance", fallback_tolerance)
    if not isinstance(tolerance, dict) or not all(isinstance(tolerance.get(k), (int, float)) for k in ("abs", "rel")):
        raise _error(f"'tolerance' must be {{abs: number, rel: number}}, got {tolerance!r}")
    outputs = raw["outputs"]
    labels = probabilities = predictions = None
    if task == "classification":
        labels, probabilities = outputs.get("label"), outputs.get("probabilities")
        if not isinstance(labels, list) or len(labels) != n:
            raise _error(f"outputs.label must list {n} labels, one per golden row")
        if label_only:
            if probabilities is not None:
                raise _error("outputs.probabilities must be null for a label-only classifier")
        elif not isinstance(probabilities, list) or len(probabilities) != n:
            raise _error(f"outputs.probabilities must list {n} rows of probabilities, one per golden row")
    else:
        predictions = outputs.get("prediction")
        if not isinstance(predictions, list) or len(predictions) != n:
            raise _error(f"outputs.prediction must list {n} predictions, one per golden row")
    return GoldenSet(
        inputs=inputs,
        labels=labels,
        probabilities=probabilities,
        predictions=predictions,
        abs_tol=float(tolerance["abs"]),
        rel_tol=float(tolerance["rel"]),
    )


def _mismatch(expected: np.ndarray, actual: np.ndarray, abs_tol: float, rel_tol: float) -> np.ndarray:
    diff = np.abs(expected - actual)
    return ~((diff <= abs_tol) | (diff <= rel_tol * np.abs(expected)))


def self_test(golden: GoldenSet, predict_columns: Callable[[Mapping[str, list[Any]]], dict[str, Any]], classes: tuple[Any, ...] | None) -> None:
    """Replay ``golden`` through ``predict_columns``; raise ``SelfTestError`` on any difference."""
    try:
        result = predict_columns(golden.inputs)
    except EdgeError as exc:
        raise _error(f"the golden rows cannot be predicted: {exc}") from exc
    tol = f"(tolerance abs {golden.abs_tol:g}, rel {golden.rel_tol:g})"
    if golden.labels is not None:
        got = result["prediction"].tolist()
        for i, (want, have) in enumerate(zip(golden.labels, got)):
            if want != have or type(want) is not type(have):
                raise _error(
                    f"golden row {i}: label is {have!r} here, the original model gave {want!r}; "
                    f"the model does not behave on this device as it did at build time"
                )
        if golden.probabilities is None:
            return  # a label-only classifier: the labels are all there is
        try:
            expected = np.asarray(golden.probabilities, dtype=np.float64)
        except ValueError as exc:
            raise _error(f"outputs.probabilities must be rows of numbers: {exc}") from exc
        actual = np.asarray(result["probabilities"], dtype=np.float64)
        if expected.shape != actual.shape:
            raise _error(f"outputs.probabilities has shape {expected.shape}, the model gives {actual.shape}")
        bad = _mismatch(expected, actual, golden.abs_tol, golden.rel_tol)
        if bad.any():
            i, j = (int(x) for x in np.argwhere(bad)[0])
            label = classes[j] if classes is not None else j
            raise _error(
                f"golden row {i}: probability of class {label!r} is {actual[i, j]:.6g} here, the original model gave "
                f"{expected[i, j]:.6g} {tol}; {int(bad.any(axis=1).sum())} of {golden.rows} rows differ"
            )
    else:
        try:
            expected = np.asarray(golden.predictions, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise _error(f"outputs.prediction must be numbers: {exc}") from exc
        actual = np.asarray(result["prediction"], dtype=np.float64)
        bad = _mismatch(expected, actual, golden.abs_tol, golden.rel_tol)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise _error(
                f"golden row {i}: prediction is {actual[i]:.6g} here, the original model gave {expected[i]:.6g} {tol}; "
                f"{int(bad.sum())} of {golden.rows} rows differ"
            )


def golden_numbers(inputs: dict[str, list[Any]], features: Sequence[Any]) -> dict[str, list[Any]]:  # runtime.features.Feature
    """golden.json keeps a bool training column as JSON true/false; predict() refuses bools
    for numeric features (a caller's bool is a bug, not a number), so replay them as 0/1."""
    numeric = {f.name for f in features if f.dtype != "string"}
    out = dict(inputs)
    for name in numeric & out.keys():
        column = out[name]
        if any(type(v) is bool for v in column):
            out[name] = [int(v) if type(v) is bool else v for v in column]
    return out

