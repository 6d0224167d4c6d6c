"""Run the original model and the ONNX model on the same rows and compare what they answer."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .convert import Column, Converted
from .errors import ConversionError, ParityError, ReferenceDataError
from .options import BuildOptions


@dataclass(frozen=True, kw_only=True)
class Tolerance:
    """``|v - w| <= abs`` or ``|v - w| <= rel * |v|`` (docs/bundle-format.md)."""

    abs: float
    """Absolute tolerance."""
    rel: float
    """Relative tolerance."""

    def as_dict(self) -> dict[str, float]:
        return {"abs": self.abs, "rel": self.rel}


@dataclass(frozen=True)
class Answers:
    """What a model answered on a batch of rows."""

    labels: Any = None
    """Classification: labels in the original classes' type, shape (N,)."""
    probabilities: Any = None
    """Classification: (N, C) in classes order."""
    prediction: Any = None
    """Regression: (N,)."""

    def values(self) -> Any:
        import numpy as np

        raw = self.probabilities if self.probabilities is not None else self.prediction
        return np.asarray(raw, dtype=np.float64).reshape(len(raw), -1)


@dataclass(frozen=True)
class Comparison:
    """Per-row verdicts of one comparison."""

    ok: Any
    """bool (N,): the row's labels agree and every value is within tolerance."""
    label_ok: Any
    """bool (N,): labels agree (all True for regression)."""
    abs_diff: Any
    """float (N,): largest absolute difference in the row."""
    rel_diff: Any
    """float (N,): largest relative difference in the row."""


def original_answers(model: Any, frame: Any, classification: bool) -> Answers:
    """Run the sklearn model; its own errors (e.g. NaN it cannot take) propagate as ValueError."""
    import numpy as np

    if classification:
        return Answers(labels=np.asarray(model.predict(frame)), probabilities=np.asarray(model.predict_proba(frame), dtype=np.float64))
    return Answers(prediction=np.asarray(model.predict(frame), dtype=np.float64).reshape(len(frame)))


def session(onnx_bytes: bytes) -> Any:
    """An onnxruntime session pinned to one thread (the default spins on every host core)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(onnx_bytes, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own pybind exception types
        raise ConversionError(f"onnxruntime {ort.__version__} cannot load the converted model: {exc}") from exc


def feeds(frame: Any, columns: Sequence[Column], converted: Converted, missing: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Packed input tensors for ``frame``: numbers as float32/float64 (NaN for missing), strings as
    object arrays with a missing string as ``missing[column]`` (``""`` by default), as the device does."""
    import numpy as np
    import pandas as pd

    from runtime.encodings import parse_encoding

    arrays: dict[str, Any] = {}
    for spec in converted.onnx_inputs:
        dtype = spec["dtype"]
        if dtype == "string":
            arrays[spec["name"]] = np.empty((len(frame), spec["width"]), dtype=object)
        else:
            arrays[spec["name"]] = np.empty((len(frame), spec["width"]), dtype=np.dtype(dtype))
    for col in columns:
        slot = converted.slots[col.name]
        series = frame[col.name]
        if slot.dtype == "string":
            absent = (missing or {}).get(col.name, "")
            values = [absent if v is None or (isinstance(v, float) and pd.isna(v)) else str(v) for v in series.tolist()]
            encoding = converted.encodings.get(col.name)
            if encoding is not None:  # one-hot slots, encoded by the runtime's own code
                target = arrays[slot.onnx_input]
                coded = parse_encoding(0, col.name, encoding, "string")
                target[:, slot.slot : slot.slot + coded.width] = coded.block(np.asarray(values, dtype=object), target.dtype)  # type: ignore[union-attr]
                continue
            arrays[slot.onnx_input][:, slot.slot] = np.asarray(values, dtype=object)
        else:
            arrays[slot.onnx_input][:, slot.slot] = series.to_numpy(dtype=np.float64, na_value=np.nan)
    return arrays


def onnx_answers(
    sess: Any,
    frame: Any,
    columns: Sequence[Column],
    converted: Converted,
    classes: Sequence[Any] | None,
    label_values: Sequence[Any] | None,
    missing: Mapping[str, str] | None = None,
) -> Answers:
    import numpy as np

    try:
        outs = sess.run(None, feeds(frame, columns, converted, missing))
    except Exception as exc:
        raise ConversionError(f"onnxruntime failed to run the converted model: {exc}") from exc
    if classes is None:
        return Answers(prediction=np.asarray(outs[0], dtype=np.float64).reshape(len(frame)))
    to_class = {_key(v): c for v, c in zip(label_values or [], classes)}
    raw = np.asarray(outs[0]).reshape(len(frame))
    labels = np.empty(len(frame), dtype=object)
    for i, value in enumerate(raw.tolist()):
        labels[i] = to_class.get(_key(value), _Unmapped(value))
    return Answers(labels=labels, probabilities=np.asarray(outs[1], dtype=np.float64))


