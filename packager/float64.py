"""The float64 attempt: constants the original computes with in float64 go into the graph in float64.

skl2onnx stores some fitted values as float attributes even in a double graph: tree thresholds
(``nodes_values``) and imputed values (``imputed_value_floats``, which ``convert`` turns into a
double ``Where(IsNaN(x), values, x)`` constant, still rounded to float32). Rounded, a median
imputed in front of a HistGradientBoosting model moves across the split threshold it often
sits on (HGB's bin thresholds are midpoints between quantiles, the median among them), and the
ONNX model routes every imputed row differently from scikit-learn. Here each such constant is
matched to the fitted estimator it came from (every value must be that estimator's value
rounded to float32) and replaced by the estimator's own float64 values.
"""

from __future__ import annotations

from typing import Any

from .trees import float64_thresholds


def exact_float64(onx: Any, model: Any) -> None:
    """Float64 tree thresholds and imputed values in a double graph (see the module docstring)."""
    exact_imputed_values(onx, model)
    float64_thresholds(onx, model)


def _numeric_statistics(model: Any) -> list[Any]:
    """The ``statistics_`` of every numeric SimpleImputer inside ``model``."""
    import numpy as np
    from sklearn.impute import SimpleImputer

    found, stack, seen = [], [model], set()
    while stack:
        obj = stack.pop()
        if obj is None or isinstance(obj, str) or id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, SimpleImputer):
            stats = getattr(obj, "statistics_", None)
            if stats is not None and stats.dtype.kind == "f":
                found.append(np.asarray(stats, dtype=np.float64))
            continue
        for attr in ("steps", "transformers_"):
            for item in getattr(obj, attr, None) or []:
                stack.append(item[1])
    return found


def exact_imputed_values(onx: Any, model: Any) -> int:
    """Replace float32-rounded ``Where(IsNaN(x), values, x)`` constants by the imputer's float64
    statistics (dropping NaN statistics, as the converter drops their columns). Returns how many."""
    import numpy as np
    from onnx import TensorProto, numpy_helper

    candidates = []
    for stats in _numeric_statistics(model):
        kept = stats[~np.isnan(stats)]
        candidates.append(kept)
    if not candidates:
        return 0
    isnan_outputs = {n.output[0] for n in onx.graph.node if n.op_type == "IsNaN" and n.domain in ("", "ai.onnx")}
    constants = {n.input[1] for n in onx.graph.node if n.op_type == "Where" and n.input[0] in isnan_outputs}
    replaced = 0
    for i, init in enumerate(onx.graph.initializer):
        if init.name not in constants or init.data_type != TensorProto.DOUBLE:
            continue
        values = numpy_helper.to_array(init)
        for exact in candidates:
            if exact.shape == values.reshape(-1).shape and np.array_equal(exact.astype(np.float32), values.reshape(-1).astype(np.float32)):
                onx.graph.initializer[i].CopyFrom(numpy_helper.from_array(exact.reshape(values.shape), name=init.name))
                replaced += 1
                break
    return replaced
