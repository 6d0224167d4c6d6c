"""What a model's floor is made of: its trees alone on already-encoded input (the model's own
cost), the shipped graph with its strings left in (the floor before the runtime one-hot
encoded them: packager/encoded_inputs.py), and the bundle's graph as skl2onnx converted it,
before the packager's rewrites (the oldest floor). All are measured beside the shipped
graph's floor, interleaved in the same run."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from .zoo import ModelCase

TREES = "trees alone, encoded input"
STRINGS = "bare onnxruntime, strings in the graph"
UNREWRITTEN = "bare onnxruntime, graph as converted"
PATHS = (TREES, STRINGS, UNREWRITTEN)
NOTES = {
    TREES: "the final tree ensemble converted alone, fed the pipeline's own transform of the row as float32 prepared in advance",
    STRINGS: "the floor before the runtime one-hot encoded strings: the shipped graph without packager/encoded_inputs.py's cut "
    "(string tensors in, LabelEncoder + Gather + Equal inside), packed inputs prepared in advance",
    UNREWRITTEN: "the bundle's precision and packing without packager/simplify.py's rewrites, packed inputs prepared in advance",
}


def _session(onx: Any) -> Any:
    import onnxruntime as ort

    from .inference import session_options

    return ort.InferenceSession(onx.SerializeToString(), session_options(), providers=["CPUExecutionProvider"])


def trees_alone(case: ModelCase, rows: int) -> Callable[[], object] | None:
    """One call of the final tree ensemble on pre-encoded rows; None when the model is not a
    pipeline ending in trees (there is no preprocessing to tell apart)."""
    from sklearn.pipeline import Pipeline
    from skl2onnx import to_onnx

    from packager.convert import _TREE_CLASSES, TARGET_OPSET, is_classifier

    model = case.estimator
    if not isinstance(model, Pipeline) or len(model.steps) < 2 or type(model.steps[-1][1]).__name__ not in _TREE_CLASSES:
        return None
    final = model.steps[-1][1]
    encoded = model[:-1].transform(case.frame.head(rows))
    encoded = np.asarray(encoded.todense() if hasattr(encoded, "todense") else encoded, dtype=np.float32)
    options = {id(final): {"zipmap": False}} if is_classifier(final) else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onx = to_onnx(final, encoded[:1], options=options, target_opset=TARGET_OPSET)
    session = _session(onx)
    name = session.get_inputs()[0].name
    feeds = itertools.cycle([{name: encoded[i : i + 1]} for i in range(rows)])
    return lambda: session.run(None, next(feeds))


def unrewritten(case: ModelCase, manifest: dict[str, Any], rows: int, *, rewrite: bool = False) -> Callable[[], object]:
    """One call of the graph the bundle would ship without the rewrites (``rewrite=True``: with
    them but with its strings left in the graph), on packed rows."""
    from packager.convert import columns_of, convert
    from packager.missing_strings import bridge

    from .inference import numpy_columns, pack

    frame = case.frame.head(rows)
    columns = columns_of(case.estimator, None, case.frame)
    bridged = bridge(case.estimator, columns, case.frame)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converted = convert(bridged.model, columns, manifest["onnx"]["precision"], rewrite=rewrite, encode=False)
    layout = {
        "onnx_inputs": converted.onnx_inputs,
        "inputs": [{"name": c.name, "onnx_input": s.onnx_input, "slot": s.slot} for c in columns for s in [converted.slots[c.name]]],
    }
    session = _session(converted.onnx)
    feeds = itertools.cycle([pack(layout, numpy_columns(frame.iloc[i : i + 1])) for i in range(rows)])
    return lambda: session.run(None, next(feeds))


def floor_paths(case: ModelCase, manifest: dict[str, Any] | None, rows: int, errors: dict[str, str]) -> dict[str, Callable[[], object]]:
    """The paths of ``PATHS`` that apply to ``case``; a failure is kept in ``errors``."""
    paths: dict[str, Callable[[], object]] = {}
    try:
        call = trees_alone(case, rows)
    except Exception as exc:  # noqa: BLE001 - reported in the table
        errors[TREES] = f"{type(exc).__name__}: {exc}"
        call = None
    if call is None:
        return paths  # no trees behind preprocessing: neither figure says anything
    paths[TREES] = call
    if manifest is not None:
        if any("encoding" in spec for spec in manifest["inputs"]):
            try:
                paths[STRINGS] = unrewritten(case, manifest, rows, rewrite=True)
            except Exception as exc:  # noqa: BLE001
                errors[STRINGS] = f"{type(exc).__name__}: {exc}"
        try:
            paths[UNREWRITTEN] = unrewritten(case, manifest, rows)
        except Exception as exc:  # noqa: BLE001
            errors[UNREWRITTEN] = f"{type(exc).__name__}: {exc}"
    return paths