class _Unmapped:
    """An ONNX label that maps to no class: never equal to anything."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return False

    def __hash__(self) -> int:
        return hash(repr(self.value))

    def __repr__(self) -> str:
        return f"<unmapped ONNX label {self.value!r}>"


def _key(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def compare(expected: Answers, got: Answers, tol: Tolerance) -> Comparison:
    import numpy as np

    v, w = expected.values(), got.values()
    if v.shape != w.shape:
        raise ConversionError(f"ONNX output has shape {w.shape}, the original model's has {v.shape}")
    with np.errstate(invalid="ignore", divide="ignore"):
        diff = np.abs(v - w)
        both_nan = np.isnan(v) & np.isnan(w)
        diff = np.where(both_nan, 0.0, diff)
        diff = np.where(np.isnan(diff), np.inf, diff)
        within = (diff <= tol.abs) | (diff <= tol.rel * np.abs(v))
        rel = np.where(diff == 0, 0.0, diff / np.maximum(np.abs(v), 1e-300))
    if expected.labels is not None:
        label_ok = np.asarray([a == b for a, b in zip(expected.labels.tolist(), got.labels.tolist())], dtype=bool)
    else:
        label_ok = np.ones(len(v), dtype=bool)
    return Comparison(
        ok=label_ok & within.all(axis=1),
        label_ok=label_ok,
        abs_diff=diff.max(axis=1) if diff.size else np.zeros(len(v)),
        rel_diff=rel.max(axis=1) if rel.size else np.zeros(len(v)),
    )


def worst_rows(frame: Any, expected: Answers, got: Answers, cmp: Comparison, limit: int) -> list[dict[str, Any]]:
    """The rows that disagree most: label mismatches first, then by absolute difference."""
    import numpy as np

    order = np.lexsort((-cmp.abs_diff, cmp.label_ok))
    rows = []
    for i in order[:limit].tolist():
        if cmp.ok[i]:
            break
        entry: dict[str, Any] = {"row": i, "inputs": _jsonable(frame.iloc[i].to_dict()), "abs_diff": float(cmp.abs_diff[i])}
        if expected.labels is not None:
            entry["expected_label"] = _jsonable(expected.labels[i])
            entry["onnx_label"] = repr(got.labels[i]) if isinstance(got.labels[i], _Unmapped) else _jsonable(got.labels[i])
        entry["expected"] = [float(x) for x in expected.values()[i]]
        entry["onnx"] = [float(x) for x in got.values()[i]]
        rows.append(entry)
    return rows


def _jsonable(value: Any) -> Any:
    import math

    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def check_original_runs(model: Any, frame: Any, classification: bool) -> Answers:
    try:
        return original_answers(model, frame, classification)
    except Exception as exc:
        raise ReferenceDataError(
            f"the original model fails on the reference rows ({type(exc).__name__}: {exc}); "
            "expected rows the model was trained on"
        ) from exc


def describe_failure(precision: str, frame: Any, expected: Answers, got: Answers, cmp: Comparison, tol: Tolerance, limit: int) -> tuple[str, list[dict[str, Any]]]:
    worst = worst_rows(frame, expected, got, cmp, limit)
    bad = int((~cmp.ok).sum())
    msg = (
        f"{precision}: {bad} of {len(cmp.ok)} rows disagree "
        f"({int((~cmp.label_ok).sum())} labels; max abs diff {float(cmp.abs_diff.max()):.3g}, "
        f"tolerance abs {tol.abs:g} / rel {tol.rel:g})"
    )
    return msg, worst


def tolerance_for(classification: bool, options: BuildOptions) -> Tolerance:
    default_abs = 1e-4 if classification else 1e-6
    return Tolerance(
        abs=options.abs_tolerance if options.abs_tolerance is not None else default_abs,
        rel=options.rel_tolerance if options.rel_tolerance is not None else 1e-4,
    )


@dataclass
class ParityOutcome:
    """The model that passed parity, and what the gate proved about it."""

    converted: Converted
    """The packed ONNX model that passed."""
    attempts: list[str]
    """Precisions tried, in order."""
    nullable: set[str]
    """Features whose missing value the original takes and ONNX answers the same for."""
    rows: Any
    """Every row that was compared and passed (complete rows, then rows with NaN)."""
    rows_with_missing: int
    """How many of ``rows`` have NaN."""
    max_abs: float
    """Largest absolute difference over ``rows``."""
    max_rel: float
    """Largest relative difference over ``rows``."""
    threshold_probes: int = 0
    """Rows at and next to split thresholds that were compared too (not in ``rows``)."""


ProbeRows = Callable[[Converted], Any]
"""Rows to compare besides the reference rows, for one converted model (threshold probes)."""


@dataclass
class _Candidate:
    converted: Converted
    sess: Any
    cmp: Comparison
    probes: int
    probe_cmp: Comparison | None
    proof: Any  # nullable.MissingProof


def run_parity(
    model: Any,
    columns: list[Column],
    base: Any,
    *,
    classification: bool,
    classes: list[Any] | None,
    label_values: list[Any] | None,
    tol: Tolerance,
    options: BuildOptions,
    make: Callable[[str], Converted],
    probes: ProbeRows | None = None,
    missing: Mapping[str, str] | None = None,
    string_nulls: bool = False,
) -> ParityOutcome:
    """Convert at each precision; a precision passes when it agrees with the original on every
    complete row and every probe row (``probes``: rows at split thresholds). Missing values are
    proven at each precision that passes (``missing``: what a missing string goes in as;
    ``string_nulls``: probe string columns too), and the passing precision that takes the most
    features' missing values is shipped (the first, on a tie): a float32 graph that agrees on
    complete rows but not on NaN rows does not cost the device its nullable features.
    """
    from .nullable import missing_cases, prove_missing

    complete = base[~base.isna().any(axis=1)].reset_index(drop=True)
    incomplete = base[base.isna().any(axis=1)].reset_index(drop=True)
    if complete.empty:
        raise ReferenceDataError("every reference row has a missing value; expected some complete rows")
    expected = check_original_runs(model, complete, classification)
    probe_columns = [c for c in columns if c.kind == "numeric" or string_nulls]
    cases = missing_cases(model, complete, incomplete, columns, probe_columns, classification, options.nan_probe_rows)
    wanted = {name for case in cases[0] if case.expected is not None for name in case.gaps}
    probe_rows: dict[str, Any] = {}  # the probe rows and the original's answers, computed once
    failures: list[str] = []
    worst: list[dict[str, Any]] = []
    attempts: list[str] = []
    candidates: list[_Candidate] = []
    for precision in options.precisions:
        attempts.append(precision)
        try:
            conv = make(precision)
            sess = session(conv.onnx.SerializeToString())
            got = onnx_answers(sess, complete, columns, conv, classes, label_values, missing)
            cmp = compare(expected, got, tol)
        except ConversionError as exc:
            failures.append(f"{precision}: {exc}")
            continue
        if not bool(cmp.ok.all()):
            message, worst = describe_failure(precision, complete, expected, got, cmp, tol, options.worst_rows)
            failures.append(message)
            continue
        if not probe_rows:
            probe_rows["rows"] = probes(conv) if probes is not None else complete.iloc[0:0]
            try:
                probe_rows["expected"] = check_original_runs(model, probe_rows["rows"], classification) if len(probe_rows["rows"]) else None
            except ReferenceDataError:  # the original refuses a probe value: nothing to compare with
                probe_rows["rows"], probe_rows["expected"] = complete.iloc[0:0], None
        extra, probe_expected = probe_rows["rows"], probe_rows["expected"]
        probe_cmp = None
        if len(extra):
            try:
                probe_got = onnx_answers(sess, extra, columns, conv, classes, label_values, missing)
                probe_cmp = compare(probe_expected, probe_got, tol)
            except ConversionError as exc:
                failures.append(f"{precision}: on threshold probe rows: {exc}")
                continue
            if not bool(probe_cmp.ok.all()):
                message, worst = describe_failure(precision, extra, probe_expected, probe_got, probe_cmp, tol, options.worst_rows)
                failures.append(message.replace(" rows disagree", " threshold probe rows disagree", 1))
                continue
        proof = prove_missing(
            sess, conv, columns, complete, cases, classes=classes, label_values=label_values, tol=tol, missing=missing
        )
        candidates.append(_Candidate(conv, sess, cmp, len(extra), probe_cmp, proof))
        if proof.nullable >= wanted:
            break
    if not candidates:
        lines = "\n".join(f"  {json.dumps(row, default=str)}" for row in worst)
        raise ParityError(
            "the ONNX model does not answer like the original; tried " + "; ".join(failures)
            + (f"\nworst rows:\n{lines}" if lines else ""),
            worst=worst,
        )
    chosen = max(candidates, key=lambda c: len(c.proof.nullable))  # max() keeps the first of equals
    proof = chosen.proof
    compared = [chosen.cmp] + ([chosen.probe_cmp] if chosen.probe_cmp is not None else []) + proof.comparisons
    return ParityOutcome(
        converted=chosen.converted,
        attempts=attempts,
        nullable=proof.nullable,
        rows=proof.rows,
        rows_with_missing=proof.rows_with_missing,
        max_abs=max(float(c.abs_diff.max()) for c in compared if len(c.abs_diff)),
        max_rel=max(float(c.rel_diff.max()) for c in compared if len(c.rel_diff)),
        threshold_probes=chosen.probes,
    )


def parity_record(outcome: ParityOutcome, tol: Tolerance, classification: bool) -> dict[str, Any]:
    import onnxruntime

    return {
        "rows": len(outcome.rows),
        "rows_with_missing": outcome.rows_with_missing,
        "label_agreement": 1.0 if classification else None,
        "max_abs_diff": outcome.max_abs,
        "max_rel_diff": outcome.max_rel,
        "tolerance": tol.as_dict(),
        "precision": outcome.converted.precision,
        "attempts": outcome.attempts,
        "threshold_probes": outcome.threshold_probes,
        "onnxruntime": onnxruntime.__version__,
    }
